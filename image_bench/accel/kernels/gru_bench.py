"""The GRU-alone row of ``image-bench bench``: fused Triton BiGRU vs cuDNN nn.GRU.

``bench_bigru`` times forward+backward of one ``nn.GRU(64, 32, bidirectional=True,
batch_first=True)`` on the SRB's shapes two ways, medians of device events: called eagerly
(``triton.testing.do_bench``; the fused call's host launches take longer than its kernels, so this
figure moves with host load: 3.7-5.3x at 4096 x 64 across runs) and replayed as a CUDA graph
(``do_bench_cudagraph``: GPU time alone, as the training step replays both paths). CUDA only; it
imports triton lazily through the dispatcher.
"""

from __future__ import annotations

from contextlib import nullcontext

import torch
from torch import nn

# (sequences, steps) of one SRB at batch 256: along the width (B*H rows of W steps) and along
# the height (B*W columns of H steps) of a 16x64 feature map.
SRB_SHAPES = ((4096, 64), (16384, 16))


def _median_ms(fn) -> float:
    import triton.testing

    return triton.testing.do_bench(fn, warmup=50, rep=300, return_mode="median")


def _graph_median_ms(fn) -> float | None:
    """``fn`` replayed as a CUDA graph; None where it cannot be captured."""
    import triton.testing

    try:
        return triton.testing.do_bench_cudagraph(fn, rep=300, return_mode="median")
    except (RuntimeError, torch.cuda.CudaError):
        torch.cuda.synchronize()
        return None


def bench_bigru(n_seq: int, steps: int, amp: torch.dtype | None = torch.bfloat16,
                inp: int = 64, hidden: int = 32, seed: int = 0) -> dict:
    """Forward+backward milliseconds of cuDNN and of the fused path, and their ratio."""
    if not torch.cuda.is_available():
        raise RuntimeError("bench_bigru needs a CUDA device")
    from image_bench.accel import gru as dispatch

    if not dispatch.fused_gru_available():
        raise RuntimeError("the fused GRU is unavailable (is triton installed?)")
    from image_bench.accel.kernels.fused_gru import fused_bigru

    torch.manual_seed(seed)
    gru = nn.GRU(inp, hidden, bidirectional=True, batch_first=True).cuda()
    x = torch.randn(n_seq, steps, inp, device="cuda", requires_grad=True)
    grad_out = torch.randn(n_seq, steps, 2 * hidden, device="cuda", dtype=amp or torch.float32)

    def step(fused: bool):
        def fn():
            with torch.autocast("cuda", dtype=amp) if amp is not None else nullcontext():
                out = fused_bigru(gru, x) if fused else gru(x)[0]
            out.backward(grad_out)
        return fn

    cudnn_ms = _median_ms(step(False))
    fused_ms = _median_ms(step(True))
    cudnn_graph_ms = _graph_median_ms(step(False))
    fused_graph_ms = _graph_median_ms(step(True))
    graphed = cudnn_graph_ms is not None and fused_graph_ms is not None
    return {"sequences": n_seq, "steps": steps,
            "dtype": str(amp or torch.float32).replace("torch.", ""),
            "cudnn_ms": cudnn_ms, "fused_ms": fused_ms, "speedup": cudnn_ms / fused_ms,
            "cudnn_graph_ms": cudnn_graph_ms, "fused_graph_ms": fused_graph_ms,
            "graph_speedup": cudnn_graph_ms / fused_graph_ms if graphed else None}


def bench_srb_grus(amp: torch.dtype | None = torch.bfloat16) -> list[dict]:
    """``bench_bigru`` at both SRB shapes."""
    return [bench_bigru(n_seq, steps, amp) for n_seq, steps in SRB_SHAPES]
