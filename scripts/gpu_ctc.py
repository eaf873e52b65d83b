"""GPU check and benchmark of the Triton CTC kernels (kernels/ctc.py) behind ``losses.ctc_nll``.

    PYTHONPATH=. python3 scripts/gpu_ctc.py [--out DIR]

``check``: float32 logits on CUDA (the Triton kernels) against the same logits in float64 (the
torch recursion, which the CPU tests hold to ``F.ctc_loss`` within 1e-9): per-sample losses and
the logits' gradient, at IMAGE's shape (5 CTC terms of batch 256 stacked: 1,280 x 32 frames,
targets of 25) and odd ones (one frame, one sample, 64 frames, targets that cannot be spelt,
empty targets); exits 1 on a relative error above 1e-4. ``bench``: IMAGE-2's CTC terms forward +
backward, Triton against the torch recursion, eager and as CUDA-graph replays (milliseconds per
call, CUDA events). Results to stdout and DIR/ctc.json.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

from image_bench import charset, losses
from image_bench.engine.bench import time_call

TOL = 1e-4
# (frames, samples, target width)
SHAPES = [(32, 1280, 25), (64, 256, 25), (26, 7, 10), (1, 6, 5), (12, 6, 5), (5, 3, 1), (6, 9, 5)]


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a.double() - b.double()).norm() / b.double().norm().clamp_min(1e-30)).item()


def make_case(frames: int, samples: int, width: int, g: torch.Generator, device):
    logits = torch.randn(samples, frames, charset.NUM_CLASSES, generator=g) * 3
    lengths = torch.randint(0, width + 1, (samples,), generator=g)
    lengths[0] = 0  # an empty target
    targets = torch.randint(1, charset.NUM_CLASSES, (samples, width), generator=g)
    if samples > 1:  # repeats need blanks between: infeasible when 2n - 1 > frames
        targets[1] = 7
        lengths[1] = width
    targets = targets * (torch.arange(width) < lengths[:, None])
    return logits.to(device), targets.to(device), lengths.to(device)


def nll_and_grad(logits, targets, lengths):
    logits = logits.detach().requires_grad_(True)
    log_probs = F.log_softmax(logits, dim=-1).transpose(0, 1)
    nll = losses.ctc_nll(log_probs, targets, lengths)
    weights = torch.linspace(0.5, 1.5, nll.numel(), device=nll.device, dtype=nll.dtype)
    (grad,) = torch.autograd.grad((nll * weights).sum(), logits)
    return nll.detach(), grad


def check(device) -> list[dict]:
    rows = []
    g = torch.Generator().manual_seed(0)
    for frames, samples, width in SHAPES:
        logits, targets, lengths = make_case(frames, samples, width, g, device)
        ours, g_ours = nll_and_grad(logits, targets, lengths)
        ref, g_ref = nll_and_grad(logits.double(), targets, lengths)
        pt = F.ctc_loss(F.log_softmax(logits.double().cpu(), -1).transpose(0, 1), targets.cpu(),
                        torch.full((samples,), frames), lengths.cpu(), reduction="none",
                        zero_infinity=True)
        row = {"frames": frames, "samples": samples, "width": width,
               "loss_rel": rel(ours, ref), "grad_rel": rel(g_ours, g_ref),
               "torch_vs_pytorch_ctc": rel(ref.cpu(), pt),
               "finite": bool(torch.isfinite(g_ours).all()), "zeroed": int((ref == 0).sum())}
        row["ok"] = row["finite"] and max(row["loss_rel"], row["grad_rel"]) <= TOL
        rows.append(row)
        print(json.dumps(row), flush=True)
    return rows


def timed_ms(fn, graph: bool, device, n: int = 50) -> float:
    call = fn
    if graph:
        for _ in range(3):  # lazy set-up (the kernels' compilation) outside the capture
            fn()
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            fn()
        torch.cuda.current_stream().wait_stream(side)
        cuda_graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(cuda_graph):
            fn()
        call = cuda_graph.replay
    return statistics.median(time_call(call, device, n, 3))


def bench(device) -> list[dict]:
    """IMAGE-2's five CTC terms (p_1..p_3, p-hat_1, p-hat_2) at batch 256, 32 frames."""
    g = torch.Generator().manual_seed(1)
    logits = [torch.randn(256, 32, charset.NUM_CLASSES, generator=g).to(device).requires_grad_()
              for _ in range(5)]
    lengths = torch.randint(3, 11, (256,), generator=g)
    targets = (torch.randint(1, 37, (256, 25), generator=g) * (torch.arange(25) < lengths[:, None]))
    targets, lengths = targets.to(device), lengths.to(device)

    def step():
        total = sum(losses.sync_free_ctc_losses(logits, targets, lengths))
        total.backward()

    rows = []
    kernels = losses._ctc_kernels
    for name, pick in (("triton", kernels), ("torch", lambda emit: None)):
        losses._ctc_kernels = pick
        try:
            row = {"path": name, "eager_ms": timed_ms(step, False, device),
                   "graph_ms": timed_ms(step, True, device)}
        finally:
            losses._ctc_kernels = kernels
        rows.append(row)
        print(json.dumps(row), flush=True)
    return rows


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="runs/ctc")
    args = ap.parse_args()
    device = torch.device("cuda")
    report = {"check": check(device), "bench": bench(device)}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "ctc.json").write_text(json.dumps(report, indent=1))
    failed = [r for r in report["check"] if not r["ok"]]
    print(f"{len(report['check']) - len(failed)} of {len(report['check'])} checks pass")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
