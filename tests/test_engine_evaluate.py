"""Evaluator: one path for recognizer, SR + recognizer and joint rows; metrics as labelled."""

from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from image_bench import charset
from image_bench.engine.evaluate import evaluate, predict
from image_bench.metrics import psnr, ssim
from image_bench.metrics.accuracy import word_correct
from image_bench.models.base import BenchModel, ModelOutput
from image_bench.models.recognizer import Recognizer, resize_for_recognizer


class ColumnRec(Recognizer):
    """Deterministic recognizer: per column, the class is a function of the mean intensity."""

    input_size = (32, 128)

    def __init__(self):
        super().__init__()
        self.scale = nn.Parameter(torch.tensor(8.0))

    def forward(self, images):
        col = images.mean(dim=(1, 2))[:, ::8]  # (B, 16)
        idx = (col * self.scale).long().clamp(0, charset.NUM_CLASSES - 1)
        return ModelOutput(logits=F.one_hot(idx, charset.NUM_CLASSES).float())


class Upsampler(BenchModel):
    kind = "sr"

    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.ones(()))

    def forward(self, lr):
        return ModelOutput(sr=F.interpolate(lr, scale_factor=2, mode="bicubic") * self.w)


class TwoStepJoint(BenchModel):
    """IMAGE-like outputs: I_1, p_1, p-hat_1 and the final SR and logits."""

    kind = "joint"

    def __init__(self):
        super().__init__()
        self.up = Upsampler()
        self.rec = ColumnRec()

    def forward(self, lr):
        sr = self.up(lr).sr
        first = F.interpolate(lr, scale_factor=2, mode="nearest")
        return ModelOutput(sr=sr, logits=self.rec.read(sr).logits, sr_steps=[first],
                           logits_steps=[self.rec.read(first).logits],
                           clue_logits_steps=[self.rec.read(lr).logits])


def fake_split(n, seed, hr=True):
    g = torch.Generator().manual_seed(seed)
    return SimpleNamespace(
        lr=torch.randint(0, 256, (n, 3, 16, 64), dtype=torch.uint8, generator=g),
        hr=torch.randint(0, 256, (n, 3, 32, 128), dtype=torch.uint8, generator=g) if hr else None,
        labels=["a"] * n, identity={"split": f"s{seed}"})


def with_labels_from(model_read, ts):
    """Label half of the samples with what the method will read, so accuracy is 0.5."""
    texts = model_read(ts.lr.float() / 255)
    ts.labels = [t.upper() + "!" if i % 2 == 0 else t + "x" for i, t in enumerate(texts)]
    return ts


def test_recognizer_row_reads_resized_lr_and_averages():
    rec = ColumnRec()
    def read(lr):
        return rec.read(lr).predictions()

    splits = {"easy": with_labels_from(read, fake_split(10, 0)),
              "hard": with_labels_from(read, fake_split(4, 1, hr=False))}
    res = evaluate(rec, splits, batch_size=3, device="cpu")
    assert res["splits"]["easy"]["accuracy"] == pytest.approx(0.5)
    assert res["splits"]["easy"]["psnr"] is None  # a recognizer has no SR
    assert 0 < res["splits"]["easy"]["ned"] < 1
    avg = res["average"]
    assert avg["accuracy_weighted"] == pytest.approx(7 / 14)
    assert avg["accuracy_mean"] == pytest.approx(0.5)
    assert res["protocol"]["batch_size"] == 3


def test_sr_row_uses_frozen_recognizer_and_textzoom_psnr():
    sr_model, rec = Upsampler(), ColumnRec()
    def read(lr):
        return rec.read(sr_model(lr).sr).predictions()

    ts = with_labels_from(read, fake_split(7, 2))
    res = evaluate(sr_model, {"t": ts}, recognizer=rec, batch_size=4, device="cpu")["splits"]["t"]
    assert res["accuracy"] == pytest.approx(4 / 7)
    lr, hr = ts.lr.float() / 255, ts.hr.float() / 255
    sr = sr_model(lr).sr.detach()
    # mean over batches of the batch-MSE PSNR (batches of 4 and 3)
    expect = (psnr(sr[:4], hr[:4]) + psnr(sr[4:], hr[4:])) / 2
    assert res["psnr"] == pytest.approx(expect, rel=1e-6)
    assert res["ssim"] == pytest.approx((ssim(sr[:4], hr[:4]) + ssim(sr[4:], hr[4:])) / 2)
    assert len(res["psnr_per_image"]) == 7
    without = evaluate(sr_model, {"t": ts}, batch_size=4, device="cpu")["splits"]["t"]
    assert without["accuracy"] is None and without["psnr"] == pytest.approx(res["psnr"])


def test_joint_row_reports_every_step_and_predict():
    model = TwoStepJoint()
    ts = fake_split(5, 3)
    ts.labels = ["b"] * 5
    res = evaluate(model, {"t": ts}, batch_size=5, device="cpu")
    steps = res["splits"]["t"]["steps"]
    assert set(steps) == {"p_1", "phat_1", "I_1"}
    lr, hr = ts.lr.float() / 255, ts.hr.float() / 255
    first = F.interpolate(lr, scale_factor=2, mode="nearest")
    assert steps["I_1"]["psnr"] == pytest.approx(psnr(first, hr))
    p1 = model.rec.read(first).predictions()
    assert steps["p_1"]["accuracy"] == pytest.approx(sum(word_correct(p1, ts.labels)) / 5)
    assert res["average"]["steps"]["I_1"]["psnr"] == pytest.approx(steps["I_1"]["psnr"])
    out = predict(model, lr)
    assert out["sr"].shape == (5, 3, 32, 128)
    assert out["step_texts"]["phat_1"] == model.rec.read(lr).predictions()
    assert set(out["step_sr"]) == {"I_1"}
    assert resize_for_recognizer(lr, (32, 128)).shape[-1] == 128


def test_bad_inputs_fail_clearly():
    with pytest.raises(ValueError, match="at least one split"):
        evaluate(ColumnRec(), {}, device="cpu")
