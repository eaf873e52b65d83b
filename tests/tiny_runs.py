"""Run folders written by hand (config.json + best.pt) around tiny deterministic models, so the
CLI's eval and read load them as they load trained runs."""

from __future__ import annotations

import json
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from image_bench import charset
from image_bench.experiments.config import RunConfig
from image_bench.models.base import BenchModel, ModelOutput, build, register
from image_bench.models.recognizer import Recognizer


def _spell(words: list[str], frames: int = 6) -> torch.Tensor:
    """One-hot CTC logits (B, frames, 37) that greedy decoding reads as ``words``."""
    logits = torch.zeros(len(words), frames, charset.NUM_CLASSES)
    logits[:, :, charset.BLANK] = 1.0
    for row, word in enumerate(words):
        for t, ch in enumerate(word):
            logits[row, t] = F.one_hot(torch.tensor(charset.ALPHABET.index(ch) + 1),
                                       charset.NUM_CLASSES).float()
    return logits


@register("test-brightness")
class BrightnessReader(Recognizer):
    """Reads 'light' where the image's mean is above one half, else 'dark'."""

    def __init__(self, lr_fraction: float = 0.0):
        super().__init__(lr_fraction)
        self.threshold = nn.Parameter(torch.tensor(0.5))

    def forward(self, images):
        light = images.mean(dim=(1, 2, 3)) > self.threshold
        return ModelOutput(logits=_spell(["light" if x else "dark" for x in light.tolist()])
                           .to(images.device))


@register("test-upsampler")
class Upsampler(BenchModel):
    """An SR model: bicubic x2, then inverted (so the recognizer's reading shows it ran)."""

    kind = "sr"

    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.ones(()))

    def forward(self, lr):
        return ModelOutput(sr=1.0 - F.interpolate(lr, scale_factor=2, mode="bicubic") * self.w)


@register("test-joint")
class TwoStepJoint(BenchModel):
    """IMAGE-like outputs: I_1 and p_1 (read from the LR), then the final SR and text."""

    kind = "joint"

    def __init__(self):
        super().__init__()
        self.reader = BrightnessReader()

    def forward(self, lr):
        sr = F.interpolate(lr, scale_factor=2, mode="bicubic")
        first = F.interpolate(lr, scale_factor=2, mode="nearest")
        return ModelOutput(sr=sr, logits=self.reader.read(sr).logits, sr_steps=[first],
                           logits_steps=[self.reader.read(1.0 - first).logits])


def make_run(run_dir: Path, model: str, **model_kwargs) -> Path:
    """A run folder of ``model`` with its initial weights, laid out as training leaves one."""
    cfg = RunConfig(model=model, data="synth", profile="smoke", steps=1, batch_size=4,
                    model_kwargs=model_kwargs)
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "config.json").write_text(json.dumps({"key": cfg.key(), "config": cfg.to_dict()}))
    torch.manual_seed(0)
    torch.save({"model": build(model, **model_kwargs).state_dict()}, run_dir / "best.pt")
    return run_dir
