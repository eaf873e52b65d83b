"""Trainer: resume after a kill gives the same weights, the NaN guard, DDP (gloo, 2 processes)."""

import json
import os
import signal
import socket
import time
from types import SimpleNamespace

import pytest
import torch
import torch.multiprocessing as mp
import torch.nn.functional as F
from torch import nn

from image_bench import charset
from image_bench.engine.checkpoint import load_checkpoint, load_model
from image_bench.engine.interrupt import Stopped, deferred_stop, stop_signals, take_stop_request
from image_bench.engine.train import NonFiniteLossError, train_run
from image_bench.experiments.config import RunConfig
from image_bench.models.base import ModelOutput, register
from image_bench.models.recognizer import Recognizer


@register("test-engine-tiny")
class TinyRec(Recognizer):
    """A CTC recognizer small enough for CPU tests: one conv, then a linear head per column."""

    input_size = (16, 64)

    def __init__(self, lr_fraction: float = 0.5, width: int = 4, nan_at: int = 0):
        super().__init__(lr_fraction)
        self.conv = nn.Conv2d(3, width, 3, padding=1)
        self.head = nn.Linear(width * 16, charset.NUM_CLASSES)
        self.nan_at = nan_at  # training step (1-based) whose loss turns NaN; 0 = never
        self.calls = 0

    def forward(self, images):
        f = F.avg_pool2d(torch.relu(self.conv(images)), (1, 2))  # (B, w, 16, 32)
        return ModelOutput(logits=self.head(f.flatten(1, 2).transpose(1, 2)))

    def loss(self, output, batch):
        terms = super().loss(output, batch)
        if self.training:
            self.calls += 1
            if self.nan_at and self.calls >= self.nan_at:
                terms["ctc"] = terms["ctc"] * float("nan")
        return terms


def fake_set(n: int, seed: int, split: str):
    g = torch.Generator().manual_seed(seed)
    words = ["ab", "cat", "x1", "road", "9z", "hello", "sun", "42"]
    return SimpleNamespace(
        lr=torch.randint(0, 256, (n, 3, 16, 64), dtype=torch.uint8, generator=g),
        hr=torch.randint(0, 256, (n, 3, 32, 128), dtype=torch.uint8, generator=g),
        labels=[words[i % len(words)] for i in range(n)],
        identity={"name": "fake", "split": split, "source": "test", "count": n})


DATA = {"train": fake_set(40, 0, "train"), "val": fake_set(16, 1, "val")}


def cfg(steps=6, batch=8, **kw):
    return RunConfig(model="test-engine-tiny", data="fake", profile="smoke", steps=steps,
                     batch_size=batch, seed=3, lr=1e-2, model_kwargs=kw)


def weights(path):
    return load_checkpoint(path)["model"]


def assert_same(a, b):
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_kill_and_resume_gives_identical_weights(tmp_path):
    c = cfg()
    common = dict(device="cpu", progress=False, data=DATA, checkpoint_every=2, validate_every=3)
    best_a = train_run(c, tmp_path / "a", **common)

    def kill(step):
        if step == 5:  # after the checkpoint of step 4: step 5 is lost and redone
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train_run(c, tmp_path / "b", on_step=kill, **common)
    assert load_checkpoint(tmp_path / "b" / "last.pt")["step"] == 4
    best_b = train_run(c, tmp_path / "b", **common)
    assert_same(weights(tmp_path / "a" / "last.pt"), weights(tmp_path / "b" / "last.pt"))
    assert_same(weights(best_a), weights(best_b))
    # the log holds each step once, the run folder its config and environment
    steps = [r["step"] for r in map(json.loads, (tmp_path / "b" / "log.jsonl").open())
             if r["event"] == "step"]
    assert steps == [1, 2, 3, 4, 5, 6]
    for name in ("config.json", "env.json", "loss.png", "best.pt"):
        assert (tmp_path / "b" / name).exists()
    assert json.loads((tmp_path / "b" / "config.json").read_text())["key"] == c.key()
    # a finished run returns at once; load_model rebuilds it in eval mode
    assert train_run(c, tmp_path / "b", **common) == best_b
    model = load_model(c, best_b)
    assert not model.training
    # a different config in the same folder is refused
    with pytest.raises(ValueError, match="use another run folder"):
        train_run(cfg(steps=7), tmp_path / "b", **common)


def test_nan_guard_stops_and_keeps_last_good_checkpoint(tmp_path):
    c = cfg(nan_at=5)
    with pytest.raises(NonFiniteLossError, match=r"step 5 .*ctc=nan"):
        train_run(c, tmp_path, device="cpu", progress=False, data=DATA, checkpoint_every=2,
                  validate_every=100)
    ckpt = load_checkpoint(tmp_path / "last.pt")
    assert ckpt["step"] == 4
    assert all(torch.isfinite(v).all() for v in ckpt["model"].values())
    assert not (tmp_path / "best.pt").exists()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ddp_worker(rank, world, port, run_dir):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank),
                      WORLD_SIZE=str(world), LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    train_run(cfg(steps=3, lr_fraction=0.0), run_dir, device="cpu", progress=False, data=DATA,
              checkpoint_every=3, validate_every=100)


@pytest.mark.slow  # two spawned processes: ~10 s on an idle 2-core machine
def test_ddp_two_processes_equal_one_process_with_whole_batch(tmp_path):
    single = train_run(cfg(steps=3, lr_fraction=0.0), tmp_path / "one", device="cpu",
                       progress=False, data=DATA, checkpoint_every=3, validate_every=100)
    mp.spawn(_ddp_worker, args=(2, _free_port(), tmp_path / "two"), nprocs=2, join=True)
    a, b = weights(single), weights(tmp_path / "two" / "last.pt")
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-5, atol=1e-6)
    assert json.loads((tmp_path / "two" / "env.json").read_text())["world_size"] == 2


def test_sigterm_saves_the_step_in_flight_and_resumes_identically(tmp_path):
    """A time limit's SIGTERM lands mid-run: the run stops after that step with a checkpoint at
    it (not at the last multiple of checkpoint_every), and the resumed run ends with the same
    weights as one that was never stopped."""
    c = cfg()
    common = dict(device="cpu", progress=False, data=DATA, checkpoint_every=4, validate_every=3)
    train_run(c, tmp_path / "a", **common)

    def term(step):
        if step == 3:
            os.kill(os.getpid(), signal.SIGTERM)

    with stop_signals():
        with pytest.raises(Stopped, match=r"SIGTERM: run .* saved at step 3 of 6"):
            train_run(c, tmp_path / "b", on_step=term, **common)
        assert load_checkpoint(tmp_path / "b" / "last.pt")["step"] == 3
        train_run(c, tmp_path / "b", **common)
    assert_same(weights(tmp_path / "a" / "last.pt"), weights(tmp_path / "b" / "last.pt"))
    steps = [r["step"] for r in map(json.loads, (tmp_path / "b" / "log.jsonl").open())
             if r["event"] == "step"]
    assert steps == [1, 2, 3, 4, 5, 6]
    # stopped right after the last step: the rerun has nothing to train but draws the curve
    def term_last(step):
        if step == 6:
            os.kill(os.getpid(), signal.SIGTERM)

    with stop_signals(), pytest.raises(Stopped, match="saved at step 6 of 6"):
        train_run(c, tmp_path / "c", on_step=term_last, **common)
    assert not (tmp_path / "c" / "loss.png").exists()
    assert train_run(c, tmp_path / "c", **common) == tmp_path / "c" / "best.pt"
    assert (tmp_path / "c" / "loss.png").exists()


def test_stop_signals_outside_training_and_twice():
    with stop_signals():
        with pytest.raises(Stopped) as stopped:  # no training loop to wait for: at once
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(5)
        assert stopped.value.exit_code == 143
        with pytest.raises(Stopped, match="SIGINT"), deferred_stop():
            os.kill(os.getpid(), signal.SIGTERM)  # deferred: waits for the loop to look
            assert take_stop_request() == signal.SIGTERM
            os.kill(os.getpid(), signal.SIGTERM)
            os.kill(os.getpid(), signal.SIGINT)  # a second one while the first waits: at once
            time.sleep(5)
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL


def _six_val_pairs():
    """Six random HR images and their area-downsampled LR: a val set for the diagnostics."""
    from image_bench.data.datasets import TensorSet

    g = torch.Generator().manual_seed(0)
    hr = torch.randint(0, 256, (6, 3, 32, 128), dtype=torch.uint8, generator=g)
    lr = F.interpolate(hr.float(), size=(16, 64), mode="area").round().to(torch.uint8)
    return TensorSet(lr, hr, ["ab", "cd", "ef", "gh", "ij", "kl"])


def test_validation_reports_the_train_only_stn_at_eval_too():
    """A TSRN-family model logs, beside its val PSNR, the PSNR with its train-only STN applied
    at evaluation too (a diagnostic): at the identity initialisation the warp changes nothing,
    so the two agree; the switch is off again afterwards; a model without STN logs no such key."""
    from image_bench.engine.train import validate
    from image_bench.models.base import build

    val = _six_val_pairs()
    torch.manual_seed(0)
    model = build("tg", stn="identity")
    res = validate(model, val, None, 4, torch.device("cpu"))
    assert res["metric"] == "psnr" and abs(res["psnr_with_stn"] - res["psnr"]) < 1e-5
    assert not model.backbone.stn_at_eval and model.training
    with torch.no_grad():  # a drifted STN: control points squeezed to the middle third
        model.backbone.stn.fc2.bias.mul_(0.3)
    drifted = validate(model, val, None, 4, torch.device("cpu"))
    assert drifted["psnr"] == pytest.approx(res["psnr"])  # evaluation itself does not warp
    # (an untrained network's output hardly depends on its input, hence the small margin)
    assert abs(drifted["psnr_with_stn"] - drifted["psnr"]) > 1e-3
    assert "psnr_with_stn" not in validate(build("tg", stn="none"), val, None, 4,
                                           torch.device("cpu"))


def test_validation_reports_the_psnr_with_batch_statistics_too():
    """An SR model with BatchNorm logs, beside its val PSNR, the PSNR with every BatchNorm
    normalising by the val batch's own statistics (a diagnostic): stale running estimates move
    the PSNR but not the diagnostic, and come back untouched; a recognizer logs no such key."""
    from image_bench.engine.train import validate
    from image_bench.models.base import build

    val = _six_val_pairs()
    torch.manual_seed(0)
    model = build("tg", stn="none")
    cpu = torch.device("cpu")
    res = validate(model, val, None, 6, cpu)
    bn = next(m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d))
    with torch.no_grad():  # running estimates that lag far behind the weights
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.add_(3.0)
                m.running_var.mul_(10.0)
    before = bn.running_mean.clone(), bn.running_var.clone()
    stale = validate(model, val, None, 6, cpu)
    assert abs(stale["psnr"] - res["psnr"]) > 0.1
    assert stale["psnr_batch_stats"] == pytest.approx(res["psnr_batch_stats"], abs=1e-4)
    assert torch.equal(bn.running_mean, before[0]) and torch.equal(bn.running_var, before[1])
    assert model.training
    assert "psnr_batch_stats" not in validate(build("crnn"), val, None, 6, cpu)


def test_cosine_schedule_decays_to_zero_and_resumes_on_the_same_curve(tmp_path):
    """lr_schedule="cosine": the logged rate follows base x (1 + cos(pi k / steps)) / 2 for the
    step after k steps, ending near zero; a run killed and resumed logs the same rates; the
    field at its default ("constant") leaves a run's key as it was before the field existed."""
    import math

    from image_bench.engine.step import lr_factor

    c = RunConfig(model="test-engine-tiny", data="fake", profile="smoke", steps=8, batch_size=8,
                  seed=3, lr=1e-2, lr_schedule="cosine")
    common = dict(device="cpu", progress=False, data=DATA, checkpoint_every=2, validate_every=4)

    def rates(run):
        return [r["lr"] for r in map(json.loads, (run / "log.jsonl").open())
                if r["event"] == "step"]

    train_run(c, tmp_path / "a", **common)
    expected = [1e-2 * (1 + math.cos(math.pi * k / 8)) / 2 for k in range(8)]  # step k+1
    assert rates(tmp_path / "a") == pytest.approx(expected, rel=1e-6)
    assert rates(tmp_path / "a")[-1] < 0.04 * 1e-2

    def kill(step):
        if step == 5:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train_run(c, tmp_path / "b", on_step=kill, **common)
    train_run(c, tmp_path / "b", **common)
    assert rates(tmp_path / "b") == pytest.approx(expected, rel=1e-6)
    # warm-up, then the cosine; and the identity of a constant-rate run is unchanged
    assert lr_factor(0, 4, "cosine", 100) == pytest.approx(0.25)
    assert lr_factor(50, 4, "cosine", 100) == pytest.approx(0.5)
    assert lr_factor(7, 0, "constant", 10) == 1.0
    with pytest.raises(ValueError, match="unknown lr_schedule 'step'"):
        lr_factor(0, 0, "step", 10)
    constant = c.with_(lr_schedule="constant")
    assert "lr_schedule" not in constant.to_dict() and constant.key() != c.key()
    for run in (c, constant):
        assert RunConfig.from_dict(run.to_dict()) == run
