"""GPU check and benchmark of the Triton short-sequence attention (kernels/short_attention.py).

    PYTHONPATH=. python3 scripts/gpu_short_attention.py [--out DIR]

``check``: the kernels against the written-out attention in float64 on the same rounded inputs
(outputs and the qkv gradient), at IMAGE's shapes and odd ones, bf16 and fp16; exits 1 on a
relative error above 1e-2. ``sweep``: warps per program for each kernel. ``bench``: forward +
backward at IMAGE's two shapes (batch 256, 32 and 64 tokens, 4 heads of 56), fused against the
written-out attention compiled. Timings are medians of ``triton.testing.do_bench``. Results
to stdout and DIR/short_attention.json.

``--smoke`` runs the check on the CPU through the Triton interpreter (TRITON_INTERPRET=1 set by
the caller; fp16 and tiny shapes, since the interpreter's bf16 products are wrong).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

from image_bench.accel.kernels import short_attention as sa
from image_bench.models import attention

TOL = 1e-2
SHAPES = [(256, 32, 4, 56), (256, 64, 4, 56), (256, 32, 4, 49), (1, 1, 4, 49), (3, 17, 2, 20),
          (5, 64, 1, 64), (7, 33, 3, 8), (2, 2, 8, 16)]


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a.double() - b.double()).norm() / b.double().norm().clamp_min(1e-30)).item()


def check(device: torch.device, shapes, dtypes) -> list[dict]:
    rows = []
    g = torch.Generator(device="cpu").manual_seed(0)
    for b, n, h, dh in shapes:
        for dtype in dtypes:
            qkv = torch.randn(b, n, 3 * h * dh, generator=g).to(device, dtype)
            grad = torch.randn(b, n, h * dh, generator=g).to(device, dtype)
            scale = dh ** -0.5
            ref_in = qkv.double().requires_grad_()
            ref = attention.written_out_attention(ref_in, h, scale)
            ref.backward(grad.double())
            x = qkv.clone().requires_grad_()
            out = sa.ShortAttention.apply(x, h, scale)
            out.backward(grad)
            again = sa.ShortAttention.apply(qkv, h, scale)  # deterministic: no atomics
            row = {"shape": [b, n, h, dh], "dtype": str(dtype).split(".")[-1],
                   "out": rel(out, ref), "dqkv": rel(x.grad, ref_in.grad),
                   "repeat_equal": bool(torch.equal(out, again))}
            row["ok"] = row["out"] < TOL and row["dqkv"] < TOL and row["repeat_equal"]
            rows.append(row)
            print(f"check {row['shape']} {row['dtype']}: out {row['out']:.2e} "
                  f"dqkv {row['dqkv']:.2e} repeat-equal {row['repeat_equal']} "
                  f"{'ok' if row['ok'] else 'FAIL'}", flush=True)
    return rows


def _fwd_bwd_ms(fn, qkv: torch.Tensor, grad: torch.Tensor) -> float:
    from triton.testing import do_bench

    def step():
        qkv.grad = None
        fn(qkv).backward(grad)

    return do_bench(step, warmup=25, rep=200)


def sweep(device: torch.device) -> list[dict]:
    """Warps per program for each kernel at IMAGE's two shapes, the kernels alone, replayed as a
    CUDA graph (``do_bench_cudagraph``: without the host's launch time, which the training step
    does not pay either)."""
    from triton.testing import do_bench_cudagraph

    rows = []
    for n in (32, 64):
        qkv = torch.randn(256, n, 3 * 4 * 56, device=device, dtype=torch.bfloat16)
        grad = torch.randn(256, n, 4 * 56, device=device, dtype=torch.bfloat16)
        scale = 56 ** -0.5
        for warps in (1, 2, 4, 8):
            sa.OVERRIDE.update(fwd=warps, bwd=warps)
            try:
                fwd = do_bench_cudagraph(lambda: sa.attention_forward(qkv, 4, scale))  # noqa: B023
                bwd = do_bench_cudagraph(
                    lambda: sa.attention_backward(qkv, grad, 4, scale))  # noqa: B023
            finally:
                sa.OVERRIDE.clear()
            rows.append({"tokens": n, "warps": warps, "fwd_ms": fwd, "bwd_ms": bwd})
            print(f"sweep n={n} warps={warps}: fwd {fwd:.4f} ms, bwd {bwd:.4f} ms", flush=True)
    return rows


def bench(device: torch.device) -> list[dict]:
    compiled = torch.compile(attention.written_out_attention, dynamic=False)
    rows = []
    for b, n, h, dh in [(256, 32, 4, 56), (256, 64, 4, 56)]:
        qkv = torch.randn(b, n, 3 * h * dh, device=device, dtype=torch.bfloat16,
                          requires_grad=True)
        grad = torch.randn(b, n, h * dh, device=device, dtype=torch.bfloat16)
        scale = dh ** -0.5
        fused = _fwd_bwd_ms(lambda x: sa.ShortAttention.apply(x, h, scale), qkv, grad)  # noqa: B023
        plain = _fwd_bwd_ms(lambda x: compiled(x, h, scale), qkv, grad)  # noqa: B023
        row = {"shape": [b, n, h, dh], "fused_ms": fused, "written_out_compiled_ms": plain,
               "speedup": plain / fused}
        rows.append(row)
        print(f"bench {row['shape']} fwd+bwd: fused {fused:.4f} ms, written-out compiled "
              f"{plain:.4f} ms ({row['speedup']:.1f}x)", flush=True)
    return rows


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="runs/short_attention")
    ap.add_argument("--only", default="check,sweep,bench")
    ap.add_argument("--smoke", action="store_true")
    args = ap.parse_args()
    if args.smoke:
        rows = check(torch.device("cpu"), [(2, 17, 3, 20), (1, 1, 2, 8)], [torch.float16])
        return 0 if all(r["ok"] for r in rows) else 1
    device = torch.device("cuda")
    parts = args.only.split(",")
    report = {"device": torch.cuda.get_device_name(), "torch": torch.__version__}
    if "check" in parts:
        report["check"] = check(device, SHAPES, [torch.bfloat16, torch.float16])
    if "sweep" in parts:
        report["sweep"] = sweep(device)
    if "bench" in parts:
        report["bench"] = bench(device)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "short_attention.json").write_text(json.dumps(report, indent=1))
    return 0 if all(r["ok"] for r in report.get("check", [])) else 1


if __name__ == "__main__":
    sys.exit(main())
