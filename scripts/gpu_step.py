"""Training-step speed on the GPU (issue 7): eager vs CUDA-graphed, with and without compiled
transformer blocks; eager and graphed losses side by side; top-10 kernels of the graphed step.

    PYTHONPATH=. python3 scripts/gpu_step.py [--models image-2,image-1,...] [--out DIR]

Every figure is bf16 autocast with fused AdamW at batch 256 on random data (timing only); the
numbers go to stdout and DIR/step_speed.json.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from image_bench.accel.optimize import configure_cuda
from image_bench.engine.bench import _training_setup, top_kernels, training_speed
from image_bench.engine.env import environment

VARIANTS = {
    "eager": {"compile": False, "cuda_graph": False},
    "graph": {"compile": False, "cuda_graph": True},
    "graph+compile": {"compile": True, "cuda_graph": True},
}


def agreement(name: str, device: torch.device, steps: int = 8, batch: int = 64) -> dict:
    """Per-step losses of the eager and the graphed step from the same weights and batch."""
    losses = {}
    for label, graph in (("eager", False), ("graph", True)):
        stepper, data, _, _ = _training_setup(name, device, True, batch, None, False, graph)
        losses[label] = [float(stepper(data)[0]) for _ in range(steps)]
        torch._dynamo.reset()
    worst = max(abs(a - b) / max(abs(a), 1e-6) for a, b in zip(losses["eager"], losses["graph"]))
    return {"model": name, "batch": batch, **losses, "worst_relative_difference": worst}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--models", default="image-2,image-1,crnn,svtr,tpgsr,c3stisr")
    ap.add_argument("--variants", default=",".join(VARIANTS))
    ap.add_argument("--kernels", default="image-2")
    ap.add_argument("--agree", default="image-1,crnn")
    ap.add_argument("--out", default="runs/step_speed")
    ap.add_argument("--steps", type=int, default=20)
    args = ap.parse_args()
    configure_cuda()
    device = torch.device("cuda")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    report: dict = {"env": environment(device), "speed": [], "agreement": [], "kernels": {}}

    def save():
        (out / "step_speed.json").write_text(json.dumps(report, indent=1, default=str))

    for name in [m for m in args.agree.split(",") if m]:
        r = agreement(name, device)
        report["agreement"].append(r)
        print(f"agreement {name}: worst relative loss difference "
              f"{r['worst_relative_difference']:.2e}\n  eager {r['eager']}\n  graph {r['graph']}",
              flush=True)
        save()
    for name in args.models.split(","):
        for variant in args.variants.split(","):
            t = time.perf_counter()
            try:
                r = training_speed(name, device, "optimized", 256, args.steps, 3,
                                   **VARIANTS[variant])
            except Exception as exc:  # noqa: BLE001 - report and go on
                r = {"error": f"{type(exc).__name__}: {exc}"[:400]}
            r.update(model=name, variant=variant, wall_s=time.perf_counter() - t)
            report["speed"].append(r)
            print(f"{name:8s} {variant:14s} {r.get('samples_per_s', float('nan')):9.0f} "
                  f"samples/s  {r.get('ms_per_step', float('nan')):7.1f} ms/step  "
                  f"levers {r.get('levers', r.get('error'))}", flush=True)
            torch._dynamo.reset()
            save()
    for name in [m for m in args.kernels.split(",") if m]:
        for variant in ("eager", "graph"):
            rows = top_kernels(name, device, compile=False, cuda_graph=variant == "graph")
            report["kernels"][f"{name} {variant}"] = rows
            print(f"top kernels, {name}, {variant} step:")
            for k in rows:
                print(f"  {100 * k['share']:5.1f}%  {k['ms_per_step']:8.3f} ms/step  "
                      f"{k['calls']:6d} calls  {k['kernel']}")
            save()


if __name__ == "__main__":
    main()
