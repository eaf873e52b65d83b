"""One evaluation path for every method of the suite.

- recognizer rows (``kind == 'recognizer'``): the recognizer reads the LR image, resized bicubic to
  its input (``Recognizer.read``);
- STISR rows (``kind == 'sr'``): the model super-resolves the LR image and the frozen
  ``recognizer`` reads the first 3 channels of the SR image, resized the same way;
- joint models (IMAGE, ``kind == 'joint'``): the model reads its own final logits; its
  intermediates p_i, p-hat_i and I_i are scored too (Table 5).

Word accuracy and 1 - NED use ``image_bench.metrics.accuracy`` (lower-case, [0-9a-z] only;
ICDAR-2019 max-length NED). PSNR/SSIM use TextZoom's convention (``metrics.image_quality``): the
mean over evaluation batches of the batch-MSE PSNR and batch SSIM, so they depend slightly on
``batch_size``, which the result records; per-image values are reported beside them.
"""

from __future__ import annotations

import math
from collections import defaultdict

import torch
import torch.nn.functional as F

from image_bench import charset
from image_bench.metrics.accuracy import normalized_edit_distance, word_correct
from image_bench.metrics.image_quality import psnr, psnr_per_image, ssim, ssim_per_image
from image_bench.models.base import BenchModel, ModelOutput
from image_bench.models.recognizer import resize_for_recognizer


class Bicubic(BenchModel):
    """The LR image bicubic-upsampled to HR size (no clamping, as the originals): Table 1's row 1
    and the baseline every SR model is read beside, scored by the same evaluator."""

    kind = "sr"

    def forward(self, lr):
        return ModelOutput(sr=F.interpolate(lr, size=(2 * lr.shape[-2], 2 * lr.shape[-1]),
                                            mode="bicubic", align_corners=False))


def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def _images(t: torch.Tensor, device: torch.device) -> torch.Tensor:
    t = t.to(device, non_blocking=True)
    return t.float().div_(255.0) if t.dtype == torch.uint8 else t.float()


def _read(recognizer, images: torch.Tensor):
    if hasattr(recognizer, "read"):
        return recognizer.read(images)
    return recognizer(resize_for_recognizer(images, recognizer.input_size))


@torch.no_grad()
def forward_method(model, lr: torch.Tensor, recognizer=None) -> dict:
    """Run one method on an LR batch: final texts and SR image, and IMAGE's intermediates."""
    kind = getattr(model, "kind", "sr")
    out: dict = {"texts": None, "sr": None, "steps": {}}
    if kind == "recognizer":
        out["texts"] = _read(model, lr).predictions()
        return out
    if kind == "aux":
        raise ValueError(f"{type(model).__name__} is a helper network (kind 'aux'), not a method")
    output = model(lr)
    out["sr"] = output.sr[:, :3] if output.sr is not None else None
    if kind == "joint" and output.logits is not None:
        out["texts"] = output.predictions()
    elif recognizer is not None:
        if output.sr is None:
            raise ValueError(f"{type(model).__name__} returned no SR image for the recognizer")
        out["texts"] = _read(recognizer, output.sr[:, :3]).predictions()
    # IMAGE's intermediates: p_i, p-hat_i (texts) and I_i (images), numbered from 1.
    for i, logits in enumerate(output.logits_steps, 1):
        out["steps"][f"p_{i}"] = charset.greedy_decode(logits)
    for i, logits in enumerate(output.clue_logits_steps, 1):
        out["steps"][f"phat_{i}"] = charset.greedy_decode(logits)
    for i, image in enumerate(output.sr_steps, 1):
        out["steps"][f"I_{i}"] = image[:, :3]
    return out


def _mean(values: list[float]) -> float | None:
    finite = [v for v in values if math.isfinite(v)]
    return sum(finite) / len(finite) if finite else None


def _split_metrics(model, ts, recognizer, batch_size: int, device: torch.device) -> dict:
    n = ts.lr.shape[0]
    if n == 0:
        raise ValueError(f"split {ts.identity.get('split', '?')} is empty")
    labels = list(ts.labels)
    texts: list[str] = []
    batch_psnr, batch_ssim, per_psnr, per_ssim = [], [], [], []
    step_texts: dict[str, list[str]] = defaultdict(list)
    step_psnr: dict[str, list[float]] = defaultdict(list)
    step_ssim: dict[str, list[float]] = defaultdict(list)
    has_texts = True
    for start in range(0, n, batch_size):
        lr = _images(ts.lr[start:start + batch_size], device)
        hr = _images(ts.hr[start:start + batch_size], device) if ts.hr is not None else None
        res = forward_method(model, lr, recognizer)
        if res["texts"] is None:
            has_texts = False
        else:
            texts.extend(res["texts"])
        if res["sr"] is not None and hr is not None:
            batch_psnr.append(psnr(res["sr"], hr))
            batch_ssim.append(ssim(res["sr"], hr))
            per_psnr.extend(psnr_per_image(res["sr"], hr).tolist())
            per_ssim.extend(ssim_per_image(res["sr"], hr).tolist())
        for name, value in res["steps"].items():
            if isinstance(value, list):
                step_texts[name].extend(value)
            elif hr is not None:
                step_psnr[name].append(psnr(value, hr))
                step_ssim[name].append(ssim(value, hr))
    result = {"count": n, "correct": None, "accuracy": None, "ned": None,
              "psnr": _mean(batch_psnr), "ssim": _mean(batch_ssim),
              "psnr_image_mean": _mean(per_psnr), "ssim_image_mean": _mean(per_ssim),
              "psnr_per_image": per_psnr or None, "ssim_per_image": per_ssim or None,
              "steps": {}}
    if has_texts:
        flags = word_correct(texts, labels)
        result["correct"] = sum(flags)
        result["accuracy"] = sum(flags) / n
        result["ned"] = 1.0 - sum(normalized_edit_distance(p, g)
                                  for p, g in zip(texts, labels)) / n
    for name, preds in step_texts.items():
        flags = word_correct(preds, labels)
        result["steps"][name] = {"accuracy": sum(flags) / n}
    for name in step_psnr:
        result["steps"][name] = {"psnr": _mean(step_psnr[name]), "ssim": _mean(step_ssim[name])}
    return result


def _average(splits: dict) -> dict:
    rows = list(splits.values())
    total = sum(r["count"] for r in rows)
    avg: dict = {"count": total, "accuracy_weighted": None, "accuracy_mean": None,
                 "ned_weighted": None, "psnr": None, "ssim": None, "psnr_mean": None,
                 "ssim_mean": None}
    if rows and all(r["accuracy"] is not None for r in rows):
        avg["accuracy_weighted"] = sum(r["correct"] for r in rows) / total
        avg["accuracy_mean"] = sum(r["accuracy"] for r in rows) / len(rows)
        avg["ned_weighted"] = sum(r["ned"] * r["count"] for r in rows) / total
    sr_rows = [r for r in rows if r["psnr"] is not None]
    if sr_rows:
        weight = sum(r["count"] for r in sr_rows)
        # Over the whole test set: split values weighted by split size (as if one pooled set),
        # and the plain mean of the split values.
        avg["psnr"] = sum(r["psnr"] * r["count"] for r in sr_rows) / weight
        avg["ssim"] = sum(r["ssim"] * r["count"] for r in sr_rows) / weight
        avg["psnr_mean"] = sum(r["psnr"] for r in sr_rows) / len(sr_rows)
        avg["ssim_mean"] = sum(r["ssim"] for r in sr_rows) / len(sr_rows)
    steps: dict = {}
    for name in rows[0]["steps"] if rows else []:
        entry = {}
        for metric in ("accuracy", "psnr", "ssim"):
            vals = [(r["steps"].get(name, {}).get(metric), r["count"]) for r in rows]
            vals = [(v, c) for v, c in vals if v is not None]
            if vals:
                entry[metric] = sum(v * c for v, c in vals) / sum(c for _, c in vals)
        steps[name] = entry
    avg["steps"] = steps
    return avg


def evaluate(model, splits: dict, *, recognizer=None, batch_size: int = 256,
             device: str | None = None) -> dict:
    """Score ``model`` on each named split (TensorSet-like: uint8 lr, hr or None, labels).

    ``recognizer`` reads the SR output of a pure SR model (kind 'sr'); without one, SR rows get
    PSNR/SSIM only. Returns ``{'splits': {name: {...}}, 'average': {...}, 'protocol': {...}}``;
    psnr/ssim are None where a split has no HR or the model no SR output.
    """
    if not splits:
        raise ValueError("evaluate needs at least one split")
    if batch_size < 1:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    device = torch.device(device) if device is not None else default_device()
    was_training = model.training
    model.eval()
    if recognizer is not None:
        recognizer.eval()
    try:
        per_split = {name: _split_metrics(model, ts, recognizer, batch_size, device)
                     for name, ts in splits.items()}
    finally:
        model.train(was_training)
    return {
        "splits": per_split,
        "average": _average(per_split),
        "protocol": {
            "accuracy": "word accuracy after lower-casing and keeping [0-9a-z] (TextZoom)",
            "ned": "1 - mean normalised edit distance, ICDAR-2019 max-length normalisation",
            "psnr_ssim": "TextZoom: RGB, [0,1], no clamp; batch-MSE PSNR and Gaussian 11/1.5 "
                         "zero-padded SSIM per batch, averaged over batches",
            "batch_size": batch_size,
            "average": "accuracy_weighted = total correct / total count; accuracy_mean = plain "
                       "mean of splits; psnr/ssim weighted by split size, *_mean plain",
            "identities": {name: dict(getattr(ts, "identity", {}) or {})
                           for name, ts in splits.items()},
        },
    }


@torch.no_grad()
def predict(model, lr: torch.Tensor, *, recognizer=None) -> dict:
    """For figures: final texts and SR images, and IMAGE's per-step texts and SR images.

    ``lr`` is a float NCHW batch in [0, 1] (or uint8) on any device; outputs are on the CPU.
    """
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    try:
        res = forward_method(model, _images(lr, device), recognizer)
    finally:
        model.train(was_training)
    steps = res["steps"]
    return {
        "texts": res["texts"],
        "sr": res["sr"].float().cpu() if res["sr"] is not None else None,
        "step_texts": {k: v for k, v in steps.items() if isinstance(v, list)},
        "step_sr": {k: v.float().cpu() for k, v in steps.items() if not isinstance(v, list)},
    }
