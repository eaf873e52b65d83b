"""GPU check and benchmark of the split tail convolution and the head convolution's backward
(``models.tail_conv``).

    PYTHONPATH=. python3 scripts/gpu_tail_conv.py [--out DIR]

1. Correctness: ``TailConv2d`` on CUDA (one product + the Triton shifted sum) against
   ``F.conv2d`` in float64, output and the gradients of input, weight and bias; fp32 (TF32 off)
   and bf16 autocast; the SR tails' shapes and odd ones (batch 1, maps smaller than the kernel,
   sizes that are not multiples of the Triton block); NCHW and channels_last input. The same for
   ``HeadConv2d`` (3 or 4 -> 64 at 16 x 64, as the SR models' heads, and odd shapes).
2. Speed: forward + backward under bf16 autocast at the training shapes (batch 256, 64 -> 3 and
   64 -> 4 at 32 x 128), cuDNN (``TailConv2d.split = False``) vs split vs the split whose
   backward builds grad_z (``gather_shifted``) for two batched products, as before the on-chip
   gathers; the batch-1 forward; the head (3 -> 64 at 16 x 64, channels_last as IMAGE trains)
   forward + backward, cuDNN vs split.
3. ``--sweep``: the backward kernels alone (``input_grad``, ``weight_grad``) over their block
   settings at batch 256, 64 -> 3, 32 x 128, bf16.
Results go to stdout and DIR/tail_conv.json.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
import torch.nn.functional as F

from image_bench.accel.tail_conv import HeadConv2d, TailConv2d, split_conv2d
from image_bench.engine.bench import time_call
from image_bench.engine.env import environment
from image_bench.models import tail_conv

CASES = [  # (batch, in, out, height, width, kernel)
    (256, 64, 3, 32, 128, 9), (256, 64, 4, 32, 128, 9), (1, 64, 3, 32, 128, 9),
    (3, 5, 2, 7, 11, 9), (2, 64, 3, 9, 13, 3), (1, 1, 1, 1, 1, 1),
]
HEAD_CASES = [(256, 3, 64, 16, 64, 9), (256, 4, 64, 16, 64, 9), (1, 3, 64, 16, 64, 9),
              (3, 2, 5, 7, 11, 9), (2, 3, 64, 9, 13, 3)]


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.double(), b.double()
    return ((a - b).norm() / b.norm().clamp_min(1e-30)).item()


def check(case, amp: bool, channels_last: bool = False, cls=TailConv2d) -> dict:
    n, c, o, h, w, k = case
    torch.manual_seed(0)
    conv = cls(c, o, k).cuda()
    conv.split_min_batch = 1  # check the split path at every batch size
    x = torch.randn(n, c, h, w, device="cuda")
    if channels_last:  # as IMAGE trains
        x = x.contiguous(memory_format=torch.channels_last)
    x.requires_grad_(True)
    grad_out = torch.randn(n, o, h, w, device="cuda")
    if channels_last and cls is HeadConv2d:  # the head's gradient arrives channels_last
        grad_out = grad_out.contiguous(memory_format=torch.channels_last)
    with torch.autocast("cuda", dtype=torch.bfloat16, enabled=amp):
        out = conv(x)
    got = (out, *torch.autograd.grad(out, (x, conv.weight, conv.bias), grad_out.to(out.dtype)))
    x64, w64, b64 = (t.detach().double().requires_grad_() for t in (x, conv.weight, conv.bias))
    ref = F.conv2d(x64, w64, b64, padding=k // 2)
    want = (ref, *torch.autograd.grad(ref, (x64, w64, b64), grad_out.double()))
    names = ("out", "grad_x", "grad_w", "grad_b")
    return {"conv": cls.__name__, "case": case, "dtype": "bf16" if amp else "fp32",
            "channels_last": channels_last,
            **{f"rel_{n_}": _rel(g, r) for n_, g, r in zip(names, got, want)}}


def gather_split_conv():
    """The split convolution whose backward builds grad_z (``gather_shifted``), for the speed
    comparison: ``split_conv2d`` with the Triton shifted sum in an autograd Function."""
    from image_bench.accel.kernels import shifted_planes as kernels

    class SumShifted(torch.autograd.Function):
        @staticmethod
        def forward(ctx, z, bias, k, h, w):
            ctx.k = k
            return kernels.sum_shifted(z, bias, k, h, w)

        @staticmethod
        def backward(ctx, grad_out):
            grad_bias = grad_out.sum((0, 2, 3), dtype=torch.float32)
            return kernels.gather_shifted(grad_out, ctx.k), grad_bias, None, None, None

    return lambda x, weight, bias: split_conv2d(x, weight, bias, SumShifted.apply)


def speed(case, backward: bool, cls=TailConv2d) -> dict:
    n, c, o, h, w, k = case
    conv = cls(c, o, k).cuda()
    conv.split_min_batch = 1
    x = torch.randn(n, c, h, w, device="cuda", requires_grad=backward)
    if cls is HeadConv2d:  # as IMAGE trains
        conv = conv.to(memory_format=torch.channels_last)
        x = x.detach().contiguous(memory_format=torch.channels_last).requires_grad_(backward)
    row = {"conv": cls.__name__, "case": case, "pass": "fwd+bwd" if backward else "fwd",
           "gather_ms": float("nan")}
    on_chip = tail_conv._SPLIT_CONV
    for split in (False, "gather", True) if cls is TailConv2d else (False, True):
        cls.split = bool(split)
        tail_conv._SPLIT_CONV = gather_split_conv() if split == "gather" else on_chip

        def call():
            with torch.autocast("cuda", dtype=torch.bfloat16), torch.set_grad_enabled(backward):
                out = conv(x)
            if backward:
                out.float().sum().backward()

        times = sorted(time_call(call, torch.device("cuda"), 30, 5))
        key = {False: "cudnn_ms", "gather": "gather_ms", True: "split_ms"}[split]
        row[key] = times[len(times) // 2]
    cls.split = True
    tail_conv._SPLIT_CONV = on_chip
    row["speedup"] = row["cudnn_ms"] / row["split_ms"]
    return row


def sweep() -> list[dict]:
    """The backward kernels alone over their block settings (median of 30 timed calls, ms)."""
    from image_bench.accel.kernels import shifted_planes as kernels

    n, c, o, h, w, k = CASES[0]
    g = torch.randn(n, o, h, w, device="cuda", dtype=torch.bfloat16)
    x = torch.randn(n, c, h, w, device="cuda", dtype=torch.bfloat16).contiguous(
        memory_format=torch.channels_last)
    taps = torch.randn(o * k * k, c, device="cuda", dtype=torch.bfloat16)
    rows = []
    for block_m, block_t, warps in ((128, 32, 4), (128, 64, 4), (128, 32, 8), (128, 64, 8),
                                    (64, 32, 2), (128, 16, 4)):
        kernels.INPUT_GRAD_BLOCK_M, kernels.INPUT_GRAD_BLOCK_T = block_m, block_t
        kernels.INPUT_GRAD_WARPS = warps
        t = sorted(time_call(lambda: kernels.input_grad(g, taps, x, k), torch.device("cuda"), 30,
                             5))
        rows.append({"kernel": "input_grad", "block_m": block_m, "block_t": block_t,
                     "warps": warps, "ms": t[len(t) // 2]})
    for images, block_p, warps in ((1, 64, 8), (1, 64, 4), (1, 32, 4), (2, 64, 8), (1, 16, 4)):
        kernels.WEIGHT_GRAD_IMAGES, kernels.WEIGHT_GRAD_BLOCK_P = images, block_p
        kernels.WEIGHT_GRAD_WARPS = warps
        t = sorted(time_call(lambda: kernels.weight_grad(g, x, k), torch.device("cuda"), 30, 5))
        rows.append({"kernel": "weight_grad", "images": images, "block_p": block_p,
                     "warps": warps, "ms": t[len(t) // 2]})
    for r in rows:
        print("sweep", r, flush=True)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="runs/tail_conv")
    ap.add_argument("--sweep", action="store_true", help="also time the backward kernels' settings")
    ap.add_argument("--only-sweep", action="store_true", help="only that")
    args = ap.parse_args()
    if args.only_sweep:
        sweep()
        return
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cudnn.benchmark = True
    report = {"env": environment(torch.device("cuda")), "checks": [], "speed": []}
    worst = {"fp32": 0.0, "bf16": 0.0}
    for cls, case in [(TailConv2d, c) for c in CASES] + [(HeadConv2d, c) for c in HEAD_CASES]:
        for amp, cl in ((False, False), (True, False), (False, True), (True, True)):
            r = check(case, amp, cl, cls)
            report["checks"].append(r)
            errs = [v for key, v in r.items() if key.startswith("rel_")]
            worst[r["dtype"]] = max(worst[r["dtype"]], *errs)
            print(f"check {cls.__name__} {case} {r['dtype']} channels_last={cl}: " + ", ".join(
                f"{key[4:]} {v:.2e}" for key, v in r.items() if key.startswith("rel_")), flush=True)
    report["worst"] = worst
    print(f"worst relative error: fp32 {worst['fp32']:.2e} (limit 1e-4), bf16 {worst['bf16']:.2e} "
          "(limit 1e-2)")
    torch.backends.cudnn.allow_tf32 = True
    torch.backends.cuda.matmul.allow_tf32 = True
    for cls, case, backward in ((TailConv2d, CASES[0], True), (TailConv2d, CASES[1], True),
                                (TailConv2d, CASES[2], False), (HeadConv2d, HEAD_CASES[0], True)):
        r = speed(case, backward, cls)
        report["speed"].append(r)
        print(f"speed {cls.__name__} {case} {r['pass']}: cuDNN {r['cudnn_ms']:.3f} ms, "
              f"split with grad_z built {r['gather_ms']:.3f} ms, split {r['split_ms']:.3f} ms "
              f"({r['speedup']:.2f}x cuDNN)", flush=True)
    if args.sweep:
        report["sweep"] = sweep()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "tail_conv.json").write_text(json.dumps(report, indent=1, default=str))


if __name__ == "__main__":
    main()
