"""GPU check and benchmark of the padded linear layers' weight gradient (kernels/wgrad.py).

    PYTHONPATH=. python3 scripts/gpu_wgrad.py [--out DIR] [--sweep]

``check``: dW and db of IMAGE's aligned block shapes (qkv, proj, fc1, fc2 on 32 and 64 tokens
at batch 256, q_VT's patch embedding) and odd ones (1, 77 and 100 rows, no bias), bf16
operands, against the float64 product of the same operands (``weight_grad_reference``): worst
|dW - ref| / max |ref|, ours and cuBLAS's (a bf16 product, as autograd had it), and whether two
runs are bit-identical. Exits 1 where ours is above 1e-5 or not deterministic. ``bench``: per
shape, milliseconds per call as CUDA-graph replays (10 calls per graph, CUDA events, median of
20): cuBLAS's product alone (``dY^T X``, bf16), cuBLAS's product + the slice/cast/bias work
autograd added (eager), and the Triton pair. ``--sweep``: tile, split and warp settings, the
sum over the block shapes.
"""

from __future__ import annotations

import argparse
import itertools
import json
import statistics
import sys
from pathlib import Path

import torch

from image_bench.engine.bench import time_call
from image_bench.kernels import wgrad
from image_bench.models.padded_linear import unpad_side, weight_grad_reference

TOL = 1e-5
D, HEAD, HID = (196, 200), (49, 56), (784, 784)
# name: (rows = output side, cols = input side, R, bias); R = batch 256 x tokens
BLOCK_SHAPES = {
    f"{name}-{tokens}": (rows, cols, 256 * tokens, True)
    for tokens in (32, 64)
    for name, rows, cols in (("qkv", HEAD, D), ("proj", D, HEAD), ("fc1", HID, D),
                             ("fc2", D, HID))
}
ODD_SHAPES = {"patch-embed": (D, (8192, 8192), 8192, True), "qkv-1row": (HEAD, D, 1, True),
              "fc1-77rows": (HID, D, 77, False), "proj-100rows": (D, HEAD, 100, True)}


def operands(rows, cols, r, device, seed=0):
    g = torch.Generator(device=device).manual_seed(seed)
    op = 3 * 4 * rows[1] if rows == HEAD else rows[1]  # qkv: 3 x 4 heads of 56
    ip = 4 * cols[1] if cols == HEAD else cols[1]
    dy = torch.randn(r, op, generator=g, device=device).bfloat16()
    x = torch.randn(r, ip, generator=g, device=device).bfloat16()
    return dy, x


def rel(a, b) -> float:
    return ((a.double() - b.double()).abs().max() / b.double().abs().max()).item()


def check(device) -> list[dict]:
    out = []
    for name, (rows, cols, r, bias) in {**BLOCK_SHAPES, **ODD_SHAPES}.items():
        dy, x = operands(rows, cols, r, device)
        ref_w, ref_b = weight_grad_reference(dy.double(), x.double(), rows, cols, bias)
        dw, db = wgrad.weight_grad(dy, x, rows, cols, bias)
        dw2, db2 = wgrad.weight_grad(dy, x, rows, cols, bias)
        cublas_w = unpad_side(unpad_side(dy.t() @ x, 1, cols), 0, rows)
        row = {"shape": name, "dW": list(dw.shape), "ours_w": rel(dw, ref_w),
               "cublas_w": rel(cublas_w, ref_w),
               "ours_b": rel(db, ref_b) if bias else None,
               "deterministic": torch.equal(dw, dw2) and (not bias or torch.equal(db, db2))}
        row["pass"] = (row["ours_w"] <= TOL and (not bias or row["ours_b"] <= TOL)
                       and row["deterministic"])
        out.append(row)
        print(f"check {name:13s} dW {tuple(dw.shape)}: ours {row['ours_w']:.2e} (bias "
              f"{row['ours_b'] if bias else '-'}), cuBLAS bf16 {row['cublas_w']:.2e}, "
              f"deterministic {row['deterministic']} -> {'PASS' if row['pass'] else 'FAIL'}",
              flush=True)
    return out


def graph_ms(fn, device, calls: int = 10) -> float:
    fn()
    torch.cuda.synchronize()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        for _ in range(calls):
            fn()
    return statistics.median(time_call(graph.replay, device, 20, 3)) / calls


def bench_shape(dy, x, rows, cols, bias, device, config=None, quiet=False) -> dict:
    def autograd_path():  # what autograd ran: bf16 product, slice + cast, bias sum
        unpad_side(unpad_side(dy.t() @ x, 1, cols), 0, rows).float()
        unpad_side(dy.sum(0), 0, rows).float()

    row = {"triton_ms": graph_ms(lambda: wgrad.weight_grad(dy, x, rows, cols, bias, config),
                                 device)}
    if not quiet:
        row["cublas_ms"] = graph_ms(lambda: dy.t() @ x, device)
        row["autograd_ms"] = graph_ms(autograd_path, device)
    return row


def bench(device, config=None, shapes=BLOCK_SHAPES, quiet=False) -> dict:
    out = {}
    for name, (rows, cols, r, bias) in shapes.items():
        dy, x = operands(rows, cols, r, device)
        out[name] = row = bench_shape(dy, x, rows, cols, bias, device, config, quiet)
        if not quiet:
            print(f"bench {name:8s}: cuBLAS product {row['cublas_ms'] * 1e3:6.1f} us, with "
                  f"slice/cast/bias {row['autograd_ms'] * 1e3:6.1f} us, Triton "
                  f"{row['triton_ms'] * 1e3:6.1f} us", flush=True)
    return out


def sweep(device) -> list[dict]:
    rows = []
    grid = [(bm, bn, warps) for bm, bn, warps in ((64, 64, 4), (64, 128, 4), (64, 128, 8),
                                                 (128, 128, 8), (64, 256, 8), (128, 256, 8))]
    for (bm, bn, warps), bk, stages, programs, bias in itertools.product(
            grid, (32, 64, 128), (3, 4), (132, 264), (True, False)):
        if not bias and (bk, stages, programs) != (64, 3, 264):
            continue  # without the bias sum: one setting per tile, for its cost
        config = {"bm": bm, "bn": bn, "bk": bk, "warps": warps, "stages": stages,
                  "programs": programs, "min_rows": 512, "rb": 1024}
        shapes = {name: (r, c, n, bias) for name, (r, c, n, _) in BLOCK_SHAPES.items()}
        try:
            times = bench(device, config, shapes, quiet=True)
        except Exception as exc:  # noqa: BLE001 - a setting the compiler rejects
            print(f"sweep {config}: {type(exc).__name__}", flush=True)
            continue
        total = sum(t["triton_ms"] for t in times.values())
        rows.append({**config, "bias": bias, "total_us": total * 1e3,
                     "us": {k: round(t["triton_ms"] * 1e3, 1) for k, t in times.items()}})
        print(f"sweep {bm}x{bn}x{bk} w{warps} s{stages} p{programs} bias={bias}: "
              f"{total * 1e3:.1f} us: {rows[-1]['us']}", flush=True)
    rows.sort(key=lambda r: r["total_us"])
    print("best:", rows[:5])
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default="runs/wgrad")
    ap.add_argument("--sweep", action="store_true")
    args = ap.parse_args()
    device = torch.device("cuda")
    report = {"config": wgrad.CONFIG, "check": check(device), "bench": bench(device)}
    if args.sweep:
        report["sweep"] = sweep(device)
    Path(args.out).mkdir(parents=True, exist_ok=True)
    (Path(args.out) / "wgrad.json").write_text(json.dumps(report, indent=1))
    sys.exit(0 if all(r["pass"] for r in report["check"]) else 1)


if __name__ == "__main__":
    main()
