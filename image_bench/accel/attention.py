"""The attention core of the transformer blocks (``models.vit``, ``models.aligned_block``): the
softmax-weighted sum over the heads of a qkv projection, by Triton kernels on CUDA or written out.
"""

from __future__ import annotations

import torch

from image_bench.accel.kernels import cuda_triton_module

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


def written_out_attention(qkv: torch.Tensor, heads: int, scale: float,
                          mask: torch.Tensor | None = None) -> torch.Tensor:
    """:func:`attend` as two matrix products and a softmax (see ``vit.Attention`` for why not
    SDPA): the reference, the CPU path, and the path fvcore counts."""
    b, n, width = qkv.shape
    q, k, v = qkv.view(b, n, 3, heads, width // (3 * heads)).permute(2, 0, 3, 1, 4)
    scores = (q * scale) @ k.transpose(-2, -1)
    if mask is not None:
        scores = scores + mask
    attn = scores.softmax(dim=-1).to(v.dtype)  # float32 under autocast (its fp32 list)
    return (attn @ v).transpose(1, 2).reshape(b, n, width // 3)


__all__ = ["attend", "set_fused_attention", "written_out_attention"]
