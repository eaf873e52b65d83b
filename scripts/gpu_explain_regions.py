"""``torch._dynamo.explain`` of the regions the trainer compiles (issue 7: no graph breaks in the
hot path): an aligned IMAGE block, an SRB (fused GRU inside), a conv decoder (split tail conv
inside), q_PJ, the STN and q_VT's patch embedding (channels_last h-hat), on CUDA, at batch 64
(the tails split from 32), under bf16 autocast.

    PYTHONPATH=. python3 scripts/gpu_explain_regions.py [--out DIR]

Prints each region's graphs, breaks and break reasons with the line that caused them, writes
DIR/explain_regions.json, exits 1 on any break.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch


def explain(device: torch.device) -> list[dict]:
    from image_bench.models.image_parts import ConvDecoder, Projector
    from image_bench.models.srb import SRB
    from image_bench.models.stn import STN
    from image_bench.models.vit import Block, PatchEmbed

    torch._dynamo.config.allow_rnn = True  # as engine.optimize.compile_regions
    block = Block(196, 4)
    block.aligned = True
    patches = PatchEmbed(64, 196, (32, 128), (32, 4))  # q_VT's
    patches.aligned = True
    feature = torch.randn(64, 64, 16, 64)
    cl = torch.channels_last
    # (module, inputs, keyword arguments, channels_last): IMAGE trains its decoders channels_last
    # (the shuffled convolution's permuted path) with h-hat detached
    regions = {"aligned block, 32 tokens": (block, (torch.randn(64, 32, 196),), {}, False),
               "SRB": (SRB(64, clue_channels=64), (feature,) * 2, {}, False),
               "conv decoder": (ConvDecoder(64), (feature,), {}, False),
               "conv decoder, channels_last, h-hat detached": (
                   ConvDecoder(64), (feature,), {"map_grad": False}, True),
               "q_PJ": (Projector(37, 64, (16, 64)), (torch.rand(64, 32, 37).softmax(-1),), {},
                        False),
               "STN": (STN(3), (torch.rand(64, 3, 16, 64),), {}, True),
               "patch embedding, channels_last h-hat": (
                   patches, (torch.randn(64, 64, 32, 128),), {}, True)}
    rows = []
    for name, (module, inputs, kwargs, channels_last) in regions.items():
        module = module.to(device).train()
        inputs = [x.to(device).requires_grad_() for x in inputs]
        if channels_last:
            module = module.to(memory_format=cl)
            inputs = [x.detach().contiguous(memory_format=cl).requires_grad_() for x in inputs]
        torch._dynamo.reset()
        with torch.autocast("cuda", dtype=torch.bfloat16):
            result = torch._dynamo.explain(module)(*inputs, **kwargs)
        row = {"region": name, "graphs": result.graph_count,
               "graph_breaks": result.graph_break_count,
               "break_reasons": [str(r.reason).splitlines()[0] for r in result.break_reasons],
               "break_detail": [f"{r.reason} at {r.user_stack[-1] if r.user_stack else '?'}"
                                for r in result.break_reasons]}
        rows.append(row)
        print(f"explain {name}: {row['graphs']} graph(s), {row['graph_breaks']} break(s)",
              *row["break_detail"], sep="\n  ", flush=True)
    return rows


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="runs/explain")
    args = ap.parse_args()
    rows = explain(torch.device("cuda"))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "explain_regions.json").write_text(json.dumps(rows, indent=1))
    return 1 if any(r["graph_breaks"] for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
