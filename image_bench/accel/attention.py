"""The attention core of the transformer blocks by Triton kernels on CUDA: :class:`FastAttention`
is ``models.vit.Attention`` (same parameters) computing through :func:`attend`, which the aligned
blocks (``accel.aligned_block``) call too; elsewhere it is the written-out ``vit.attention``.
"""

from __future__ import annotations

import torch

from image_bench.accel.kernels import cuda_triton_module
from image_bench.models.vit import Attention
from image_bench.models.vit import attention as written_out_attention

_fused_attention = True
_kernels = cuda_triton_module("short_attention")  # at import: see cuda_triton_module


def set_fused_attention(enabled: bool) -> None:
    """Switch the Triton attention (:func:`attend`) on or off (benchmarks compare both)."""
    global _fused_attention
    _fused_attention = enabled


def attend(qkv: torch.Tensor, heads: int, scale: float,
           mask: torch.Tensor | None = None) -> torch.Tensor:
    """softmax(q k^T * scale + mask) v per head: qkv (B, n, 3 * heads * d_h) as the qkv projection
    gives it -> (B, n, heads * d_h) as the output projection reads it.

    On CUDA, in 16-bit, without a mask and for n <= 64, one Triton program per (sample, head)
    does it all, forward and backward (kernels/short_attention.py): no head copies, scores kept
    on chip. Elsewhere :func:`written_out_attention`."""
    if (mask is None and _fused_attention and _kernels is not None
            and _kernels.supports(qkv, heads)):
        return _kernels.short_attention(qkv, heads, scale)
    return written_out_attention(qkv, heads, scale, mask)


class FastAttention(Attention):
    """``vit.Attention`` through :func:`attend`."""

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        return self.proj(attend(self.qkv(x), self.heads, self.scale, mask))


__all__ = ["FastAttention", "attend", "set_fused_attention", "written_out_attention"]
