"""Triton kernels for a k x k 'same' convolution split into one matrix product and a shifted sum.

A stride-1 convolution with padding p = k // 2 is

    out[b, o, y, x] = sum_{i, j} z[b, (o, i, j), y + i - p, x + j - p]
    with z[b, (o, i, j), :, :] = sum_c w[o, c, i, j] x[b, c, :, :],

one matrix product (``accel.tail_conv``) and ``sum_shifted`` below, a memory-bound pass over z,
which is why the split pays where out_channels is tiny and the kernel is wide (the 9x9, 64 -> 3
SR tails: cuDNN's implicit GEMM tiles 32 output channels for 3). Planes outside the image read
as zero.

The backward never builds grad_z[b, (o, i, j), y, x] = grad_out[b, o, y - i + p, x - j + p]
(``gather_shifted``, kept as the reference): for the tails it is 81 shifted copies of a 3-channel
gradient, 0.5 GB at batch 256, written once and read by two products. ``input_grad`` and
``weight_grad`` are those two products with grad_z gathered on chip from grad_out, which is small
enough to stay in L2: dx = grad_z^T taps and dtaps = sum over images and pixels of grad_z x.

This module imports triton: only ``accel.tail_conv`` imports it, at its own import where CUDA
is present (the kernels run inside compiled regions).
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


@triton.jit
def _dot(a, b, FP32: tl.constexpr):
    if FP32:  # three TF32 products: fp32-level error (one TF32 product: ~1e-3)
        return tl.dot(a, b, input_precision="tf32x3")
    return tl.dot(a, b)


@triton.jit
def _input_grad_kernel(g_ptr, taps_ptr, dx_ptr, H, W, s_b, s_c, s_p, O: tl.constexpr,
                       C: tl.constexpr, K: tl.constexpr, BLOCK_M: tl.constexpr,
                       BLOCK_T: tl.constexpr, BLOCK_C: tl.constexpr, FP32: tl.constexpr):
    """dx[b, c, y, x] = sum_t grad_z[b, t, y, x] taps[t, c] over BLOCK_M pixels of one row y of
    image b: a row's pixels are adjacent in grad_out, so the gathers coalesce."""
    b = tl.program_id(1)
    x_blocks = tl.cdiv(W, BLOCK_M)
    y = tl.program_id(0) // x_blocks
    x = (tl.program_id(0) % x_blocks) * BLOCK_M + tl.arange(0, BLOCK_M)
    inside = x < W
    p: tl.constexpr = K // 2
    T: tl.constexpr = O * K * K
    cols = tl.arange(0, BLOCK_C)
    g_image = g_ptr + b.to(tl.int64) * O * H * W
    acc = tl.zeros((BLOCK_M, BLOCK_C), dtype=tl.float32)
    for t0 in tl.static_range(0, T, BLOCK_T):
        t = t0 + tl.arange(0, BLOCK_T)
        o = t // (K * K)
        i = (t % (K * K)) // K
        j = t % K
        ys = y - i + p  # (BLOCK_T,)
        xs = x[:, None] - j[None, :] + p
        ok = (inside[:, None] & ((t < T) & (ys >= 0) & (ys < H))[None, :] & (xs >= 0)
              & (xs < W))
        a = tl.load(g_image + (o * H * W + ys * W)[None, :] + xs, mask=ok, other=0.0)
        w = tl.load(taps_ptr + t[:, None] * C + cols[None, :],
                    mask=(t < T)[:, None] & (cols < C)[None, :], other=0.0)
        acc += _dot(a, w, FP32)
    out = dx_ptr + b.to(tl.int64) * s_b + cols[None, :] * s_c + (y * W + x)[:, None] * s_p
    tl.store(out, acc.to(dx_ptr.dtype.element_ty), mask=inside[:, None] & (cols < C)[None, :])


@triton.jit
def _weight_grad_kernel(g_ptr, x_ptr, part_ptr, B, H, W, s_b, s_c, s_p, O: tl.constexpr,
                        C: tl.constexpr, K: tl.constexpr, IMAGES: tl.constexpr,
                        BLOCK_T: tl.constexpr, BLOCK_P: tl.constexpr, BLOCK_C: tl.constexpr,
                        FP32: tl.constexpr):
    """part[chunk, t, c] = sum over the chunk's IMAGES images and all pixels of
    grad_z[b, t, pix] x[b, c, pix], for BLOCK_T taps t; pixels in row segments (coalesced)."""
    t = tl.program_id(0) * BLOCK_T + tl.arange(0, BLOCK_T)
    chunk = tl.program_id(1)
    p: tl.constexpr = K // 2
    T: tl.constexpr = O * K * K
    o = t // (K * K)
    i = (t % (K * K)) // K
    j = t % K
    cols = tl.arange(0, BLOCK_C)
    acc = tl.zeros((BLOCK_T, BLOCK_C), dtype=tl.float32)
    for n in range(IMAGES):
        b = chunk * IMAGES + n
        width = tl.where(b < B, W, 0)  # no pixels past the last image
        g_image = g_ptr + b.to(tl.int64) * O * H * W
        x_image = x_ptr + b.to(tl.int64) * s_b
        for y in range(H):
            ys = y - i + p  # (BLOCK_T,)
            row_ok = (t < T) & (ys >= 0) & (ys < H)
            for x0 in range(0, W, BLOCK_P):
                x = x0 + tl.arange(0, BLOCK_P)
                inside = x < width
                xs = x[None, :] - j[:, None] + p
                ok = row_ok[:, None] & inside[None, :] & (xs >= 0) & (xs < W)
                a = tl.load(g_image + (o * H * W + ys * W)[:, None] + xs, mask=ok, other=0.0)
                xv = tl.load(x_image + (y * W + x)[:, None] * s_p + cols[None, :] * s_c,
                             mask=inside[:, None] & (cols < C)[None, :], other=0.0)
                acc += _dot(a, xv, FP32)
    out = part_ptr + chunk.to(tl.int64) * T * C + t[:, None] * C + cols[None, :]
    tl.store(out, acc, mask=(t < T)[:, None] & (cols < C)[None, :])


def _pixel_strides(t: torch.Tensor) -> tuple[int, int, int]:
    """(batch, channel, pixel) strides of a (B, C, H, W) tensor whose pixels are one axis
    (NCHW or channels_last: the row stride is W times the column stride)."""
    sb, sc, sh, sw = t.stride()
    if sh != t.shape[3] * sw:
        raise ValueError(f"pixels of a tensor of strides {t.stride()} are not one axis")
    return sb, sc, sw


# Launch settings (scripts/gpu_tail_conv.py --sweep, H100, batch 256, 64 -> 3 at 32 x 128)
INPUT_GRAD_BLOCK_M, INPUT_GRAD_BLOCK_T, INPUT_GRAD_WARPS = 128, 64, 4
WEIGHT_GRAD_IMAGES, WEIGHT_GRAD_BLOCK_P, WEIGHT_GRAD_WARPS = 1, 64, 8


def input_grad(grad_out: torch.Tensor, taps: torch.Tensor, like: torch.Tensor,
               k: int) -> torch.Tensor:
    """dx (B, C, H, W) of the split convolution, in ``like``'s dtype and memory format, from
    grad_out (B, O, H, W) and taps (O*k*k, C) (rows (o, i, j)) of one dtype."""
    b, o, h, w = grad_out.shape
    c = taps.shape[1]
    dx = torch.empty_like(like)
    sb, sc, sp = _pixel_strides(dx)
    grid = (h * triton.cdiv(w, INPUT_GRAD_BLOCK_M), b)
    _input_grad_kernel[grid](grad_out.contiguous(), taps.contiguous(), dx, h, w, sb, sc, sp, O=o,
                             C=c, K=k, BLOCK_M=INPUT_GRAD_BLOCK_M, BLOCK_T=INPUT_GRAD_BLOCK_T,
                             BLOCK_C=max(16, triton.next_power_of_2(c)),
                             FP32=taps.dtype == torch.float32, num_warps=INPUT_GRAD_WARPS)
    return dx


def weight_grad(grad_out: torch.Tensor, x: torch.Tensor, k: int) -> torch.Tensor:
    """dtaps (O*k*k, C), fp32, of the split convolution from grad_out (B, O, H, W) and x
    (B, C, H, W) of one dtype: per-chunk partials in a fixed order, then their sum."""
    b, o, h, w = grad_out.shape
    c = x.shape[1]
    t = o * k * k
    chunks = triton.cdiv(b, WEIGHT_GRAD_IMAGES)
    part = torch.empty((chunks, t, c), dtype=torch.float32, device=x.device)
    sb, sc, sp = _pixel_strides(x)
    block_t = min(256, max(16, triton.next_power_of_2(t)))  # the fp32 tile: <= 64 KB
    grid = (triton.cdiv(t, block_t), chunks)
    _weight_grad_kernel[grid](grad_out.contiguous(), x, part, b, h, w, sb, sc, sp, O=o, C=c, K=k,
                              IMAGES=WEIGHT_GRAD_IMAGES, BLOCK_T=block_t,
                              BLOCK_P=WEIGHT_GRAD_BLOCK_P,
                              BLOCK_C=max(16, triton.next_power_of_2(c)),
                              FP32=x.dtype == torch.float32, num_warps=WEIGHT_GRAD_WARPS)
    return part.sum(0)


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
