"""Bench (CPU figures, labelled as such) and the train command's config building."""

import pytest
import torch
from torch import nn

from image_bench.engine.bench import bench_model, format_rows, time_call
from image_bench.engine.cli import make_config
from image_bench.models.base import ModelOutput, register
from image_bench.models.recognizer import Recognizer
from image_bench.profiles import get_profile


@register("test-engine-bench")
class BenchRec(Recognizer):
    input_size = (16, 64)

    def __init__(self, lr_fraction: float = 0.0):
        super().__init__(lr_fraction)
        self.head = nn.Linear(3 * 16, 37)

    def forward(self, images):
        return ModelOutput(logits=self.head(images.flatten(1, 2).transpose(1, 2)))


def test_bench_model_on_cpu_says_cpu_and_times_every_mode():
    r = bench_model("test-engine-bench", device="cpu", batch_sizes=(1, 4), iters=3, warmup=1,
                    train_batch=4, train_steps=2, modes=("eager",))
    assert r["figures"].startswith("CPU")
    inf = r["modes"]["eager"]["inference"]
    assert inf["batch1"]["runs"] == 3 and inf["batch1"]["median_ms"] > 0
    assert inf["batch4"]["images_per_s"] == pytest.approx(4 / (inf["batch4"]["median_ms"] / 1e3))
    assert r["modes"]["eager"]["training"]["samples_per_s"] > 0
    assert r["torch"] == torch.__version__
    rows = format_rows([r])
    assert rows[0][:2] == ["test-engine-bench", "eager"]


def test_time_call_counts_runs():
    calls = []
    times = time_call(lambda: calls.append(1), torch.device("cpu"), iters=4, warmup=2)
    assert len(times) == 4 and len(calls) == 6


def test_make_config_stage_and_overrides():
    c = make_config("test-engine-bench", "synth", "smoke", ("steps=5", "lr_fraction=0.5"), 1)
    assert (c.steps, c.batch_size, c.seed) == (5, get_profile("smoke").pretrain_batch, 1)
    assert c.model_kwargs == {"lr_fraction": 0.5}
    c = make_config("test-engine-bench", "textzoom", "quick", (), 0)
    quick = get_profile("quick")
    assert (c.steps, c.batch_size) == (quick.finetune_steps, quick.finetune_batch)
    # the run plan's stages: STISR training and the helper networks have their own schedules
    c = make_config("tpgsr", "textzoom", "quick", (), 0)
    assert (c.steps, c.batch_size) == (quick.stisr_steps, quick.finetune_batch) == (2_500, 64)
    c = make_config("bcn", "synth", "quick", (), 0)
    assert (c.steps, c.batch_size) == (quick.helper_steps, quick.helper_batch)
    # the learning rate each model trains at is written into its config (and so its key)
    assert make_config("tg", "textzoom", "quick", (), 0).lr == 1e-3
    assert make_config("crnn", "synth", "quick", (), 0).lr == 1e-4
    assert make_config("tg", "textzoom", "quick", ("lr=1e-4",), 0).lr == 1e-4
    # and its schedule: the TSRN family decays (models/tsrn.py), the rest hold the rate
    assert make_config("tg", "textzoom", "quick", (), 0).lr_schedule == "cosine"
    assert make_config("crnn", "synth", "quick", (), 0).lr_schedule == "constant"
    assert make_config("tpgsr", "textzoom", "quick", ("lr_schedule=\"constant\"",),
                       0).lr_schedule == "constant"
    # the STN setting too, as the run plan names it, so a changed default is a new run
    assert make_config("tpgsr", "textzoom", "quick", (), 0).model_kwargs == {"stn": "original"}
    assert make_config("image-1", "synth", "quick", ("stn=identity",), 0).model_kwargs == {
        "stn": "identity"}
    assert make_config("crnn", "synth", "quick", (), 0).model_kwargs == {}
    with pytest.raises(Exception, match="key=value"):
        make_config("test-engine-bench", "synth", "smoke", ("steps",), 0)


def test_run_plan_names_each_models_learning_rate():
    """TG, TPGSR and C3-STISR train at TSRN's 1e-3 (decayed by a cosine) and the recognizers and
    IMAGE at the paper's constant 1e-4; the plan's configs say so, and the optimiser takes
    exactly the config's rate."""
    from image_bench.engine.step import optim_settings
    from image_bench.experiments.plan import Plan
    from image_bench.models.base import build

    plan = Plan(get_profile("smoke"), 0, lambda data: "h")
    assert {name: plan.stisr(name).lr for name in ("tg", "tpgsr", "c3stisr")} == {
        "tg": 1e-3, "tpgsr": 1e-3, "c3stisr": 1e-3}
    assert plan.recognizer("crnn", "S+L").lr == plan.image(1, "S").lr == 1e-4
    # the TSRN family's schedule and STN, IMAGE's and the recognizers' (models/tsrn.py)
    for name in ("tg", "tpgsr", "c3stisr"):
        assert plan.stisr(name).lr_schedule == "cosine"
        assert plan.stisr(name).model_kwargs == {"stn": "original"}
    assert plan.image(1, "S").lr_schedule == plan.recognizer("crnn", "S").lr_schedule == "constant"
    assert plan.image(1, "S").model_kwargs == {"stn": "none"}
    assert optim_settings(build("tg"), 1e-4)["lr"] == 1e-4
    assert optim_settings(build("tg"), 1e-3)["beta1"] == 0.5


def test_bf16_weight_copy_reads_like_float32():
    """The optimized inference mode runs a bf16 copy of each model under bf16 autocast (CUDA);
    the same copy on the CPU must give the float32 logits to bf16 precision and leave the
    original's weights float32."""
    import copy

    from image_bench.engine.bench import build_bench_model, pipeline

    torch.manual_seed(0)
    model = build_bench_model("svtr").eval()
    x = model.example_input(2)
    with torch.no_grad():
        ref = pipeline(model, None)(x)
        fast = copy.deepcopy(model).to(torch.bfloat16)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = pipeline(fast, None)(x)
    assert out.dtype == torch.bfloat16
    assert next(model.parameters()).dtype == torch.float32
    rel = ((out.float() - ref).norm() / ref.norm()).item()
    assert 0 < rel < 0.05


def test_bench_json_keeps_the_models_finished_before_a_cut(tmp_path, monkeypatch):
    """`bench --json` writes after every model: a time limit that stops the second model leaves
    the first one's figures on disk."""
    import json

    from click.testing import CliRunner

    import image_bench.engine.bench as bench
    from image_bench.cli import main

    done = []

    def fake(name, **kwargs):
        if done:
            raise KeyboardInterrupt  # the limit's signal while the second model is timed
        done.append(name)
        return {"model": name, "modes": {}}

    monkeypatch.setattr(bench, "bench_model", fake)
    out = tmp_path / "b" / "bench.json"
    CliRunner().invoke(main, ["bench", "crnn", "svtr", "--device", "cpu", "--json", str(out)])
    assert json.loads(out.read_text()) == [{"model": "crnn", "modes": {}}]
