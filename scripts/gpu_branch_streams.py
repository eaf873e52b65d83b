"""IMAGE's SR model on a side stream (models/branch_streams.py): same numbers as one stream?

    PYTHONPATH=. python3 scripts/gpu_branch_streams.py [--out DIR] [--model image-2]
        [--set guidance=false] [--set clue_losses=false] [--set detach_clues=false]

1. Eager, fp32 and bf16 autocast, deterministic cuDNN: one forward + loss + backward from the same
   weights and batch with one stream and with two; every loss term and every parameter gradient
   compared (relative to the one-stream value; the same kernels run, so 0 is expected).
2. The trainer's optimized step without compiled regions (bf16, fused AdamW, CUDA graph): 8 steps
   from the same seed with one stream, with two, and with one again (the graphed step's own
   run-to-run spread); the statistics of each step compared.
Results to stdout and DIR/branch_streams.json. The speed is measured by
``scripts/gpu_explore.py train --variants nostreams,base``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

import image_bench.engine.bench as bench
from image_bench.accel.optimize import configure_cuda


def eager_grads(name: str, streams: bool, amp: bool, batch: int,
                kwargs: dict) -> dict[str, torch.Tensor]:
    device = torch.device("cuda")
    torch.manual_seed(0)
    model = bench.build_bench_model(name, kwargs, device).train()
    model.branch_streams = streams
    data = bench.synthetic_batch(model, batch, device)
    with torch.autocast("cuda", dtype=torch.bfloat16, enabled=amp):
        _, terms = model.training_step(data)
    total = sum(terms.values())
    total.backward()
    torch.cuda.synchronize()
    out = {f"loss.{k}": v.detach().float() for k, v in terms.items()}
    out.update({n: p.grad.float() for n, p in model.named_parameters() if p.grad is not None})
    return out


def worst_difference(a: dict, b: dict) -> tuple[float, str]:
    if a.keys() != b.keys():
        return float("inf"), f"different gradients: {sorted(a.keys() ^ b.keys())[:5]}"
    worst, where = 0.0, ""
    for k in a:
        d = float((a[k] - b[k]).norm() / a[k].norm().clamp_min(1e-30))
        if d > worst:
            worst, where = d, k
    return worst, where


def graphed_stats(name: str, streams: bool, batch: int, steps: int,
                  kwargs: dict) -> list[list[float]]:
    device = torch.device("cuda")
    real = bench.training_streams
    if not streams:
        bench.training_streams = lambda model, device: False
    try:
        stepper, data, levers, _ = bench._training_setup(name, device, True, batch, kwargs,
                                                         compile=False, cuda_graph=True)
    finally:
        bench.training_streams = real
    rows = [stepper(data).tolist() for _ in range(steps)]
    torch.cuda.synchronize()
    assert levers["branch_streams"] == streams, levers
    return rows


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="runs/branch_streams")
    ap.add_argument("--model", default="image-2")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--set", action="append", default=[], metavar="KEY=BOOL",
                    help="a model keyword, e.g. guidance=false (the Table 4 ablations)")
    args = ap.parse_args()
    kwargs = {}
    for item in args.set:
        key, _, value = item.partition("=")
        if not key or value.lower() not in ("true", "false"):
            ap.error(f"--set takes KEY=true or KEY=false, got {item!r}")
        kwargs[key] = value.lower() == "true"
    configure_cuda()
    torch.backends.cudnn.benchmark = False
    torch.backends.cudnn.deterministic = True
    report: dict = {"model": args.model, "kwargs": kwargs, "eager": {}, "graphed": {}}
    ok = True
    for amp in (False, True):
        one = eager_grads(args.model, False, amp, args.batch, kwargs)
        two = eager_grads(args.model, True, amp, args.batch, kwargs)
        worst, where = worst_difference(one, two)
        label = "bf16" if amp else "fp32"
        report["eager"][label] = {"tensors": len(one), "worst_relative": worst, "at": where}
        ok &= worst <= (1e-3 if amp else 1e-5)
        print(f"eager {label}: {len(one)} tensors, worst relative difference {worst:.3g} "
              f"({where})", flush=True)
    one = graphed_stats(args.model, False, args.batch, 8, kwargs)
    two = graphed_stats(args.model, True, args.batch, 8, kwargs)
    # how far one stream repeats itself
    again = graphed_stats(args.model, False, args.batch, 8, kwargs)

    def differences(a, b):
        return [max(abs(x - y) / max(abs(x), 1e-12) for x, y in zip(r1, r2))
                for r1, r2 in zip(a, b)]

    diffs, repeat = differences(one, two), differences(one, again)
    report["graphed"] = {"one_stream": one, "two_streams": two, "one_stream_again": again,
                         "worst_relative_per_step": diffs, "repeat_worst_relative": repeat}
    ok &= max(diffs) <= 1e-2
    print("graphed steps, worst relative difference of the statistics per step: "
          + ", ".join(f"{d:.2g}" for d in diffs), flush=True)
    print("the same, one stream against one stream again: "
          + ", ".join(f"{d:.2g}" for d in repeat), flush=True)
    print("one stream, total per step: " + ", ".join(f"{r[0]:.5g}" for r in one))
    print("two streams, total per step: " + ", ".join(f"{r[0]:.5g}" for r in two))
    report["pass"] = ok
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    tag = "-".join(f"{k}_{v}" for k, v in kwargs.items()) or "default"
    (out / f"branch_streams_{args.model}_{tag}.json").write_text(json.dumps(report, indent=1))
    print("PASS" if ok else "FAIL")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
