"""The SR blocks' bidirectional GRUs on the fused Triton recurrence.

``models.srb.GruBlock`` runs its ``nn.GRU``: the reference and the CPU path.
:class:`FusedGruBlock` (swapped in by the acceleration layer) runs the fused kernel of
``image_bench.accel.kernels.fused_gru`` on CUDA where it is available; it reads the very same
``nn.GRU`` parameters, so one state_dict serves both paths. That module imports triton, so it
is imported here only where CUDA is present, and never on a CPU-only machine.
"""

from __future__ import annotations

import torch
from torch import nn

from image_bench.accel.kernels import triton_module
from image_bench.models.srb import GruBlock

_fused = None  # the fused implementation: set by register_fused_gru or the lazy import below
_supports = None  # its eligibility check (gru, x) -> bool, when it has one
_import_tried = False
_enabled = True


def set_fused_gru(enabled: bool) -> None:
    """Switch the fused CUDA GRU on or off (benchmarks compare both)."""
    global _enabled
    _enabled = enabled


def fused_gru_enabled() -> bool:
    return _enabled


def register_fused_gru(fn, supports=None) -> None:
    """Install ``fn(gru, x) -> out`` as the CUDA path; ``supports(gru, x)`` may veto a call."""
    global _fused, _supports, _import_tried
    _fused, _supports, _import_tried = fn, supports, True


def _load_fused() -> None:
    """Import the Triton path once; without triton (or with a broken one) nn.GRU stays."""
    global _import_tried
    _import_tried = True
    kernels = triton_module("fused_gru")
    if kernels is not None:
        register_fused_gru(kernels.fused_bigru, kernels.supports)


# Loaded with this module where CUDA is present, not on the first call, which usually runs
# inside a compiled SRB's trace (see kernels.cuda_triton_module).
if torch.cuda.is_available():
    _load_fused()


def fused_gru_available() -> bool:
    """Whether a fused path is (or can be) installed; imports it on first call."""
    if not _import_tried:
        _load_fused()
    return _fused is not None


def run_bigru(gru: nn.GRU, x: torch.Tensor) -> torch.Tensor:
    """Run a batch-first bidirectional single-layer GRU over ``x`` (N, T, I) -> (N, T, 2H)."""
    if _enabled and x.is_cuda:
        if not _import_tried:
            _load_fused()
        if _fused is not None and (_supports is None or _supports(gru, x)):
            return _fused(gru, x)
    out, _ = gru(x)
    return out


class FusedGruBlock(GruBlock):
    """``GruBlock`` whose BiGRU runs through :func:`run_bigru`."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv1(x)
        b, c, h, w = x.shape
        seq = run_bigru(self.gru, x.permute(0, 2, 3, 1).reshape(b * h, w, c))
        return seq.reshape(b, h, w, c).permute(0, 3, 1, 2)
