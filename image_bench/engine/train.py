"""Train one run: exactly what a RunConfig says, resumable, on one GPU or several (torchrun).

Run folder layout (``run_dir``): ``config.json`` (the resolved RunConfig and its key),
``inputs.json`` (init and helper checkpoints it was given), ``env.json`` (versions, GPU, commit),
``log.jsonl`` (one line per step: losses, grad norm, lr; plus validation and event lines),
``loss.png``, ``last.pt`` (everything needed to resume), ``best.pt`` (weights with the best score
on the held-out 'val' split; never a test split).

Resume: when ``last.pt`` exists the run continues from it (model, optimiser, scheduler, RNG states;
the data position is a function of the step, see ``engine.data``), so a killed run ends with the
same weights as one that never stopped. Steps after the last checkpoint are simply redone.
"""

from __future__ import annotations

import json
import math
import os
import random
import time
from collections.abc import Callable
from contextlib import closing, nullcontext
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist

from image_bench import accel
from image_bench.accel.graphed import GraphedStepper
from image_bench.accel.optimize import configure_cuda
from image_bench.engine.checkpoint import (
    atomic_save,
    attach_helpers,
    build_model,
    load_checkpoint,
    load_weights,
    model_state,
    weights_of,
)
from image_bench.engine.data import BatchOrder, ResidentSet
from image_bench.engine.env import environment
from image_bench.engine.interrupt import Stopped, deferred_stop, take_stop_request
from image_bench.engine.step import (
    StepModule,
    Stepper,
    lr_factor,
    make_optimizer,
    match_state_layout,
    optim_settings,
    set_capturable,
)
from image_bench.experiments.config import RunConfig
from image_bench.profiles import get_profile
from image_bench.progress import progress_bar

# Validation reads at most this many samples of the 'val' split (its first ones, a fixed set),
# so that selecting checkpoints costs little next to training.
MAX_VAL_SAMPLES = 4096


class NonFiniteLossError(RuntimeError):
    """Raised when a loss term or the gradient norm becomes NaN or infinite."""


# ---------------------------------------------------------------------------------------------
# distributed context


class _Dist:
    def __init__(self):
        self.world = int(os.environ.get("WORLD_SIZE", "1"))
        self.rank = int(os.environ.get("RANK", "0"))
        self.local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        self.owned = False

    def setup(self, device: torch.device) -> None:
        if self.world > 1 and not dist.is_initialized():
            dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
            self.owned = True

    def teardown(self) -> None:
        if self.owned and dist.is_initialized():
            dist.destroy_process_group()

    def barrier(self) -> None:
        if self.world > 1 and dist.is_initialized():
            dist.barrier()

    @property
    def main(self) -> bool:
        return self.rank == 0


def _device(device: str | None, d: _Dist) -> torch.device:
    if device is None:
        device = f"cuda:{d.local_rank}" if torch.cuda.is_available() else "cpu"
    device = torch.device(device)
    if device.type == "cuda":
        if device.index is None:
            device = torch.device("cuda", d.local_rank)
        torch.cuda.set_device(device)
        configure_cuda()
    return device


# ---------------------------------------------------------------------------------------------
# files


def _write_json(path: Path, obj) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2, sort_keys=True, default=str))
    os.replace(tmp, path)


def _read_log(path: Path) -> list[dict]:
    if not path.exists():
        return []
    rows = []
    for line in path.read_text().splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:  # a line cut by a kill: drop it, the step is redone
            continue
    return rows


def _truncate_log(path: Path, step: int) -> None:
    """Drop log lines past ``step``: the resumed run redoes those steps."""
    rows = [r for r in _read_log(path) if r.get("step", 0) <= step]
    tmp = path.with_suffix(".jsonl.tmp")
    tmp.write_text("".join(json.dumps(r) + "\n" for r in rows))
    os.replace(tmp, path)


def plot_losses(log_path: Path, png_path: Path, title: str) -> None:
    """The run's curves side by side: training loss (log scale), and against the same steps the
    validation PSNR (dB, with bicubic's when the log has it) and word accuracy (%, from 0), or a
    helper network's validation loss."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    log = _read_log(log_path)
    rows = [r for r in log if r.get("event") == "step"]
    if not rows:
        return
    val = [r for r in log if r.get("event") == "val"]
    bicubic = next((r["psnr"] for r in log if r.get("event") == "val_bicubic"), None)
    panels = [(k, label) for k, label in (("psnr", "val PSNR (dB)"),
                                          ("accuracy", "val word accuracy (%)"),
                                          ("val_loss", "val loss"))
              if any(r.get(k) is not None for r in val)]
    fig, axes = plt.subplots(1, 1 + len(panels), figsize=(4.2 * (1 + len(panels)), 3.4),
                             squeeze=False)
    ax = axes[0][0]
    steps = [r["step"] for r in rows]
    ax.plot(steps, [r["loss"] for r in rows], label="loss (total)", lw=1.5)
    keys = list(rows[-1]["terms"])
    if len(keys) > 1:
        for k in keys:
            ax.plot(steps, [r["terms"].get(k, float("nan")) for r in rows], label=k, lw=0.8)
    if all(r["loss"] > 0 for r in rows):
        ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_ylabel("training loss")
    ax.legend(fontsize=7, loc="upper right")
    for (key, label), ax in zip(panels, axes[0][1:]):
        points = [(r["step"], r[key]) for r in val if r.get(key) is not None]
        xs = [x for x, _ in points]
        ys = [100 * y if key == "accuracy" else y for _, y in points]
        ax.plot(xs, ys, "o-", color="k", ms=3, label="model")
        warped = [(r["step"], r["psnr_with_stn"]) for r in val if r.get("psnr_with_stn")]
        if key == "psnr" and warped:  # the diagnostic of _psnr_with_stn
            ax.plot(*zip(*warped), "s--", color="tab:blue", ms=3, lw=1, label="STN at eval too")
        batch = [(r["step"], r["psnr_batch_stats"]) for r in val if r.get("psnr_batch_stats")]
        if key == "psnr" and batch:  # the diagnostic of _psnr_batch_stats
            ax.plot(*zip(*batch), "^:", color="tab:green", ms=3, lw=1, label="BN batch stats")
        if key == "psnr" and bicubic is not None:
            ax.axhline(bicubic, color="tab:red", ls="--", lw=1, label=f"bicubic {bicubic:.2f}")
        if key == "psnr" and (bicubic is not None or warped or batch):
            ax.legend(fontsize=7, loc="lower right")
        if key == "accuracy":
            ax.set_ylim(0, max(10.0, 1.1 * max(ys)))
        ax.set_xlim(0, max(steps[-1], xs[-1]) * 1.02)
        ax.set_xlabel("step")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    tmp = png_path.with_suffix(".tmp.png")
    fig.savefig(tmp, dpi=100)
    plt.close(fig)
    os.replace(tmp, png_path)


# ---------------------------------------------------------------------------------------------
# data and validation


def _resolve_data(cfg: RunConfig, data: dict | None) -> tuple:
    if data is not None:
        if "train" not in data:
            raise KeyError("data= must hold a 'train' TensorSet")
        return data["train"], data.get("val")
    from image_bench.data import datasets

    train = datasets.resolve(cfg.data, "train", cfg.profile, seed=cfg.seed)
    val = None
    if "val" in datasets.splits(cfg.data):
        val = datasets.resolve(cfg.data, "val", cfg.profile, seed=cfg.seed)
    return train, val


def _head(ts, n: int):
    if ts.lr.shape[0] <= n:
        return ts
    from types import SimpleNamespace

    return SimpleNamespace(lr=ts.lr[:n], hr=None if ts.hr is None else ts.hr[:n],
                           labels=list(ts.labels)[:n], identity=dict(ts.identity or {}))


def _val_recognizer(model):
    """A recognizer attached to an SR model (TPGSR/C3's), used to score its SR output."""
    for name in ("recognizer",):
        helper = getattr(model, name, None)
        if helper is not None and getattr(helper, "kind", None) == "recognizer":
            return helper
    return None


@torch.no_grad()
def _val_loss(model, val_rs: ResidentSet, batch_size: int, device: torch.device) -> float:
    total, n = 0.0, 0
    for start in range(0, len(val_rs), batch_size):
        idx = torch.arange(start, min(start + batch_size, len(val_rs)))
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
            _, terms = model.training_step(val_rs.batch(idx))
        total += float(sum(t.float() for t in terms.values())) * len(idx)
        n += len(idx)
    return total / n


def bicubic_on(val_ts, batch_size: int, device: torch.device) -> dict:
    """PSNR/SSIM of the bicubic LR on the validation split: the line an SR model must clear."""
    from image_bench.engine.evaluate import Bicubic, evaluate

    res = evaluate(Bicubic(), {"val": val_ts}, batch_size=batch_size,
                   device=str(device))["splits"]["val"]
    return {"psnr": res["psnr"], "ssim": res["ssim"]}


def validate(model, val_ts, val_rs, batch_size: int, device: torch.device) -> dict:
    """Selection score on 'val' (higher is better): word accuracy for recognizers and joint
    models, and for SR models read by an attached recognizer; PSNR for SR models without one;
    minus the validation loss for helper networks (kind 'aux')."""
    from image_bench.engine.evaluate import evaluate

    was_training = model.training
    model.eval()
    try:
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
            if model.kind == "aux":
                loss = _val_loss(model, val_rs, batch_size, device)
                return {"score": -loss, "metric": "-val_loss", "val_loss": loss}
            res = evaluate(model, {"val": val_ts}, recognizer=_val_recognizer(model),
                           batch_size=batch_size, device=str(device))["splits"]["val"]
        extra = _diagnostics(model, val_ts, batch_size, device)
    finally:
        model.train(was_training)
    if res["accuracy"] is not None:
        return {"score": res["accuracy"], "metric": "accuracy", "accuracy": res["accuracy"],
                "ned": res["ned"], "psnr": res["psnr"], "ssim": res["ssim"], **extra}
    return {"score": res["psnr"], "metric": "psnr", "psnr": res["psnr"], "ssim": res["ssim"],
            **extra}


def _diagnostics(model, val_ts, batch_size: int, device: torch.device) -> dict:
    """The val events' diagnostics (never the selection score). One that fails (a compiled
    region that will not take the switch, say) is logged as ``diagnostic_error`` and leaves the
    training run going."""
    out = {}
    for probe in (_psnr_with_stn, _psnr_batch_stats):
        try:
            out.update(probe(model, val_ts, batch_size, device))
        except Exception as exc:  # noqa: BLE001 - a diagnostic must not end the run
            out["diagnostic_error"] = f"{probe.__name__}: {type(exc).__name__}: {exc}"[:300]
    return out


def _stn_backbones(model) -> list:
    from image_bench.models.tsrn import TSRNBackbone

    return [m for m in model.modules() if isinstance(m, TSRNBackbone) and m.stn is not None]


def _psnr_with_stn(model, val_ts, batch_size: int, device: torch.device) -> dict:
    """For a model whose STN warps in training only (the TSRN family): the val PSNR with the
    warp applied at evaluation too. A diagnostic beside the selection score, never the score:
    where it stays level while ``psnr`` swings, the SR network has learned to undo a warp that
    evaluation no longer applies."""
    from image_bench.engine.evaluate import evaluate

    backbones = _stn_backbones(model)
    if not backbones:
        return {}
    for m in backbones:
        m.stn_at_eval = True
    try:
        res = evaluate(model, {"val": val_ts}, batch_size=batch_size,
                       device=str(device))["splits"]["val"]
    finally:
        for m in backbones:
            m.stn_at_eval = False
    return {"psnr_with_stn": res["psnr"]}


def _running_stat_norms(model) -> list:
    return [m for m in model.modules()
            if isinstance(m, torch.nn.modules.batchnorm._BatchNorm) and m.track_running_stats]


def _psnr_batch_stats(model, val_ts, batch_size: int, device: torch.device) -> dict:
    """For an SR model with BatchNorm: the val PSNR with every BatchNorm normalising by each
    val batch's own mean and variance instead of its running estimates (which stay untouched:
    set aside, then put back). A diagnostic beside the selection score, never the score: where
    it stays level while ``psnr`` swings, the running statistics lag the weights."""
    from image_bench.engine.evaluate import evaluate

    norms = _running_stat_norms(model) if model.kind == "sr" else []
    if not norms:
        return {}
    saved = [(m, m.running_mean, m.running_var) for m in norms]
    for m in norms:  # with no running estimates an eval-mode BatchNorm uses the batch's
        m.running_mean = m.running_var = None
    try:
        res = evaluate(model, {"val": val_ts}, batch_size=batch_size,
                       device=str(device))["splits"]["val"]
    finally:
        for m, mean, var in saved:
            m.running_mean, m.running_var = mean, var
    return {"psnr_batch_stats": res["psnr"]}


# ---------------------------------------------------------------------------------------------
# RNG


def _seed_all(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _rng_state(device: torch.device) -> dict:
    return {"python": random.getstate(), "numpy": np.random.get_state(),
            "torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state(device) if device.type == "cuda" else None}


def _set_rng_state(state: dict, device: torch.device) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if device.type == "cuda" and state.get("cuda") is not None:
        torch.cuda.set_rng_state(state["cuda"], device)


# ---------------------------------------------------------------------------------------------
# progress


class _Progress:
    def __init__(self, enabled: bool, total: int, start: int, title: str):
        self.enabled = enabled
        if not enabled:
            return
        self.bar = progress_bar("loss {task.fields[loss]}", "{task.fields[rate]} samples/s")
        self.bar.start()
        self.task = self.bar.add_task(title, total=total, completed=start, loss="-", rate="-")

    def update(self, step: int, loss: float, rate: float) -> None:
        if self.enabled:
            self.bar.update(self.task, completed=step, loss=f"{loss:.4f}", rate=f"{rate:,.0f}")

    def close(self) -> None:
        if self.enabled:
            self.bar.stop()


# ---------------------------------------------------------------------------------------------
# the run


def _check_run_dir(run_dir: Path, cfg: RunConfig) -> None:
    path = run_dir / "config.json"
    if path.exists():
        old = json.loads(path.read_text())
        if old.get("key") != cfg.key():
            other = old.get("config", {}).get("model")
            raise ValueError(f"{run_dir} holds run {old.get('key')} ({other}), not {cfg.key()}:"
                             " use another run folder")


def train_run(cfg: RunConfig, run_dir: Path, *, init_checkpoint: Path | None = None,
              helper_checkpoints: dict[str, Path] | None = None, device: str | None = None,
              compile: bool = True, progress: bool = True, data: dict | None = None,
              checkpoint_every: int | None = None, validate_every: int | None = None,
              on_step: Callable[[int], None] | None = None, cuda_graph: bool = True) -> Path:
    """Train ``cfg`` in ``run_dir`` (resuming from its last checkpoint) and return best.pt.

    The model runs through the acceleration layer (``accel.for_training``; the plain model under
    ``IMAGE_BENCH_PLAIN=1``).
    ``compile``: on a GPU, torch.compile the repeated transformer blocks (accel/optimize.py;
    IMAGE-2 trains 1,680 -> 2,306 samples/s on the H100, graphed, at ~15-50 s of compilation)
    when the run is long enough to repay it (``model.compile_pays_from`` samples), and the SR
    parts too from ``SR_COMPILE_PAYS_FROM`` samples on (``optimize.compile_for_training``);
    ignored on the CPU, where compiling takes longer than the short runs it would speed up.
    A stop signal
    (engine/interrupt.py) ends the run after the step in flight, saved in last.pt.
    Extra keywords (all optional): ``data`` = {'train': TensorSet, 'val': TensorSet or absent}
    instead of resolving ``cfg.data``; ``checkpoint_every``/``validate_every`` instead of the
    profile's; ``on_step(step)`` called after every step (tests use it to simulate a kill).
    Under torchrun (WORLD_SIZE > 1) each process takes its share of every global batch of
    ``cfg.batch_size`` samples; rank 0 validates, logs and writes checkpoints.
    """
    run_dir = Path(run_dir)
    d = _Dist()
    device = _device(device, d)
    d.setup(device)
    try:
        return _train(cfg, run_dir, d, device, init_checkpoint, helper_checkpoints, compile,
                      progress, data, checkpoint_every, validate_every, on_step, cuda_graph)
    finally:
        d.teardown()


def _train(cfg, run_dir, d, device, init_checkpoint, helper_checkpoints, compile, progress, data,
           checkpoint_every, validate_every, on_step, cuda_graph) -> Path:
    profile = get_profile(cfg.profile)
    ckpt_every = checkpoint_every or profile.checkpoint_every
    val_every = validate_every or profile.validate_every
    if cfg.steps < 1 or cfg.batch_size < 1:
        raise ValueError(f"steps and batch_size must be positive: {cfg.steps}, {cfg.batch_size}")
    last_path, best_path = run_dir / "last.pt", run_dir / "best.pt"
    log_path = run_dir / "log.jsonl"
    if d.main:
        run_dir.mkdir(parents=True, exist_ok=True)
        _check_run_dir(run_dir, cfg)
        _write_json(run_dir / "config.json", {"key": cfg.key(), "config": cfg.to_dict()})
        _write_json(run_dir / "inputs.json", {
            "init_checkpoint": str(init_checkpoint) if init_checkpoint else None,
            "helper_checkpoints": {k: str(v) for k, v in (helper_checkpoints or {}).items()}})
    d.barrier()

    resume = load_checkpoint(last_path) if last_path.exists() else None
    def draw_losses() -> None:
        plot_losses(log_path, run_dir / "loss.png", f"{cfg.model} on {cfg.data} ({cfg.key()})")

    if resume is not None and resume["step"] >= cfg.steps and best_path.exists():
        if d.main and not (run_dir / "loss.png").exists():  # stopped right after its last step
            draw_losses()
        return best_path  # finished earlier
    if resume is None and cfg.init_from is not None and init_checkpoint is None:
        raise ValueError(f"run {cfg.key()} starts from the weights of run {cfg.init_from.key()} "
                         f"({cfg.init_from.model} on {cfg.init_from.data}): pass init_checkpoint")

    _seed_all(cfg.seed)
    model = build_model(cfg).to(device)
    attach_helpers(model, cfg, helper_checkpoints, device)
    model.to(device).train()
    events = []
    if init_checkpoint is not None and resume is None:
        report = load_weights(model, weights_of(load_checkpoint(init_checkpoint)), strict=False)
        events.append({"event": "init", "step": 0, "from": str(init_checkpoint), **report})
        if d.main and (report["missing"] or report["shape_mismatch"] or report["unexpected"]):
            print(f"[init] {init_checkpoint}: {len(report['missing'])} tensors not initialised "
                  f"(e.g. {report['missing'][:4]}), shape mismatches "
                  f"{report['shape_mismatch'][:4]}, unused {report['unexpected'][:4]}")
    # Each rank draws its own training randomness (e.g. LR/HR picks, dropout) after the shared init.
    torch.manual_seed(cfg.seed * 1_000_003 + 7919 * d.rank + 1)

    train_ts, val_ts = _resolve_data(cfg, data)
    train_rs = ResidentSet.from_tensorset(train_ts, device)
    val_ts = _head(val_ts, MAX_VAL_SAMPLES) if val_ts is not None else None
    val_rs = None
    if val_ts is not None and model.kind == "aux":
        val_rs = ResidentSet.from_tensorset(val_ts, device)
    order = BatchOrder(len(train_rs), cfg.batch_size, cfg.seed, d.rank, d.world)

    # the acceleration layer (accel/), before the optimiser: its state follows the weights'
    # layout; IMAGE_BENCH_PLAIN=1 trains the plain model, without the graphed step either
    levers = accel.for_training(model, device, samples=cfg.steps * cfg.batch_size,
                                compile=compile, streams=d.world == 1)
    plain = levers.get("plain", False)
    graphed = (not plain and cuda_graph and device.type == "cuda" and d.world == 1
               and model.graph_safe)
    channels_last = levers.get("channels_last", False)
    streams = levers.get("branch_streams", False)
    settings = optim_settings(model, cfg.lr)
    optimizer, scheduler = make_optimizer(model, settings, device, capturable=graphed,
                                          schedule=cfg.lr_schedule, total_steps=cfg.steps)
    start, best_score = 0, None
    if resume is not None:
        load_weights(model, resume["model"], strict=True)
        optimizer.load_state_dict(resume["optimizer"])
        match_state_layout(optimizer)
        set_capturable(optimizer, graphed, device)  # the saved state may come from either path
        scheduler.load_state_dict(resume["scheduler"])
        start, best_score = resume["step"], resume.get("best_score")
        _set_rng_state(resume["rng"], device)
        events.append({"event": "resume", "step": start})
    compiled_regions: list[str] = levers.get("compiled_regions", [])
    step_module: torch.nn.Module = StepModule(model)
    if d.world > 1:
        step_module = torch.nn.parallel.DistributedDataParallel(
            step_module, device_ids=[device.index] if device.type == "cuda" else None,
            find_unused_parameters=True)
    stepper = Stepper(step_module, optimizer, scheduler, grad_clip=settings["grad_clip"],
                      device=device, fused_update=graphed)
    fused_update = stepper.fused_update is not None
    if graphed:
        stepper = GraphedStepper(stepper)

    if d.main:
        env = environment(device)
        env.update(world_size=d.world, data_on_device=train_rs.on_device,
                   compiled_regions=len(compiled_regions),
                   cuda_graph=graphed, channels_last=channels_last, branch_streams=streams,
                   plain_model=plain,
                   fused_update=fused_update,
                   amp="bf16" if device.type == "cuda" else "fp32", optimizer=settings,
                   train_identity=dict(getattr(train_ts, "identity", {}) or {}),
                   val_identity=dict(getattr(val_ts, "identity", {}) or {}) if val_ts else None)
        _write_json(run_dir / "env.json", env)
        _truncate_log(log_path, start)
        if start == 0 and val_ts is not None and model.kind in ("sr", "joint") \
                and val_ts.hr is not None:
            events.append({"event": "val_bicubic", "step": 0,
                           **bicubic_on(val_ts, cfg.batch_size, device)})
        with log_path.open("a") as f:
            for e in events:
                f.write(json.dumps(e) + "\n")

    # The host reads losses back every `log_every` steps (one sync per block, not per step).
    log_every = 1 if device.type == "cpu" else 25
    pending: list[tuple[int, torch.Tensor]] = []
    bar = _Progress(progress and d.main, cfg.steps, start, f"{cfg.model} on {cfg.data}")
    t_block, n_block = time.perf_counter(), 0

    def step_lr(step: int) -> float:  # the rate step ``step`` (1-based) trained at
        return settings["lr"] * lr_factor(step - 1, int(settings["warmup_steps"]),
                                          cfg.lr_schedule, cfg.steps)

    def flush() -> None:
        nonlocal t_block, n_block
        if not pending:
            return
        values = torch.stack([v for _, v in pending]).cpu()
        names = stepper.column_names
        now = time.perf_counter()
        rate = n_block * cfg.batch_size / max(now - t_block, 1e-9)
        lines = []
        for (step, _), row in zip(pending, values.tolist()):
            if not all(math.isfinite(v) for v in row):
                detail = ", ".join(f"{n}={v:.6g}" for n, v in zip(names, row))
                raise NonFiniteLossError(
                    f"non-finite loss at step {step} of run {cfg.key()} ({cfg.model}): {detail}. "
                    f"Stopped; {last_path} keeps the last good checkpoint.")
            lines.append({"event": "step", "step": step, "loss": row[0], "grad_norm": row[1],
                          "terms": dict(zip(names[2:], row[2:])),
                          "lr": step_lr(step)})
        lines[-1]["samples_per_s"] = rate
        pending.clear()
        t_block, n_block = now, 0
        if d.main:
            with log_path.open("a") as f:
                f.writelines(json.dumps(r) + "\n" for r in lines)
            bar.update(lines[-1]["step"], lines[-1]["loss"], rate)

    def save_last(step: int) -> None:
        atomic_save({"model": model_state(model), "optimizer": optimizer.state_dict(),
                     "scheduler": scheduler.state_dict(), "rng": _rng_state(device),
                     "step": step, "best_score": best_score, "key": cfg.key(),
                     "config": cfg.to_dict()}, last_path)

    graph_noted = False
    # A stop signal ends the run after the step in flight, with a checkpoint at that step (one
    # process only: the ranks of a torchrun job could stop at different steps and hang).
    stop_point = deferred_stop() if d.world == 1 else nullcontext()
    with stop_point, closing(bar):
        for step in range(start, cfg.steps):
            pending.append((step + 1, stepper(train_rs.batch(order.indices(step),
                                                              lengths_on_device=graphed))))
            if graphed and not graph_noted and (stepper.captured or stepper.failure):
                graph_noted = True  # say once whether the step runs as a graph or eagerly
                if d.main:
                    event = ({"event": "cuda_graph_failed", "error": stepper.failure}
                             if stepper.failure else {"event": "cuda_graph_captured"})
                    with log_path.open("a") as f:
                        f.write(json.dumps({**event, "step": step + 1}) + "\n")
            n_block += 1
            done = step + 1
            if on_step is not None:
                on_step(done)
            is_val = val_ts is not None and (done % val_every == 0 or done == cfg.steps)
            is_ckpt = done % ckpt_every == 0 or done == cfg.steps
            if done % log_every == 0 or is_val or is_ckpt:
                flush()
            if is_val and d.main:
                res = validate(model, val_ts, val_rs, cfg.batch_size, device)
                improved = res["score"] is not None and (best_score is None
                                                        or res["score"] > best_score)
                if improved:
                    best_score = res["score"]
                    atomic_save({"model": model_state(model), "step": done,
                                 "score": best_score, "key": cfg.key(),
                                 "config": cfg.to_dict()}, best_path)
                with log_path.open("a") as f:
                    f.write(json.dumps({"event": "val", "step": done, "best": improved, **res})
                            + "\n")
            if is_ckpt and d.main:
                save_last(done)
            signum = take_stop_request()
            if signum is not None:
                flush()
                if not is_ckpt:
                    save_last(done)
                raise Stopped(signum, f"run {cfg.key()} ({cfg.model}) saved at step {done} of "
                                      f"{cfg.steps} in {last_path}; run again to resume")
        flush()
    if d.main and (val_ts is None or not best_path.exists()):
        # Without a 'val' split there is nothing to select on: the final weights are the best.
        atomic_save({"model": model_state(model), "step": cfg.steps, "score": None,
                     "key": cfg.key(), "config": cfg.to_dict()}, best_path)
    if d.main:  # drawn once at the end: matplotlib costs seconds, a checkpoint should not
        draw_losses()
    d.barrier()
    return best_path
