"""Triton kernels for clip-by-global-norm + AdamW over all of a model's parameters in three
launches (``accel.fused_update`` builds the tables and holds the torch reference).

Why: PyTorch's fused AdamW walks the parameter list with its multi-tensor apply, at most 36
tensors and one 65,536-value chunk per CTA a launch. IMAGE-2 has 1,462 parameter tensors, most
of them small, so its step was 41 launches of ~40 CTAs each, 1.67 ms per training step on the
H100, and clipping added two more multi-tensor passes (the per-tensor norms, the scaling: ~0.5
ms). The bytes to move are 7 x 4 per value (read p, g, m, v; write p, m, v): for IMAGE-2's 57.8M
values 1.6 GB, ~0.5 ms at the H100's bandwidth.

Layout: every tensor stays where it is. The tables hold, per parameter, the addresses of p, its
gradient, exp_avg, exp_avg_sq and its step count as element offsets from one base tensor
(``base``, any fp32 CUDA tensor): the kernels then index ``base`` like any tensor, and with all
addresses 16-byte aligned (``ALIGNED``, checked on the host) the compiler may use vector loads.
One program handles one chunk of one parameter.

1. ``_sum_squares``: per chunk, sum of g^2.
2. ``_norm_and_steps`` (one program): the global norm, the clip factor min(1, max / (norm +
   1e-6)) as ``clip_grad_norm_`` computes it, and each parameter's step count + 1 (PyTorch
   increments before it uses the count).
3. ``_adamw_chunks``: per chunk, g *= clip; p -= lr wd p; m = b1 m + (1 - b1) g;
   v = b2 v + (1 - b2) g^2; p -= lr / (1 - b1^t) * m / (sqrt(v) / sqrt(1 - b2^t) + eps): PyTorch's
   fused AdamW in its order, in fp32 with correctly rounded sqrt and division, the bias
   corrections in float64 from the fp32 betas (see the kernel for why).

This module imports triton: ``accel.fused_update`` loads it on its first CUDA call.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

try:
    from triton.language.extra import libdevice
except ImportError:  # older layouts
    from triton.language.extra.cuda import libdevice

PARTIALS_BLOCK = 1024
# The per-parameter table's int64 columns, in this order (the kernels index them by position):
# element offsets from ``base`` of p, its gradient, exp_avg, exp_avg_sq, its step count and its
# group's lr, then its numel and its group's row in ``hyper``.
COLUMNS = ("p", "grad", "exp_avg", "exp_avg_sq", "step", "lr", "numel", "group")


@triton.jit
def _chunk(chunk_param, chunk_start, table, c, BLOCK: tl.constexpr):
    """Chunk ``c``: its parameter's table row, its first value and its lanes' mask."""
    row = table + tl.load(chunk_param + c).to(tl.int64) * 8
    start = tl.load(chunk_start + c)
    return row, start, start + tl.arange(0, BLOCK) < tl.load(row + 6)


@triton.jit
def _offsets(row, start, COL: tl.constexpr, BLOCK: tl.constexpr, ALIGNED: tl.constexpr):
    """Element offsets from ``base`` of the chunk's values in the row's column ``COL`` tensor."""
    off = tl.load(row + COL) + start
    if ALIGNED:
        off = tl.multiple_of(off, 4)
    return off + tl.arange(0, BLOCK)


@triton.jit
def _sum_squares(base, chunk_param, chunk_start, table, partial_ptr, BLOCK: tl.constexpr,
                 ALIGNED: tl.constexpr):
    c = tl.program_id(0)
    row, start, valid = _chunk(chunk_param, chunk_start, table, c, BLOCK)
    g = tl.load(base + _offsets(row, start, 1, BLOCK, ALIGNED), mask=valid, other=0.0)
    tl.store(partial_ptr + c, tl.sum(g * g, axis=0))


@triton.jit
def _norm_and_steps(base, partial_ptr, n_partials, table, n_params, out_ptr, max_norm,
                    CLIP: tl.constexpr, BLOCK: tl.constexpr):
    """out[0] = ||g||, out[1] = the clip factor; every parameter's step += 1."""
    acc = tl.zeros((BLOCK,), dtype=tl.float32)
    for start in range(0, n_partials, BLOCK):
        offs = start + tl.arange(0, BLOCK)
        acc += tl.load(partial_ptr + offs, mask=offs < n_partials, other=0.0)
    norm = tl.sqrt_rn(tl.sum(acc, axis=0))
    if CLIP:
        clip = tl.minimum(tl.div_rn(max_norm, norm + 1e-6), 1.0)
    else:
        clip = norm * 0.0 + 1.0
    tl.store(out_ptr, norm)
    tl.store(out_ptr + 1, clip)
    for start in range(0, n_params, BLOCK):
        rows = start + tl.arange(0, BLOCK)
        valid = rows < n_params
        step_offs = tl.load(table + rows.to(tl.int64) * 8 + 4, mask=valid, other=0)
        tl.store(base + step_offs, tl.load(base + step_offs, mask=valid) + 1.0, mask=valid)


@triton.jit
def _adamw_chunks(base, chunk_param, chunk_start, table, hyper, norm_clip_ptr,
                  BLOCK: tl.constexpr, ALIGNED: tl.constexpr):
    """One chunk of one parameter; ``hyper`` rows (per group, float64 holding fp32 values):
    beta1, beta2, weight decay, eps."""
    row, start, valid = _chunk(chunk_param, chunk_start, table, tl.program_id(0), BLOCK)
    p_offs = _offsets(row, start, 0, BLOCK, ALIGNED)
    g_offs = _offsets(row, start, 1, BLOCK, ALIGNED)
    m_offs = _offsets(row, start, 2, BLOCK, ALIGNED)
    v_offs = _offsets(row, start, 3, BLOCK, ALIGNED)
    step = tl.load(base + tl.load(row + 4)).to(tl.float64)
    lr = tl.load(base + tl.load(row + 5))
    h = hyper + tl.load(row + 7) * 4
    beta1_64, beta2_64 = tl.load(h), tl.load(h + 1)  # the fp32 betas, exactly, in float64
    # The moments use 1 - b with b in fp32 (for 0.999: 9.99987e-4, as PyTorch's fused step);
    # bias corrections formed from the same b in float64 cancel that at step 1 as PyTorch's do
    # (from the double 0.999 they left the update 6.6e-6 off float64's, PyTorch's 1.0e-6).
    bias1 = (1.0 - libdevice.pow(beta1_64, step)).to(tl.float32)
    bias2_sqrt = tl.sqrt(1.0 - libdevice.pow(beta2_64, step)).to(tl.float32)
    beta1, beta2 = beta1_64.to(tl.float32), beta2_64.to(tl.float32)
    weight_decay, eps = tl.load(h + 2).to(tl.float32), tl.load(h + 3).to(tl.float32)

    g = tl.load(base + g_offs, mask=valid, other=0.0) * tl.load(norm_clip_ptr + 1)
    p = tl.load(base + p_offs, mask=valid, other=0.0)
    m = tl.load(base + m_offs, mask=valid, other=0.0)
    v = tl.load(base + v_offs, mask=valid, other=0.0)
    p = p - lr * weight_decay * p
    m = beta1 * m + (1.0 - beta1) * g
    v = beta2 * v + (1.0 - beta2) * g * g
    step_size = tl.div_rn(lr, bias1)
    denom = tl.div_rn(tl.sqrt_rn(v), bias2_sqrt) + eps
    p = p - tl.div_rn(step_size * m, denom)
    tl.store(base + p_offs, p, mask=valid)
    tl.store(base + m_offs, m, mask=valid)
    tl.store(base + v_offs, v, mask=valid)


def clip_adamw_(base: torch.Tensor, table: torch.Tensor, hyper: torch.Tensor,
                chunk_param: torch.Tensor, chunk_start: torch.Tensor, partials: torch.Tensor,
                norm_clip: torch.Tensor, max_norm: float, aligned: bool, chunk: int,
                num_warps: int = 8) -> None:
    """Clip every gradient by the global norm (``max_norm <= 0``: no clipping) and apply one
    AdamW step to every parameter of ``table`` (rows of ``COLUMNS`` int64, see above), whose
    ``chunk``-value chunks ``chunk_param`` and ``chunk_start`` list; ``norm_clip`` receives
    (norm, clip factor)."""
    chunks = chunk_param.numel()
    _sum_squares[(chunks,)](base, chunk_param, chunk_start, table, partials, BLOCK=chunk,
                            ALIGNED=aligned, num_warps=num_warps)
    _norm_and_steps[(1,)](base, partials, chunks, table, table.shape[0], norm_clip,
                          float(max_norm), CLIP=max_norm > 0, BLOCK=PARTIALS_BLOCK, num_warps=4)
    _adamw_chunks[(chunks,)](base, chunk_param, chunk_start, table, hyper, norm_clip,
                             BLOCK=chunk, ALIGNED=aligned, num_warps=num_warps)
