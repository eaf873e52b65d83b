"""Profile training steps of registered models on random data: samples/s and the top CUDA kernels.

    PYTHONPATH=. python3 scripts/profile_step.py image-1 image-2 --batch 256 [--top 20]

``--by-op``: instead of kernels, the operators that launch them, with their input shapes, by
their own GPU time: which convolution or copy a costly kernel belongs to.
``--bench-step``: profile the bench's optimized step itself (``engine.bench``: the trainer's
Stepper with clipping, fused AdamW, compiled regions with the SR parts and combo kernels, two
streams), launched eagerly so that every kernel keeps the operator that launched it.
"""

from __future__ import annotations

import argparse
import time

import torch

from image_bench import charset
from image_bench.accel.optimize import (
    compile_regions,
    configure_cuda,
    training_layout,
    training_streams,
)
from image_bench.models.base import build


def random_batch(batch: int, device: str) -> dict:
    labels = ["street", "2018", "language", "milk"] * (batch // 4 + 1)
    targets, lengths = charset.encode(labels[:batch])
    return {"lr": torch.rand(batch, 3, 16, 64, device=device),
            "hr": torch.rand(batch, 3, 32, 128, device=device),
            "targets": targets.to(device), "target_lengths": lengths,
            "labels": labels[:batch]}


def step(model, opt, batch):
    with torch.autocast("cuda", dtype=torch.bfloat16):
        _, terms = model.training_step(batch)
    loss = sum(terms.values())
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("models", nargs="+")
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--top", type=int, default=20)
    parser.add_argument("--compile", action="store_true", help="regional torch.compile")
    parser.add_argument("--by-op", action="store_true", help="operators with input shapes")
    parser.add_argument("--bench-step", action="store_true",
                        help="the bench's optimized training step, not graphed")
    args = parser.parse_args()
    configure_cuda()
    for name in args.models:
        if args.bench_step:
            profile_bench_step(name, args)
            continue
        model = build(name).cuda().train()
        training_layout(model, torch.device("cuda"))  # channels_last where the trainer uses it
        training_streams(model, torch.device("cuda"))  # and IMAGE's two streams
        if args.compile:
            t0 = time.perf_counter()
            regions = compile_regions(model, sr_parts=True, align=True,  # as the bench trains
                                      combo=model.combo_kernels)
            step(model, torch.optim.AdamW(model.parameters()), random_batch(args.batch, "cuda"))
            print(f"compiled {len(regions)} regions in {time.perf_counter() - t0:.1f} s")
        opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], fused=True)
        batch = random_batch(args.batch, "cuda")
        for _ in range(3):
            step(model, opt, batch)
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        for _ in range(args.steps):
            step(model, opt, batch)
        torch.cuda.synchronize()
        rate = args.steps * args.batch / (time.perf_counter() - t0)
        mode = "regional compile" if args.compile else "eager"
        print(f"== {name}: {rate:,.0f} samples/s at batch {args.batch} (bf16 autocast, {mode})")
        activities = [torch.profiler.ProfilerActivity.CUDA]
        if args.by_op:
            activities.append(torch.profiler.ProfilerActivity.CPU)
        with torch.profiler.profile(activities=activities, record_shapes=args.by_op) as prof:
            for _ in range(2):
                step(model, opt, batch)
            torch.cuda.synchronize()
        if args.by_op:
            table = by_op_table(prof, args.top)
        else:
            table = prof.key_averages().table(sort_by="cuda_time_total", row_limit=args.top,
                                              max_name_column_width=70)
        print(table)
        del model, opt


def profile_bench_step(name: str, args) -> None:
    from image_bench.engine.bench import _training_setup

    stepper, data, levers, _ = _training_setup(name, torch.device("cuda"), True, args.batch, None,
                                               compile=True, cuda_graph=False)
    # lengths on the GPU, as the graphed step has them: the same sync-free CTC (losses.ctc_nll)
    data["target_lengths"] = data["target_lengths"].cuda()
    print(f"== {name}: the bench's step, not graphed; levers {levers}")
    for _ in range(3):
        stepper.update(data)
    torch.cuda.synchronize()
    activities = [torch.profiler.ProfilerActivity.CUDA, torch.profiler.ProfilerActivity.CPU]
    with torch.profiler.profile(activities=activities, record_shapes=True) as prof:
        for _ in range(2):
            stepper.update(data)
        torch.cuda.synchronize()
    print(by_op_table(prof, args.top))


def by_op_table(prof, top: int) -> str:
    """Operators with their input shapes, by their own GPU time."""
    return prof.key_averages(group_by_input_shape=True).table(
        sort_by="self_device_time_total", row_limit=top, max_name_column_width=40,
        max_shapes_column_width=110)


if __name__ == "__main__":
    main()
