"""GPU check and benchmark of the Triton transformer block (``models.fused_block``).

    PYTHONPATH=. python3 scripts/gpu_fused_block.py [--out DIR]

1. Correctness: ``InferenceBlock`` (three Triton launches) with bf16 weights against the
   ``vit.Block`` it wraps, run in float64, on random blocks (random LayerNorm and bias values
   too): IMAGE's D = 196 with 32 and 64 tokens, batch 1 and 16, odd shapes (17 tokens, 3
   samples; D = 64 with 2 heads), bf16 and fp32 inputs. Limit: 1e-2 relative error.
2. Speed of one block (bf16, CUDA events, CUDA graph): compiled ``vit.Block`` vs the kernels,
   batch 1, 32 and 64 tokens; programmatic dependent launch on and off; with --tiles, the
   column-tile widths of the launches (64 or 32).
Results go to stdout and DIR/fused_block.json.
"""

from __future__ import annotations

import argparse
import copy
import json
from pathlib import Path

import torch

from image_bench.accel.fused_block import InferenceBlock, fused_block_applies
from image_bench.engine.bench import _cuda_graph, time_call
from image_bench.engine.env import environment
from image_bench.models.vit import Block

CASES = [  # (batch, tokens, dim, heads)
    (1, 32, 196, 4), (1, 64, 196, 4), (16, 32, 196, 4), (3, 17, 196, 4), (2, 5, 64, 2),
]


def _random_block(dim: int, heads: int) -> Block:
    torch.manual_seed(0)
    block = Block(dim, heads)
    with torch.no_grad():
        for p in block.parameters():
            p.copy_(torch.randn_like(p) * (0.05 if p.dim() > 1 else 0.5))
        for norm in (block.norm1, block.norm2):
            norm.weight.add_(1.0)
    return block.cuda().eval().to(torch.bfloat16)


def check(case, x_dtype: torch.dtype) -> dict:
    batch, tokens, dim, heads = case
    block = _random_block(dim, heads)
    x = torch.randn(batch, tokens, dim, device="cuda").to(x_dtype)
    with torch.no_grad():
        want = copy.deepcopy(block).double()(x.double())
        used = fused_block_applies(block, x, None)
        got = InferenceBlock(block)(x)
    err = ((got.double() - want).norm() / want.norm()).item()
    return {"case": case, "x_dtype": str(x_dtype).split(".")[-1], "fused": used,
            "out_dtype": str(got.dtype).split(".")[-1], "rel_err": err,
            "ok": used and err < 1e-2}


def speed(batch: int, tokens: int) -> dict:
    block = _random_block(196, 4)
    x = torch.randn(batch, tokens, 196, device="cuda", dtype=torch.bfloat16)
    compiled = copy.deepcopy(block)
    compiled.compile(dynamic=False)
    row = {"batch": batch, "tokens": tokens}
    for name, module in (("compiled_ms", compiled), ("fused_ms", InferenceBlock(block))):
        def run(inp, module=module):
            with torch.no_grad():
                return module(inp)

        replay = _cuda_graph(run, x)
        times = sorted(time_call(replay, torch.device("cuda"), 200, 20))
        row[name] = times[len(times) // 2]
    row["speedup"] = row["compiled_ms"] / row["fused_ms"]
    return row


def tile_widths(tokens: int = 32) -> list[dict]:
    """One block at batch 1 with the launches' column tiles at 64 or 32 (BLOCK_N of the linear
    launches, ATTN_BLOCK_N of the attention launch): narrower tiles, more programs."""
    from image_bench.accel.kernels import block_kernels as bk

    block = _random_block(196, 4)
    x = torch.randn(1, tokens, 196, device="cuda", dtype=torch.bfloat16)
    rows = []
    for linear, attention in ((64, 64), (32, 64), (64, 32), (32, 32)):
        bk.BLOCK_N, bk.ATTN_BLOCK_N = linear, attention

        def run(inp):
            with torch.no_grad():
                return InferenceBlock(block)(inp)

        times = sorted(time_call(_cuda_graph(run, x), torch.device("cuda"), 200, 20))
        rows.append({"BLOCK_N": linear, "ATTN_BLOCK_N": attention,
                     "us": times[len(times) // 2] * 1e3})
        print(f"tiles linear {linear}, attention {attention}: {rows[-1]['us']:.1f} us", flush=True)
    bk.BLOCK_N, bk.ATTN_BLOCK_N = 32, 32  # the defaults
    return rows


def pdl_on_off(tokens: int = 32) -> list[dict]:
    """One block at batch 1 with programmatic dependent launch on and off
    (``block_kernels.PDL``), in a CUDA graph and eagerly."""
    from image_bench.accel.kernels import block_kernels as bk

    block = _random_block(196, 4)
    x = torch.randn(1, tokens, 196, device="cuda", dtype=torch.bfloat16)

    def run(inp):
        with torch.no_grad():
            return InferenceBlock(block)(inp)

    rows = []
    for pdl in (False, True):
        bk.PDL = pdl
        graphed = sorted(time_call(_cuda_graph(run, x), torch.device("cuda"), 200, 20))
        eager = sorted(time_call(lambda: run(x), torch.device("cuda"), 200, 20))
        rows.append({"pdl": pdl, "graph_us": graphed[len(graphed) // 2] * 1e3,
                     "eager_us": eager[len(eager) // 2] * 1e3})
        print(f"PDL {pdl}: one block {rows[-1]['graph_us']:.1f} us (CUDA graph), "
              f"{rows[-1]['eager_us']:.1f} us eager", flush=True)
    bk.PDL = None
    return rows


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="runs/fused_block")
    ap.add_argument("--tiles", action="store_true", help="also time the tile widths")
    args = ap.parse_args()
    report = {"env": environment(torch.device("cuda")), "checks": [], "speed": []}
    for case in CASES:
        for x_dtype in (torch.bfloat16, torch.float32):
            r = check(case, x_dtype)
            report["checks"].append(r)
            print(f"check {case} x {r['x_dtype']} -> {r['out_dtype']}: fused={r['fused']} "
                  f"rel err {r['rel_err']:.2e} {'ok' if r['ok'] else 'FAIL'}", flush=True)
    failed = sum(not r["ok"] for r in report["checks"])
    print(f"{failed} of {len(report['checks'])} checks failed")
    for batch, tokens in ((1, 32), (1, 64)):
        r = speed(batch, tokens)
        report["speed"].append(r)
        print(f"one block, batch {batch}, {tokens} tokens, bf16, CUDA graph: compiled "
              f"{r['compiled_ms'] * 1e3:.1f} us, Triton {r['fused_ms'] * 1e3:.1f} us "
              f"({r['speedup']:.2f}x)", flush=True)
    report["pdl"] = pdl_on_off()
    if args.tiles:
        report["tile_widths"] = tile_widths()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "fused_block.json").write_text(json.dumps(report, indent=1, default=str))


if __name__ == "__main__":
    main()
