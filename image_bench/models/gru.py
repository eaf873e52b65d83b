"""How the SR blocks run their bidirectional GRUs.

``nn.GRU`` is the reference and the CPU path. On CUDA the fused Triton kernel of
``image_bench.kernels.fused_gru`` takes over when it is available; it reads the very same
``nn.GRU`` parameters, so one state_dict serves both paths.
"""

from __future__ import annotations

import torch
from torch import nn

_fused = None  # the fused implementation, set by image_bench.kernels.fused_gru when importable
_enabled = True


def set_fused_gru(enabled: bool) -> None:
    """Switch the fused CUDA GRU on or off (benchmarks compare both)."""
    global _enabled
    _enabled = enabled


def register_fused_gru(fn) -> None:
    global _fused
    _fused = fn


def run_bigru(gru: nn.GRU, x: torch.Tensor) -> torch.Tensor:
    """Run a batch-first bidirectional single-layer GRU over ``x`` (N, T, I) -> (N, T, 2H)."""
    if _enabled and _fused is not None and x.is_cuda:
        return _fused(gru, x)
    out, _ = gru(x)
    return out
