"""``image-bench train``, ``image-bench eval`` and ``image-bench bench``."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import click


def make_config(model: str, data: str, profile: str, sets: tuple[str, ...], seed: int):
    """A RunConfig from the profile's schedule for this stage, then the --set overrides.

    Stage by data set and model kind, as the run plan stages them: helper networks (kind 'aux')
    use the helper schedule, training on ``synth`` is pretraining ("S"), an STISR model (kind
    'sr') elsewhere is STISR training, anything else fine-tuning ("S+L").
    The learning rate, its schedule and the STN setting are the model's own
    (``experiments.plan.model_defaults``) unless set.
    ``--set key=value`` sets a RunConfig field (steps, batch_size, lr, lr_schedule, seed) or else
    a model keyword argument (``--set lr_fraction=0.5``); values are JSON
    (``--set guidance=false``), checked against the field's or keyword's type
    (engine/cli_checks.py).
    """
    from image_bench.engine.cli_checks import check_model, check_profile, parse_sets
    from image_bench.experiments.config import RunConfig
    from image_bench.experiments.plan import model_defaults

    p = check_profile(profile)
    factory = check_model(model)
    kind = getattr(factory, "kind", "sr")
    if kind == "aux":
        steps, batch = p.helper_steps, p.helper_batch
    elif data == "synth":
        steps, batch = p.pretrain_steps, p.pretrain_batch
    elif kind == "sr":
        steps, batch = p.stisr_steps, p.finetune_batch
    else:
        steps, batch = p.finetune_steps, p.finetune_batch
    overrides, kwargs = parse_sets(model, sets)
    defaults = model_defaults(model)  # as the run plan names them in the key
    kwargs = {**defaults.pop("model_kwargs"), **kwargs}
    fields = {"steps": steps, "batch_size": batch, "seed": seed, **defaults, **overrides}
    return RunConfig(model=model, data=data, profile=profile, model_kwargs=kwargs, **fields)


def _run_inputs(run_dir: Path):
    from image_bench.engine.cli_checks import load_run_config

    cfg = load_run_config(run_dir)
    inputs_path = run_dir / "inputs.json"
    try:
        inputs = json.loads(inputs_path.read_text()) if inputs_path.exists() else {}
    except ValueError:
        from image_bench.usage import UsageError

        raise UsageError(f"{inputs_path}: unreadable (not JSON)") from None
    return cfg, {k: Path(v) for k, v in (inputs.get("helper_checkpoints") or {}).items()}


@click.command()
@click.argument("model")
@click.option("--data", required=True, help="Data set name: synth, textzoom, ...")
@click.option("--profile", default="smoke", show_default=True, help="smoke | quick | paper")
@click.option("--devices", default=1, show_default=True, help="GPUs: >1 starts torchrun (DDP).")
@click.option("--set", "sets", multiple=True, metavar="KEY=VALUE",
              help="Override a config field or model keyword (repeatable).")
@click.option("--seed", default=0, show_default=True)
@click.option("--run-dir", type=click.Path(path_type=Path), default=None,
              help="Run folder (default runs/<model>-<data>-<key>).")
@click.option("--init", "init", type=click.Path(exists=True, path_type=Path), default=None,
              help="Checkpoint or run folder whose weights initialise this run.")
@click.option("--helper", "helpers", multiple=True, metavar="ROLE=RUN_DIR",
              help="A trained helper run for one of the model's roles (repeatable).")
@click.option("--compile/--no-compile", "compile_", default=True, show_default=True,
              help="On a GPU, torch.compile the transformer blocks (the first steps take "
                   "15-50 s longer; IMAGE-2 then trains ~37% faster). Ignored on the CPU.")
@click.option("--device", default=None, help="cpu, cuda, cuda:1 (default: cuda if present).")
@click.option("--no-cuda-graph", is_flag=True,
              help="Step eagerly on the GPU instead of replaying the step as a CUDA graph.")
def train(model, data, profile, devices, sets, seed, run_dir, init, helpers, compile_, device,
          no_cuda_graph):
    """Train MODEL on --data; resumes when the run folder holds a checkpoint. SIGTERM or Ctrl-C
    saves the step in flight (exit 143 / 130)."""
    from image_bench.engine.cli_checks import check_helpers, check_run_dir, check_train_data

    # every check before the run folder exists, and before torchrun starts copies of us
    check_train_data(data)
    cfg = make_config(model, data, profile, sets, seed)
    helper_dirs = check_helpers(model, helpers)
    if devices > 1 and "WORLD_SIZE" not in os.environ:
        argv, skip = [], False
        for arg in sys.argv[2:]:  # everything after 'train', minus --devices
            if skip:
                skip = False
                continue
            if arg == "--devices":
                skip = True
                continue
            if arg.startswith("--devices="):
                continue
            argv.append(arg)
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone",
               f"--nproc_per_node={devices}", "-m", "image_bench.cli", "train", *argv]
        click.echo("starting: " + " ".join(cmd))
        raise SystemExit(subprocess.call(cmd))
    from image_bench.engine.train import train_run
    from image_bench.experiments.config import RunConfig

    helper_cfgs, helper_ckpts = {}, {}
    for role, hdir in helper_dirs.items():
        hcfg, _ = _run_inputs(hdir)
        helper_cfgs[role], helper_ckpts[role] = hcfg, hdir / "best.pt"
    init_ckpt = None
    if init is not None:
        init_ckpt = init / "best.pt" if init.is_dir() else init
        if init.is_dir():
            cfg = cfg.with_(init_from=_run_inputs(init)[0])
    if helper_cfgs:
        cfg = cfg.with_(helpers=helper_cfgs)
    assert isinstance(cfg, RunConfig)
    run_dir = run_dir or Path("runs") / f"{model}-{data}-{cfg.key()}"
    check_run_dir(run_dir, cfg)
    best = train_run(cfg, run_dir, init_checkpoint=init_ckpt, helper_checkpoints=helper_ckpts,
                     device=device, compile=compile_, cuda_graph=not no_cuda_graph)
    if int(os.environ.get("RANK", "0")) == 0:
        click.echo(f"run {cfg.key()}: {run_dir}  best checkpoint: {best}")


def _check(models: tuple[str, ...], device: str | None) -> None:
    """bench --check: one line per check; a clean one-line failure without the device."""
    import torch

    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise click.ClickException("bench --check --device cuda: this machine has no CUDA device "
                                   "(torch.cuda.is_available() is False); --device cpu checks "
                                   "the CPU reference paths")
    from image_bench.engine.accel_check import run_checks

    if not run_checks(list(models), dev, echo=click.echo):
        raise SystemExit(1)


def _gru_rows(device: str | None) -> list[dict]:
    """The SRB's GRU alone, fused vs cuDNN, on CUDA (nothing to compare on a CPU)."""
    import torch

    if not torch.cuda.is_available() or (device or "cuda").startswith("cpu"):
        return []
    from image_bench.accel.gru import fused_gru_available
    from image_bench.accel.kernels.gru_bench import bench_srb_grus

    if not fused_gru_available():
        click.echo("GRU alone: the fused GRU is unavailable (triton missing)", err=True)
        return []
    return [*bench_srb_grus(torch.bfloat16), *bench_srb_grus(None)]


def _eval_splits(data: str, split_names: tuple[str, ...], cfg) -> tuple[str, dict]:
    """(set label, {row name: TensorSet}) of --data: a named set's test splits, or the LMDBs
    at or under a path (one row per subset), each announced with its format and count."""
    from image_bench.data import datasets, paths
    from image_bench.engine.cli_checks import check_eval_data
    from image_bench.usage import UsageError

    subsets = check_eval_data(data)
    known = ([s for s in datasets.splits(data) if s not in ("train", "val")] if subsets is None
             else [s.name for s in subsets])
    allowed = datasets.splits(data) if subsets is None else known  # a name's train/val too
    unknown = [s for s in split_names if s not in allowed]
    if unknown:
        raise UsageError(f"--split {unknown[0]}: {data} has {', '.join(allowed)}")
    names = list(split_names) or known
    if subsets is None:
        return data, {s: datasets.resolve(data, s, cfg.profile, seed=cfg.seed) for s in names}
    label = paths.set_name(data)
    click.echo(f"{data}: {len(subsets)} LMDB(s), each image read as LR 64x16 (PIL bicubic, "
               "aspect not kept)")
    splits = {}
    for sub in subsets:
        if sub.name in names:
            ts = paths.load_subset(sub, label)
            skipped = ts.identity["dropped"]
            click.echo(f"  {sub.describe()}; {len(ts)} scored" + (
                f", {skipped} skipped (label normalises to nothing)" if skipped else "") + (
                "; left out: nothing to score" if len(ts) == 0 else ""))
            if len(ts):
                splits[sub.name] = ts
    if not splits:
        raise click.ClickException(f"{data}: no record with a scorable label")
    return label, splits


@click.command(name="eval")
@click.argument("run_dir", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--data", required=True,
              help="A data set name (its test splits) or a path: an LMDB, or a folder of LMDBs "
                   "(one row per subset), in TextZoom's or the STR benchmark format.")
@click.option("--split", "split_names", multiple=True,
              help="Splits or subsets (default: all but train/val).")
@click.option("--recognizer", "rec_dir", type=click.Path(exists=True, path_type=Path),
              default=None, help="Run folder of the recognizer that reads an SR model's output.")
@click.option("--batch-size", default=None, type=int, help="Default: the profile's eval batch.")
@click.option("--device", default=None)
@click.option("--checkpoint", default="best.pt", show_default=True)
def evaluate(run_dir, data, split_names, rec_dir, batch_size, device, checkpoint):
    """Evaluate the run in RUN_DIR on the test splits of --data; writes eval-<data>.json
    (for a path, eval-<its folder's name>.json)."""
    from rich.console import Console

    from image_bench.engine.checkpoint import load_model
    from image_bench.engine.evaluate import Bicubic, default_device
    from image_bench.engine.evaluate import evaluate as run_eval
    from image_bench.profiles import get_profile

    cfg, helper_ckpts = _run_inputs(run_dir)
    label, splits = _eval_splits(data, split_names, cfg)
    dev = device or str(default_device())
    model = load_model(cfg, run_dir / checkpoint, device=dev, helper_checkpoints=helper_ckpts)
    rec = None
    if rec_dir is not None:
        rcfg, rhelpers = _run_inputs(rec_dir)
        rec = load_model(rcfg, rec_dir / "best.pt", device=dev, helper_checkpoints=rhelpers)
    bs = batch_size or get_profile(cfg.profile).eval_batch
    res = run_eval(model, splits, recognizer=rec, batch_size=bs, device=dev)
    if res["average"].get("psnr") is not None:  # an SR output: show what doing nothing gives
        res["bicubic"] = run_eval(Bicubic(), splits, batch_size=bs, device=dev)
    res["run"] = {"key": cfg.key(), "checkpoint": str(run_dir / checkpoint),
                  "recognizer": str(rec_dir) if rec_dir else None}
    out = run_dir / f"eval-{label.replace('/', '_')}.json"
    tmp = out.with_suffix(".tmp")
    tmp.write_text(json.dumps(res, indent=1, default=str))
    os.replace(tmp, out)
    Console().print(eval_table(res, f"{cfg.model} on {data} ({cfg.key()})"))
    click.echo(f"written: {out}")


def eval_table(res: dict, title: str):
    """The per-split table `eval` prints; an SR model's PSNR/SSIM sit beside bicubic's, and a
    value below bicubic is marked, so a model worse than doing nothing shows at once."""
    from rich.table import Table

    bicubic = res.get("bicubic")
    table = Table(title=title)
    cols = ["split", "count", "accuracy", "1-NED", "PSNR", "SSIM"]
    if bicubic:
        cols = [*cols[:5], "PSNR bicubic", "SSIM", "SSIM bicubic"]
    for col in cols:
        table.add_column(col, justify="right")

    def fmt(v, pct=False):
        return "-" if v is None else (f"{100 * v:.2f}" if pct else f"{v:.4f}")

    def fidelity(value, base):
        """The model's value (marked when below bicubic's), then bicubic's when there is one."""
        if bicubic is None:
            return [fmt(value)]
        below = value is not None and base is not None and value < base
        return [fmt(value) + (" (below bicubic)" if below else ""), fmt(base)]

    def row(label, count, r, b, acc, ned, psnr="psnr", ssim="ssim"):
        cells = [label, count, fmt(r[acc], True), fmt(r[ned], True) if ned else ""]
        cells += fidelity(r[psnr], b and b[psnr])
        cells += fidelity(r[ssim], b and b[ssim])
        table.add_row(*cells)

    for name, r in res["splits"].items():
        row(name, str(r["count"]), r, bicubic and bicubic["splits"][name], "accuracy", "ned")
    a = res["average"]
    b = bicubic and bicubic["average"]
    row("weighted avg", str(a["count"]), a, b, "accuracy_weighted", "ned_weighted")
    row("plain mean", "", a, b, "accuracy_mean", None, "psnr_mean", "ssim_mean")
    return table


@click.command()
@click.argument("models", nargs=-1)
@click.option("--json", "json_path", type=click.Path(path_type=Path), default=None,
              help="Also write the full results as JSON here.")
@click.option("--device", default=None)
@click.option("--recognizer", default="crnn", show_default=True,
              help="Recognizer reading STISR outputs (Table 2: CRNN).")
@click.option("--iters", default=None, type=int, help="Batch-1 runs (GPU default 100).")
@click.option("--throughput-batch", default=256, show_default=True)
@click.option("--train-batch", default=256, show_default=True)
@click.option("--no-train", is_flag=True, help="Skip training samples/s.")
@click.option("--kernels", is_flag=True, help="Top-10 GPU kernels of an optimized train step.")
@click.option("--mode", "modes", multiple=True, default=("eager", "optimized"), show_default=True,
              type=click.Choice(["plain", "eager", "optimized"]),
              help="plain: the models without the acceleration layer (image_bench/accel/); "
                   "eager: its fast modules, fp32; optimized: all of it.")
@click.option("--check", is_flag=True, help="Instead of timing: check the accelerated models "
              "against the plain ones on --device (one PASS/FAIL line per check; exit 1 on a "
              "failure). MODELS default: image-2 tpgsr crnn.")
@click.option("--no-compile", is_flag=True, help="Optimized mode without torch.compile (slow to "
              "compile for the large models); bf16, channels_last and CUDA graphs stay.")
def bench(models, json_path, device, recognizer, iters, throughput_batch, train_batch, no_train,
          kernels, modes, no_compile, check):
    """Latency (batch 1), throughput and training speed of MODELS, eager and optimized; with
    --check, the accelerated models' agreement with the plain ones.

    MODELS are registered names, or 'all' for every registered model."""
    from image_bench.engine.cli_checks import check_model
    from image_bench.models.base import available
    from image_bench.usage import UsageError

    if "all" in models:
        models = tuple(available())
    if check:
        models = models or ("image-2", "tpgsr", "crnn")
    elif not models:
        raise UsageError("bench: name at least one model (or 'all'), e.g. image-bench bench crnn")
    for name in models:
        check_model(name)
    if check:
        _check(models, device)
        return
    from rich.console import Console
    from rich.table import Table

    from image_bench.engine.bench import bench_model, format_rows

    results = []
    for name in models:
        click.echo(f"benchmarking {name} ...", err=True)
        results.append(bench_model(name, device=device, recognizer=recognizer, iters=iters,
                                   batch_sizes=(1, throughput_batch), train=not no_train,
                                   train_batch=train_batch, kernels=kernels, modes=tuple(modes),
                                   compile=not no_compile))
        if json_path:  # after every model: a time limit that cuts the next loses only that one
            _write_bench_json(json_path, results)
    first = results[0]
    table = Table(title=f"{first['device']}, torch {first['torch']} ({first['figures']})")
    for col in ("method", "mode", "batch 1: ms/image", f"batch {throughput_batch}: images/s",
                f"train b{train_batch}: samples/s"):
        table.add_column(col, justify="right")
    for row in format_rows(results):
        table.add_row(*row)
    Console().print(table)
    grus = _gru_rows(device)
    for g in grus:
        graphed = ("; as CUDA graphs: cuDNN {:.2f} ms, fused {:.2f} ms, {:.1f}x".format(
            g["cudnn_graph_ms"], g["fused_graph_ms"], g["graph_speedup"])
            if g.get("graph_speedup") else "; not capturable as CUDA graphs")
        click.echo(f"GRU alone (fwd+bwd, {g['dtype']}, {g['sequences']} x {g['steps']} steps): "
                   f"cuDNN {g['cudnn_ms']:.2f} ms, fused {g['fused_ms']:.2f} ms, "
                   f"{g['speedup']:.1f}x (eager){graphed}")
    for r in results:
        for k in r.get("top_kernels", []):
            click.echo(f"  {r['model']}: {100 * k['share']:5.1f}%  {k['ms_per_step']:8.3f} ms  "
                       f"{k['kernel']}")
    if json_path:
        _write_bench_json(json_path, results if not grus else
                          [*results, {"model": "gru-alone", "rows": grus}])
        click.echo(f"written: {json_path}")


def _write_bench_json(path: Path, payload: list) -> None:
    from image_bench.experiments.store import atomic_write_text

    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps(payload, indent=1, default=str))
