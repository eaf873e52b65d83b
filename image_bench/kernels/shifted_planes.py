"""Triton kernels for a k x k 'same' convolution split into one matrix product and a shifted sum.

A stride-1 convolution with padding p = k // 2 is

    out[b, o, y, x] = sum_{i, j} z[b, (o, i, j), y + i - p, x + j - p]
    with z[b, (o, i, j), :, :] = sum_c w[o, c, i, j] x[b, c, :, :],

one matrix product (``models.tail_conv``) and ``sum_shifted`` below. Its backward needs the
opposite, ``gather_shifted``: grad_z[b, (o, i, j), y, x] = grad_out[b, o, y - i + p, x - j + p].
Both are memory-bound passes over z (read once or written once), which is why the split pays
where out_channels is tiny and the kernel is wide (the 9x9, 64 -> 3 SR tails: cuDNN's implicit
GEMM tiles 32 output channels for 3). Planes outside the image read as zero.

This module imports triton: only ``models.tail_conv`` imports it, lazily, on a CUDA call.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

BLOCK = 512


@triton.jit
def _sum_shifted_kernel(z_ptr, bias_ptr, out_ptr, O, H, W, HAS_BIAS: tl.constexpr,
                        K: tl.constexpr, BLOCK: tl.constexpr):
    bo = tl.program_id(0)  # one (batch, output channel) plane per program row
    o = bo % O
    pix = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
    inside = pix < H * W
    y = pix // W
    x = pix % W
    p: tl.constexpr = K // 2
    plane0 = z_ptr + bo.to(tl.int64) * (K * K) * H * W  # z[b, (o, 0, 0)]: rows (b, o) are adjacent
    acc = tl.zeros((BLOCK,), dtype=tl.float32)
    for i in tl.static_range(K):
        ys = y + i - p
        row_ok = inside & (ys >= 0) & (ys < H)
        for j in tl.static_range(K):
            xs = x + j - p
            ok = row_ok & (xs >= 0) & (xs < W)
            acc += tl.load(plane0 + (i * K + j) * H * W + ys * W + xs, mask=ok,
                           other=0.0).to(tl.float32)
    if HAS_BIAS:
        acc += tl.load(bias_ptr + o).to(tl.float32)
    tl.store(out_ptr + bo.to(tl.int64) * H * W + pix, acc.to(out_ptr.dtype.element_ty),
             mask=inside)


@triton.jit
def _gather_shifted_kernel(g_ptr, out_ptr, H, W, K: tl.constexpr, BLOCK: tl.constexpr):
    row = tl.program_id(0)  # one (batch, o, i, j) plane of grad_z per program row
    ij = row % (K * K)
    bo = row // (K * K)
    i = ij // K
    j = ij % K
    p: tl.constexpr = K // 2
    pix = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
    inside = pix < H * W
    ys = pix // W - i + p
    xs = pix % W - j + p
    ok = inside & (ys >= 0) & (ys < H) & (xs >= 0) & (xs < W)
    g = tl.load(g_ptr + bo.to(tl.int64) * H * W + ys * W + xs, mask=ok, other=0.0)
    tl.store(out_ptr + row.to(tl.int64) * H * W + pix, g.to(out_ptr.dtype.element_ty),
             mask=inside)


def sum_shifted(z: torch.Tensor, bias: torch.Tensor | None, k: int, h: int,
                w: int) -> torch.Tensor:
    """z (B, O*k*k, H*W) -> out (B, O, H, W) in z's dtype, fp32 accumulation, plus bias."""
    b, rows, _ = z.shape
    o = rows // (k * k)
    z = z.contiguous()
    out = torch.empty((b, o, h, w), dtype=z.dtype, device=z.device)
    grid = (b * o, triton.cdiv(h * w, BLOCK))
    _sum_shifted_kernel[grid](z, bias if bias is not None else z, out, o, h, w,
                              HAS_BIAS=bias is not None, K=k, BLOCK=BLOCK, num_warps=4)
    return out


def gather_shifted(grad_out: torch.Tensor, k: int) -> torch.Tensor:
    """grad_out (B, O, H, W) -> grad_z (B, O*k*k, H*W): the backward of ``sum_shifted``."""
    b, o, h, w = grad_out.shape
    grad_out = grad_out.contiguous()
    out = torch.empty((b, o * k * k, h * w), dtype=grad_out.dtype, device=grad_out.device)
    grid = (b * o * k * k, triton.cdiv(h * w, BLOCK))
    _gather_shifted_kernel[grid](grad_out, out, h, w, K=k, BLOCK=BLOCK, num_warps=4)
    return out
