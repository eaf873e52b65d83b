"""Latency, throughput and training speed of the suite's models, eager and optimized.

Table 2's protocol: batch 1, time per image, CUDA events around each call, warm-up first, median
of at least 100 runs; throughput at batch 256 (images/s). STISR methods are timed as a pipeline:
SR model + CRNN reading the SR image (the paper's Table 2 rows); recognizers read the LR image
resized to their input; joint models (IMAGE) read their own output. Helper networks a model needs
(``requires``) are attached untrained: timing does not depend on the weights.

Modes:
- ``plain``: the plain models (``image_bench.models``, no acceleration layer), fp32, no compilation;
- ``eager``: fp32, no compilation, the acceleration layer's fast modules (``accel.fast_modules``:
  fused GRU, split tails and heads, Triton attention where it applies);
- ``optimized``: bf16 weights under bf16 autocast (inference), transformer blocks as three Triton
  launches at small batches (``accel.fused_block``), ``torch.compile`` of the repeated
  transformer blocks (``accel.optimize``), channels_last when a short trial at each batch size
  shows it is faster, and at batch 1 the pipeline replayed as a CUDA graph (a batch-1 call is
  dominated by kernel launches); training steps with fused AdamW (with a CUDA graph: clipping +
  AdamW in three Triton launches, ``accel.fused_update``), the model's training layout
  (``accel.optimize.training_layout``: channels_last where measured faster), replayed as one
  CUDA graph for ``graph_safe`` models (``accel.graphed``). Each lever that failed is recorded with
  its error, and the mode still runs with the others.

On CPU everything runs with few iterations and the result says ``"figures": "CPU"``.
"""

from __future__ import annotations

import copy
import math
import statistics
import time
from collections.abc import Callable

import torch

from image_bench import accel
from image_bench.accel.branch_streams import training_streams
from image_bench.accel.fused_block import fuse_blocks_for_inference
from image_bench.accel.graphed import GraphedStepper
from image_bench.accel.optimize import (
    compile_for_training,
    compile_regions,
    configure_cuda,
    training_layout,
)
from image_bench.engine.checkpoint import build_by_name
from image_bench.engine.env import environment
from image_bench.engine.step import StepModule, Stepper, make_optimizer, model_lr, optim_settings
from image_bench.models.base import BenchModel
from image_bench.models.recognizer import resize_for_recognizer


def build_bench_model(name: str, model_kwargs: dict | None = None,
                      device: torch.device | str = "cpu") -> BenchModel:
    """Build ``name`` with untrained helpers attached (timing only)."""
    model = build_by_name(name, model_kwargs)
    for role, helper_name in sorted(type(model).requires.items()):
        model.attach(role, build_by_name(helper_name).to(device).eval())
    return model.to(device)


def pipeline(model: BenchModel, recognizer: BenchModel | None) -> Callable:
    """The inference function of a table row: LR batch -> final CTC logits."""
    kind = model.kind
    if kind == "recognizer":
        return lambda lr: model(resize_for_recognizer(lr, model.input_size)).logits
    if kind == "joint":
        return lambda lr: model(lr).logits
    if kind == "sr":
        if recognizer is None:
            return lambda lr: model(lr).sr
        return lambda lr: recognizer(
            resize_for_recognizer(model(lr).sr[:, :3], recognizer.input_size)).logits
    raise ValueError(f"{type(model).__name__} is a helper network (kind {kind!r}): it has no "
                     "inference row to time; time its training with train=True")


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_call(fn: Callable[[], object], device: torch.device, iters: int,
              warmup: int) -> list[float]:
    """Per-call times in milliseconds: CUDA events on a GPU, perf_counter on the CPU."""
    for _ in range(warmup):
        fn()
    _sync(device)
    times = []
    for _ in range(iters):
        if device.type == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end))
        else:
            t = time.perf_counter()
            fn()
            times.append((time.perf_counter() - t) * 1e3)
    return times


def _cuda_graph(fn: Callable, x: torch.Tensor) -> Callable[[], torch.Tensor]:
    """Capture fn(x) on a static input; replaying it skips every kernel-launch overhead."""
    static_x = x.clone()
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        for _ in range(3):  # warm up allocator and lazy initialisation outside the capture
            fn(static_x)
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        static_out = fn(static_x)

    def replay() -> torch.Tensor:
        graph.replay()
        return static_out

    return replay


def _stats(times: list[float], batch: int) -> dict:
    median, ordered = statistics.median(times), sorted(times)
    return {"batch": batch, "runs": len(times), "median_ms": median,
            "per_image_ms": median / batch, "images_per_s": batch / (median / 1e3),
            "p10_ms": ordered[len(times) // 10], "p90_ms": ordered[(9 * len(times)) // 10]}


def _inference(model, recognizer, device, mode: str, batch_sizes, iters, warmup,
               compile: bool = True) -> dict:
    optimized = mode == "optimized"
    amp = optimized and device.type == "cuda"
    if amp:
        # bf16 weights (on copies: the caller's models keep float32). Under autocast with float32
        # weights every call casts each weight again: at batch 1 an IMAGE-2 call was 2,982
        # kernels, 7.2 ms; with bf16 weights 1,729 kernels, 5.3 ms (H100, scripts/gpu_explore.py).
        model = copy.deepcopy(model).to(torch.bfloat16)
        recognizer = None if recognizer is None else copy.deepcopy(recognizer).to(torch.bfloat16)
    modules = [m for m in (model, recognizer) if m is not None]
    for m in modules:
        m.eval()
    fn = pipeline(model, recognizer)
    levers: dict = {"bf16_weights": amp}
    if amp:  # small batches: transformer blocks as three Triton launches (models/fused_block.py)
        levers["triton_blocks"] = sum(fuse_blocks_for_inference(m) for m in modules)

    def base(lr):
        with torch.no_grad(), torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
            return fn(lr)

    run = base
    if optimized and compile:
        try:
            t = time.perf_counter()
            # Regional compilation (accel/optimize.py): repeated blocks one by one, so the large
            # models compile in seconds; CUDA graphs below remove the remaining launch overhead.
            regions = sum(len(compile_regions(m)) for m in modules)
            base(model.example_input(1).to(device))  # compile now, fail here if it must
            levers["compile"] = {"used": True, "regions": regions,
                                 "first_call_s": time.perf_counter() - t}
        except Exception as exc:  # noqa: BLE001 - record and go on without compilation
            levers["compile"] = {"used": False, "error": f"{type(exc).__name__}: {exc}"[:300]}
            torch._dynamo.reset()
    results = {}
    for batch in batch_sizes:
        x = model.example_input(batch).to(device)
        graph = optimized and device.type == "cuda" and batch == 1
        if optimized and device.type == "cuda":
            # channels_last where a short trial at this batch size shows it faster: at batch 256
            # cuDNN's NHWC kernels win, at batch 1 the layout transposes around them may not.
            trial = {}
            for layout in ("off", "on"):
                _set_channels_last(modules, layout == "on")
                timed = _replay_or_eager(run, _in_layout(x, layout == "on"), graph, levers)
                trial[layout] = statistics.median(time_call(timed, device, 20 if graph else 5, 2))
            use = trial["on"] < trial["off"]
            _set_channels_last(modules, use)  # weights change storage: capture the graph again
            x = _in_layout(x, use)
            levers.setdefault("channels_last", {})[f"batch{batch}"] = {"used": use,
                                                                      "trial_ms": trial}
        call = _replay_or_eager(run, x, graph, levers)
        n = iters if batch == 1 else max(10, iters // 5)
        results[f"batch{batch}"] = _stats(time_call(call, device, n, warmup), batch)
    results["dtype"] = "bf16 autocast" if amp else "fp32"
    results["levers"] = levers
    return results


def _set_channels_last(modules, on: bool) -> None:
    for m in modules:
        m.to(memory_format=torch.channels_last if on else torch.contiguous_format)


def _in_layout(x: torch.Tensor, channels_last: bool) -> torch.Tensor:
    return x.contiguous(memory_format=torch.channels_last if channels_last else
                        torch.contiguous_format)


def _replay_or_eager(run, x: torch.Tensor, graph: bool, levers: dict):
    """``run(x)`` as a CUDA graph replay when ``graph`` (and capture works), else eagerly."""
    if graph:
        try:
            replay = _cuda_graph(run, x)
            levers["cuda_graph_batch1"] = {"used": True}
            return replay
        except Exception as exc:  # noqa: BLE001 - record and time it eagerly
            levers["cuda_graph_batch1"] = {"used": False,
                                           "error": f"{type(exc).__name__}: {exc}"[:300]}
    return lambda: run(x)


def synthetic_batch(model: BenchModel, batch: int, device: torch.device, seed: int = 0) -> dict:
    """A training batch of random images and random words (timing only)."""
    from image_bench import charset

    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(3, 11, (batch,), generator=g)
    labels = ["".join(charset.ALPHABET[i] for i in torch.randint(0, 36, (int(n),), generator=g))
              for n in lengths]
    targets, target_lengths = charset.encode(labels)
    h, w = (16, 64)
    return {"lr": torch.rand(batch, 3, h, w, generator=g).to(device),
            "hr": torch.rand(batch, 3, 2 * h, 2 * w, generator=g).to(device),
            "targets": targets.to(device), "target_lengths": target_lengths,
            "labels": labels}


MODES = ("plain", "eager", "optimized")


def _accelerate(models: list, mode: str) -> None:
    """The acceleration layer for ``mode``: none for 'plain', its fast modules otherwise (the
    optimized mode's other levers are set where they are timed)."""
    accel.fast_losses(mode != "plain")
    if mode != "plain":
        for m in models:
            accel.fast_modules(m)


def _training_setup(name: str, device: torch.device, optimized: bool, batch: int,
                    model_kwargs: dict | None, compile: bool, cuda_graph: bool,
                    mode: str | None = None):
    """A model's training step as the trainer builds it, on one random batch, and its levers."""
    torch.manual_seed(0)
    model = build_bench_model(name, model_kwargs, device).train()
    _accelerate([model], mode or ("optimized" if optimized else "eager"))
    graphed = optimized and cuda_graph and device.type == "cuda" and model.graph_safe
    levers: dict = {"fused_adamw": optimized and device.type == "cuda",
                    "channels_last": optimized and training_layout(model, device),
                    "branch_streams": optimized and training_streams(model, device)}
    settings = optim_settings(model, model_lr(type(model)))
    # eager: the plain foreach AdamW; optimized: fused AdamW (make_optimizer's CUDA default)
    optimizer, scheduler = make_optimizer(model, settings, device if optimized else
                                          torch.device("cpu"), capturable=graphed)
    if optimized and compile:
        try:
            # steady-state speed: the SR parts compiled too, and combo kernels where measured, as
            # long training runs have them
            levers["compiled_regions"] = len(compile_for_training(model, math.inf))
            levers["compile"] = True
        except Exception as exc:  # noqa: BLE001
            levers["compile"] = f"failed: {type(exc).__name__}: {exc}"[:300]
    amp = optimized and device.type == "cuda"
    stepper = Stepper(StepModule(model), optimizer, scheduler, grad_clip=settings["grad_clip"],
                      device=device, amp=amp, fused_update=graphed)
    levers["fused_update"] = stepper.fused_update is not None
    data = synthetic_batch(model, batch, device)
    if graphed:
        stepper = GraphedStepper(stepper)
        data["target_lengths"] = data["target_lengths"].to(device)
    return stepper, data, levers, amp


def training_speed(name: str, device: torch.device, mode: str, batch: int, steps: int,
                   warmup: int, model_kwargs: dict | None = None, compile: bool = True,
                   cuda_graph: bool = True) -> dict:
    """Samples/s of full training steps (forward, loss, backward, clip, AdamW) on random data.

    eager: fp32, foreach AdamW. optimized: bf16 autocast, fused AdamW, compiled transformer
    blocks (``compile``) and the whole step replayed as a CUDA graph (``cuda_graph``, for models
    that are ``graph_safe``)."""
    stepper, data, levers, amp = _training_setup(name, device, mode == "optimized", batch,
                                                 model_kwargs, compile, cuda_graph, mode)
    graphed = isinstance(stepper, GraphedStepper)
    t = time.perf_counter()
    for _ in range(warmup + (1 if graphed else 0)):  # compilation / capture happen here
        stepper(data)
    _sync(device)
    levers["warmup_s"] = time.perf_counter() - t
    if graphed:
        levers["cuda_graph"] = True if stepper.captured else f"failed: {stepper.failure}"
    t = time.perf_counter()
    for _ in range(steps):
        last = stepper(data)
    _sync(device)
    elapsed = time.perf_counter() - t
    return {"batch": batch, "steps": steps, "samples_per_s": batch * steps / elapsed,
            "ms_per_step": elapsed / steps * 1e3, "dtype": "bf16 autocast" if amp else "fp32",
            "levers": levers, "final_loss": float(last[0])}


def profile_kernels(fn: Callable[[], object], calls: int, device: torch.device) -> list:
    """GPU kernels of ``calls`` calls of ``fn`` (torch.profiler events with device time),
    costliest first."""
    from torch.profiler import ProfilerActivity, profile

    _sync(device)
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(calls):
            fn()
        _sync(device)
    events = [e for e in prof.key_averages() if getattr(e, "self_device_time_total", 0) > 0]
    return sorted(events, key=lambda e: e.self_device_time_total, reverse=True)


def top_kernels(name: str, device: torch.device, batch: int = 256, steps: int = 5,
                model_kwargs: dict | None = None, top: int = 10, compile: bool = True,
                cuda_graph: bool = True) -> list[dict]:
    """The top GPU kernels of a few optimized-mode training steps (torch.profiler)."""
    stepper, data, _, _ = _training_setup(name, device, True, batch, model_kwargs, compile,
                                          cuda_graph)
    for _ in range(5):  # past warm-up and capture
        stepper(data)
    events = profile_kernels(lambda: stepper(data), steps, device)
    total = sum(e.self_device_time_total for e in events) or 1.0
    return [{"kernel": e.key[:120], "ms_per_step": e.self_device_time_total / 1e3 / steps,
             "share": e.self_device_time_total / total, "calls": e.count}
            for e in events[:top]]


def bench_model(name: str, *, device: str | None = None, model_kwargs: dict | None = None,
                recognizer: str | None = "crnn", modes: tuple[str, ...] = ("eager", "optimized"),
                batch_sizes: tuple[int, ...] = (1, 256), iters: int | None = None,
                warmup: int | None = None, train: bool = True, train_batch: int = 256,
                train_steps: int | None = None, kernels: bool = False,
                compile: bool = True) -> dict:
    """Latency (batch 1), throughput (batch 256) and training samples/s of one model.

    ``recognizer`` reads the SR output of STISR models (CRNN in Table 2). Returns a dict with
    the environment (GPU name, torch version), one entry per mode, and ``figures`` = 'GPU' or
    'CPU'. ``compile=False`` leaves torch.compile out of the optimized mode (bf16, channels_last
    and CUDA graphs stay): compiling the large models takes minutes.
    """
    dev = torch.device(device) if device else torch.device(
        "cuda" if torch.cuda.is_available() else "cpu")
    on_gpu = dev.type == "cuda"
    if on_gpu:
        configure_cuda()
    iters = iters or (100 if on_gpu else 5)
    warmup = warmup if warmup is not None else (10 if on_gpu else 1)
    if iters < 100 and on_gpu:
        raise ValueError("Table 2's protocol takes the median of at least 100 runs")
    torch.manual_seed(0)
    model = build_bench_model(name, model_kwargs, dev)
    rec = None
    if model.kind == "sr" and recognizer:
        rec = build_bench_model(recognizer, None, dev)
    env = environment(dev)
    out: dict = {
        "model": name, "model_kwargs": model_kwargs or {}, "kind": model.kind,
        "pipeline": f"{name} + {recognizer}" if rec is not None else name,
        "figures": "GPU" if on_gpu else "CPU (few iterations; not comparable to GPU figures)",
        "device": env["device"], "torch": env["torch"], "cuda": env["cuda"],
        "commit": env["commit"], "protocol": (
            f"batch 1 per image: median of {iters} runs after {warmup} warm-up runs, "
            + ("CUDA events" if on_gpu else "perf_counter") + "; throughput: images/s at the "
            "largest batch"),
        "modes": {},
    }
    unknown = [m for m in modes if m not in MODES]
    if unknown:
        raise ValueError(f"unknown mode {unknown[0]!r}: the modes are {', '.join(MODES)}")
    for mode in modes:
        entry: dict = {}
        if model.kind != "aux":
            pair = (model, rec)
            if mode == "plain":  # fresh models: the others' modules may have been swapped
                torch.manual_seed(0)
                pair = (build_bench_model(name, model_kwargs, dev),
                        None if rec is None else build_bench_model(recognizer, None, dev))
            _accelerate([m for m in pair if m is not None], mode)
            try:
                entry["inference"] = _inference(*pair, dev, mode, batch_sizes, iters, warmup,
                                                compile)
            except Exception as exc:  # noqa: BLE001 - one failing mode must not hide the other
                entry["inference"] = {"error": f"{type(exc).__name__}: {exc}"[:500]}
        if train:
            steps = train_steps or (20 if on_gpu else 2)
            try:
                entry["training"] = training_speed(name, dev, mode, train_batch, steps,
                                                   3 if on_gpu else 1, model_kwargs, compile)
            except Exception as exc:  # noqa: BLE001
                entry["training"] = {"error": f"{type(exc).__name__}: {exc}"[:500]}
        out["modes"][mode] = entry
        torch._dynamo.reset()
    if kernels and on_gpu:
        out["top_kernels"] = top_kernels(name, dev, train_batch, model_kwargs=model_kwargs,
                                         compile=compile)
    return out


def format_rows(results: list[dict]) -> list[list[str]]:
    """Table rows: model, mode, batch-1 ms/image, batch-N images/s, training samples/s."""
    rows = []
    for r in results:
        for mode, entry in r["modes"].items():
            inf, tr = entry.get("inference", {}), entry.get("training", {})
            b1 = inf.get("batch1", {})
            big = [v for k, v in inf.items() if k.startswith("batch") and k != "batch1"]
            rows.append([r["pipeline"], mode,
                         f"{b1['per_image_ms']:.3f}" if b1 else inf.get("error", "-")[:40],
                         f"{big[0]['images_per_s']:,.0f}" if big else "-",
                         f"{tr['samples_per_s']:,.0f}" if "samples_per_s" in tr
                         else tr.get("error", "-")[:40]])
    return rows
