"""`image-bench run` / `ablate` on fakes of the engine and data: only what the store lacks is
trained, every table row gets numbers, a SIGKILLed run resumes with no record lost or duplicated,
corrupt records and bad arguments stop the command with a clear message.

The fakes stand in for training, evaluation, cost and latency so these tests check the layer's
logic in seconds; tests/test_experiments_e2e.py runs the real engine on a tiny profile."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from click.testing import CliRunner

from image_bench.cli import main
from image_bench.experiments.tables import TABLES

CALLS: list[str] = []


def fake_resolve(name, split, profile="smoke", *, data_root=None, seed=0):
    n = 6
    g = torch.Generator().manual_seed(hash((name, split)) % 1000)
    lr = torch.randint(0, 255, (n, 3, 16, 64), dtype=torch.uint8, generator=g)
    hr = None if name == "ic15-352" else torch.randint(0, 255, (n, 3, 32, 128),
                                                       dtype=torch.uint8, generator=g)
    return SimpleNamespace(lr=lr, hr=hr, labels=["word"] * n,
                           identity={"name": name, "split": split, "source": "stand-in",
                                     "hash": f"h-{name}-{split}", "count": n, "path": "/x"})


def fake_train_run(cfg, run_dir, *, init_checkpoint=None, helper_checkpoints=None,
                   device=None, compile=False, progress=True):
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    if cfg.init_from is not None:
        assert init_checkpoint is not None and Path(init_checkpoint).exists()
    assert set(helper_checkpoints or {}) == set(cfg.helpers)
    (run_dir / "last.pt").write_text("step 1")  # a checkpoint exists from here on
    slow = os.environ.get("FAKE_SLOW_MODEL")
    if slow == cfg.model and not (run_dir / "resume.marker").exists():
        (run_dir / "resume.marker").write_text("killed here once")
        Path(os.environ["FAKE_STARTED"]).write_text("training")
        time.sleep(60)  # the test SIGKILLs us here
    CALLS.append(cfg.key())
    log = Path(os.environ.get("FAKE_CALL_LOG", "/dev/null"))
    with open(log, "a") as fh:
        fh.write(cfg.key() + "\n")
    (run_dir / "log.jsonl").write_text(json.dumps({"step": cfg.steps, "loss": 0.5}) + "\n")
    (run_dir / "best.pt").write_text("weights")
    return run_dir / "best.pt"


class FakeModel:
    def __init__(self, cfg):
        self.cfg = cfg
        self.kind = "joint" if cfg.model.startswith("image") else "x"


def fake_load_model(cfg, checkpoint, device="cpu", helper_checkpoints=None):
    assert Path(checkpoint).exists()
    return FakeModel(cfg)


def fake_evaluate(model, splits, *, recognizer=None, batch_size=256, device=None):
    base = 0.3 if isinstance(model, FakeModel) else None  # the bicubic row has no text
    out = {}
    for i, (name, ts) in enumerate(splits.items()):
        out[name] = {"count": len(ts.labels), "accuracy": None if base is None else base + 0.1 * i,
                     "psnr": None if ts.hr is None else 20.0 + i, "ssim": 0.7, "steps": {}}
    avg = {"accuracy_weighted": None if base is None else base + 0.1,
           "psnr": None if all(s["psnr"] is None for s in out.values()) else 21.0,
           "ssim": 0.7, "steps": {}}
    if isinstance(model, FakeModel) and model.kind == "joint":
        L = int(model.cfg.model.split("-")[1])
        for k in range(1, L + 1):
            avg["steps"].update({f"p_{k}": {"accuracy": 0.1 * k},
                                 f"phat_{k}": {"accuracy": 0.05 * k},
                                 f"I_{k}": {"psnr": 19.0 + k, "ssim": 0.6}})
    return {"splits": out, "average": avg, "psnr_per_image": [1.0] * 3}


def fake_build(name, **kwargs):
    return SimpleNamespace(name=name, kwargs=kwargs)


def fake_count_cost(model):
    res = {"params": 1_000_000, "flops": 2_000_000_000}
    if model.name.startswith("image"):
        L = int(model.name.split("-")[1])
        res["groups"] = {"initial features": 2e8,
                         **{f"iteration {k}": 1e9 for k in range(1, L + 1)},
                         "final decoding": 3e8}
        res["parts"] = {"super-resolution model": 9e8, "recognition model": 1.1e9}
    return res


def fake_bench_model(name, device=None, **options):
    return {"modes": {"eager": {"inference": {"batch1": {"per_image_ms": 10.0}}},
                      "optimized": {"inference": {"batch1": {"per_image_ms": 2.0}}}}}


def _module(name):
    """The module, or an empty stand-in while its author has not written it yet."""
    import importlib
    import types

    try:
        return importlib.import_module(name)
    except ModuleNotFoundError:
        mod = sys.modules[name] = types.ModuleType(name)
        return mod


def use_fake_data(monkeypatch) -> None:
    """Every DataIndex resolves data sets through fake_resolve."""
    import image_bench.experiments.runner as runner

    orig = runner.DataIndex.__init__

    def init(self, *args, **kwargs):
        orig(self, *args, **{**kwargs, "resolve": fake_resolve})

    monkeypatch.setattr(runner.DataIndex, "__init__", init)


def install_fakes(monkeypatch=None):
    bench = _module("image_bench.engine.bench")
    import image_bench.engine.checkpoint as checkpoint
    import image_bench.engine.evaluate as evaluate
    import image_bench.engine.train as train
    import image_bench.experiments.runner as runner
    import image_bench.metrics.cost as cost
    import image_bench.models.base as base

    patches = [(train, "train_run", fake_train_run), (checkpoint, "load_model", fake_load_model),
               (evaluate, "evaluate", fake_evaluate), (cost, "count_cost", fake_count_cost),
               (base, "build", fake_build), (bench, "bench_model", fake_bench_model),
               # the parts split is faked with the cost; the runner's own part logic is
               # exercised by the end-to-end test
               (runner, "cost_with_parts", lambda model, count: count(model))]
    for mod, name, fn in patches:
        if monkeypatch is None:
            setattr(mod, name, fn)
        else:
            monkeypatch.setattr(mod, name, fn, raising=False)


@pytest.fixture
def fakes(monkeypatch, tmp_path):
    install_fakes(monkeypatch)
    use_fake_data(monkeypatch)
    monkeypatch.setenv("IMAGE_BENCH_RUNS", str(tmp_path / "runs"))
    CALLS.clear()
    return tmp_path


def _run(args):
    return CliRunner().invoke(main, args, catch_exceptions=False)


def test_run_all_tables_fills_every_row_and_trains_each_run_once(fakes):
    results = fakes / "results"
    res = _run(["run", "all", "--results", str(results), "--no-figures", "--quiet"])
    assert res.exit_code == 0, res.output
    assert len(CALLS) == len(set(CALLS))  # shared runs (e.g. CRNN S) trained once
    # crnn/svtr S and S+L, tg-stroke, bcn, tg, tpgsr, c3, image-1/2 S and S+L, 2 ablations x2;
    # the STN table's other two settings of TPGSR and of IMAGE-1 (S and S+L)
    assert len(CALLS) == 17 + 6
    for name in TABLES:
        for ext in ("tex", "md", "csv"):
            assert (results / f"{name}.{ext}").exists()
        lines = (results / f"{name}.csv").read_text().strip().splitlines()[1:]
        assert lines and all(any(v for v in line.split(",")[3::3]) for line in lines), name
    tex = (results / "table1.tex").read_text()
    assert "\\toprule" in tex and "\\bottomrule" in tex and tex.count("\\\\\n") == 16
    assert "(83.6)" in tex  # the paper's value beside ours
    stages = [json.loads(x) for x in (results / "stages.jsonl").read_text().splitlines()]
    assert {"train S", "data"} <= set(stages[-1]["stages"]) and stages[-1]["wall_s"] > 0
    assert stages[-1]["outcome"] == "done"
    assert sum(stages[-1]["stages"].values()) <= stages[-1]["wall_s"] + 0.01  # no double count

    CALLS.clear()  # a second run finds everything in the store
    res = _run(["run", "all", "--results", str(results), "--no-figures", "--quiet"])
    assert res.exit_code == 0 and CALLS == []


def test_nested_stages_charge_the_innermost(monkeypatch, tmp_path):
    import image_bench.experiments.runner as runner

    now = [0.0]
    monkeypatch.setattr(runner.time, "perf_counter", lambda: now[0])
    r = runner.Runner(tmp_path, "smoke", compute=False)
    with r.stage("train S"):
        now[0] += 2
        with r.stage("data"):  # a data set made inside a training run
            now[0] += 5
        now[0] += 1
    with r.stage("data"):
        now[0] += 1
    assert dict(r.stage_wall) == {"train S": 3, "data": 6}


def test_seeds_give_mean_and_std(fakes):
    results = fakes / "results"
    assert _run(["run", "table3", "--results", str(results), "--seeds", "2", "--quiet"]
                ).exit_code == 0
    md = (results / "table3.md").read_text()
    assert "±" in md and "2 seeds" in md


def test_ablate_prints_against_full_image2(fakes):
    res = _run(["ablate", "--no-guidance-loss", "--no-guidance", "--iterations", "1,2",
                "--results", str(fakes / "results"), "--quiet"])
    assert res.exit_code == 0, res.output
    for label in ("IMAGE-2 (full)", "without losses", "recognition model", "SR model", "IMAGE-1"):
        assert label in res.output


@pytest.mark.parametrize("args,msg", [
    (["run", "table9"], "'table9' is not one of"),
    (["run", "table1", "--bogus"], "No such option '--bogus'"),
    (["run", "table1", "--profile", "huge"], "'huge' is not one of"),
    (["ablate"], "choose at least one of"),
    (["ablate", "--iterations", "0,7"], "must lie in 1..3"),
    (["report", "table6"], "'table6' is not one of"),
])
def test_bad_arguments_exit_clearly(fakes, args, msg):
    res = CliRunner().invoke(main, args)
    assert res.exit_code == 2 and msg in res.output


def test_corrupt_record_stops_run_and_names_it(fakes):
    results = fakes / "results"
    assert _run(["run", "table2", "--results", str(results), "--quiet"]).exit_code == 0
    victim = sorted((results / "store").glob("*.json"))[0]
    victim.write_text(victim.read_text()[:40])  # truncated
    res = CliRunner().invoke(main, ["run", "table2", "--results", str(results)])
    assert res.exit_code == 1 and str(victim) in res.output.replace("\n", "")
    res = CliRunner().invoke(main, ["report", "table2", "--results", str(results)])
    assert res.exit_code == 1 and victim.name in res.output.replace("\n", "")


_SUBPROCESS = """
import sys
sys.path.insert(0, {tests!r})
import test_experiments_run as t
t.install_fakes()
import image_bench.experiments.runner as runner
orig = runner.DataIndex.__init__
def init(self, results, profile, data_root, *, resolve=None, stage=None):
    orig(self, results, profile, data_root, resolve=t.fake_resolve, stage=stage)
runner.DataIndex.__init__ = init
from image_bench.cli import main
main(["run", "table1", "--results", {results!r}, "--quiet"])
"""


def _spawn(results: Path, env: dict) -> subprocess.Popen:
    code = _SUBPROCESS.format(tests=str(Path(__file__).parent), results=str(results))
    return subprocess.Popen([sys.executable, "-c", code], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)


def _spawn_until_training(results: Path, env: dict, started: Path) -> subprocess.Popen:
    """Start `run table1` and return once the slow fake run is training."""
    proc = _spawn(results, env)
    deadline = time.time() + 60
    while not started.exists():
        assert proc.poll() is None, proc.stdout.read()
        assert time.time() < deadline
        time.sleep(0.1)
    return proc


def test_sigkill_mid_training_resumes_without_losing_or_duplicating(fakes):
    results = fakes / "results"
    started = fakes / "started"
    env = {**os.environ, "FAKE_SLOW_MODEL": "tpgsr", "FAKE_STARTED": str(started),
           "FAKE_CALL_LOG": str(fakes / "calls.log")}
    proc = _spawn_until_training(results, env, started)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    before = {p.name for p in (results / "store").glob("*.json")}
    assert not list((results / "store").glob(".*.tmp*"))
    # Two processes now: both finish, the killed run is trained (resumed) exactly once more.
    procs = [_spawn(results, env) for _ in range(2)]
    for p in procs:
        out, _ = p.communicate(timeout=120)
        assert p.returncode == 0, out
    from image_bench.experiments.store import RunStore

    store = RunStore(results / "store")
    assert not store.check()
    after = {p.name for p in (results / "store").glob("*.json")}
    assert before <= after  # nothing lost
    trains = store.records("train")
    keys = [r["key"] for r in trains]
    assert len(keys) == len(set(keys)) == 13  # Table 1 needs 13 trained runs
    calls = (fakes / "calls.log").read_text().split()
    assert len(calls) == len(set(calls)) == 13  # no run finished twice
    tpgsr = [r for r in trains if r["spec"]["model"] == "tpgsr"]
    assert tpgsr[0]["result"]["resumed"] is True
    evals = store.records("eval")
    # 15 on the test splits, 13 on TextZoom's val for the did-it-learn flags: the 10 trained SR
    # rows, the bicubic LR and the two recognizers that read STISR output reading the LR
    assert len({r["key"] for r in evals}) == len(evals) == 28


def test_sigterm_stops_cleanly_and_logs_the_stopped_session(fakes):
    """A time limit's SIGTERM: exit status 143, the stage log says 'stopped', a rerun finishes."""
    results = fakes / "results"
    started = fakes / "started"
    env = {**os.environ, "FAKE_SLOW_MODEL": "tpgsr", "FAKE_STARTED": str(started)}
    proc = _spawn_until_training(results, env, started)
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 128 + signal.SIGTERM, out
    assert "stopped by SIGTERM" in out
    sessions = [json.loads(line) for line in (results / "stages.jsonl").open()]
    assert [s["outcome"] for s in sessions] == ["stopped"]
    # the stage the slow fake (TPGSR) sat in is charged; the signal may come within the first
    # milliseconds of it, which the log's 2-decimal rounding shows as 0.0
    assert sessions[0]["stages"]["train STISR"] >= 0
    # the rows finished before the cut keep their did-it-learn judgement (TG's val evaluation)
    from image_bench.experiments.store import RunStore

    store = RunStore(results / "store")
    tg = [r["key"] for r in store.records("train") if r["spec"]["model"] == "tg"]
    val = [r for r in store.records("eval") if r["spec"].get("split") == "val"]
    assert len(tg) == 1 and any(r["spec"]["method"] == tg[0] for r in val)
    rerun = _spawn(results, env)
    out, _ = rerun.communicate(timeout=120)
    assert rerun.returncode == 0, out
    assert [json.loads(line)["outcome"] for line in (results / "stages.jsonl").open()] == [
        "stopped", "done"]
