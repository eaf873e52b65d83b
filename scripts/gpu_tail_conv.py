"""GPU check and benchmark of the split tail convolution (``models.tail_conv``).

    PYTHONPATH=. python3 scripts/gpu_tail_conv.py [--out DIR]

1. Correctness: ``TailConv2d`` on CUDA (one product + the Triton shifted sum) against
   ``F.conv2d`` in float64, output and the gradients of input, weight and bias; fp32 (TF32 off)
   and bf16 autocast; the SR tails' shapes and odd ones (batch 1, maps smaller than the kernel,
   sizes that are not multiples of the Triton block); NCHW and channels_last input.
2. Speed: forward + backward under bf16 autocast at the training shapes (batch 256, 64 -> 3 and
   64 -> 4 at 32 x 128), cuDNN (``TailConv2d.split = False``) vs split; the batch-1 forward.
Results go to stdout and DIR/tail_conv.json.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
import torch.nn.functional as F

from image_bench.engine.bench import time_call
from image_bench.engine.env import environment
from image_bench.models.tail_conv import TailConv2d

CASES = [  # (batch, in, out, height, width, kernel)
    (256, 64, 3, 32, 128, 9), (256, 64, 4, 32, 128, 9), (1, 64, 3, 32, 128, 9),
    (3, 5, 2, 7, 11, 9), (2, 64, 3, 9, 13, 3), (1, 1, 1, 1, 1, 1),
]


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.double(), b.double()
    return ((a - b).norm() / b.norm().clamp_min(1e-30)).item()


def check(case, amp: bool, channels_last: bool = False) -> dict:
    n, c, o, h, w, k = case
    torch.manual_seed(0)
    conv = TailConv2d(c, o, k).cuda()
    conv.split_min_batch = 1  # check the split path at every batch size
    x = torch.randn(n, c, h, w, device="cuda")
    if channels_last:  # as IMAGE trains
        x = x.contiguous(memory_format=torch.channels_last)
    x.requires_grad_(True)
    grad_out = torch.randn(n, o, h, w, device="cuda")
    with torch.autocast("cuda", dtype=torch.bfloat16, enabled=amp):
        out = conv(x)
    got = (out, *torch.autograd.grad(out, (x, conv.weight, conv.bias), grad_out.to(out.dtype)))
    x64, w64, b64 = (t.detach().double().requires_grad_() for t in (x, conv.weight, conv.bias))
    ref = F.conv2d(x64, w64, b64, padding=k // 2)
    want = (ref, *torch.autograd.grad(ref, (x64, w64, b64), grad_out.double()))
    names = ("out", "grad_x", "grad_w", "grad_b")
    return {"case": case, "dtype": "bf16" if amp else "fp32", "channels_last": channels_last,
            **{f"rel_{n_}": _rel(g, r) for n_, g, r in zip(names, got, want)}}


def speed(case, backward: bool) -> dict:
    n, c, o, h, w, k = case
    conv = TailConv2d(c, o, k).cuda()
    conv.split_min_batch = 1
    x = torch.randn(n, c, h, w, device="cuda", requires_grad=backward)
    row = {"case": case, "pass": "fwd+bwd" if backward else "fwd"}
    for split in (False, True):
        TailConv2d.split = split

        def call():
            with torch.autocast("cuda", dtype=torch.bfloat16), torch.set_grad_enabled(backward):
                out = conv(x)
            if backward:
                out.float().sum().backward()

        times = sorted(time_call(call, torch.device("cuda"), 30, 5))
        row["split_ms" if split else "cudnn_ms"] = times[len(times) // 2]
    TailConv2d.split = True
    row["speedup"] = row["cudnn_ms"] / row["split_ms"]
    return row


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="runs/tail_conv")
    args = ap.parse_args()
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cudnn.benchmark = True
    report = {"env": environment(torch.device("cuda")), "checks": [], "speed": []}
    worst = {"fp32": 0.0, "bf16": 0.0}
    for case in CASES:
        for amp, cl in ((False, False), (True, False), (False, True), (True, True)):
            r = check(case, amp, cl)
            report["checks"].append(r)
            errs = [v for key, v in r.items() if key.startswith("rel_")]
            worst[r["dtype"]] = max(worst[r["dtype"]], *errs)
            print(f"check {case} {r['dtype']} channels_last={cl}: " + ", ".join(
                f"{key[4:]} {v:.2e}" for key, v in r.items() if key.startswith("rel_")), flush=True)
    report["worst"] = worst
    print(f"worst relative error: fp32 {worst['fp32']:.2e} (limit 1e-4), bf16 {worst['bf16']:.2e} "
          "(limit 1e-2)")
    torch.backends.cudnn.allow_tf32 = True
    torch.backends.cuda.matmul.allow_tf32 = True
    for case, backward in ((CASES[0], True), (CASES[1], True), (CASES[2], False)):
        r = speed(case, backward)
        report["speed"].append(r)
        print(f"speed {case} {r['pass']}: cuDNN {r['cudnn_ms']:.3f} ms, split "
              f"{r['split_ms']:.3f} ms ({r['speedup']:.2f}x)", flush=True)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "tail_conv.json").write_text(json.dumps(report, indent=1, default=str))


if __name__ == "__main__":
    main()
