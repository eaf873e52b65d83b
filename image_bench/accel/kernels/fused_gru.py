"""Fused bidirectional GRU recurrence for small hidden sizes, in Triton (CUDA only).

This module imports triton: import it only where CUDA is present (``image_bench.accel.gru``
does so lazily on the first CUDA call). The math, packing and autograd Function live in
``image_bench.accel.kernels.bigru``; this file supplies the two sequential kernels:

* forward: one program owns BLOCK_N sequences of one direction (grid axis 1 = direction, so
  both directions run in one launch). It keeps h (BLOCK_N x H, float32) and the three W_h*
  tiles (H x H) on chip for all T steps; per step it reads the precomputed input projection
  W_i* x_t, computes W_h* h with tl.dot, applies (G1)-(G4) of bigru.py and writes h_t.
* backward: the same grid walking time in reverse; it recomputes the gates of step t from the
  saved h_{t-1} (cheaper than storing them: gates would be 4x the bytes of h), carries dh on
  chip, writes the pre-activation gradients dgi (for the dx and dW_ih matmuls outside) and
  sums dW_hh and both biases' gradients on chip, one float32 partial per program (summed by
  torch afterwards: deterministic, unlike atomics).

Both kernels accumulate in float32 whatever the storage dtype (bf16, fp16 or fp32).
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import triton
import triton.language as tl

from image_bench.accel.kernels.bigru import Recurrence, make_bigru_function, split_bigru

MAX_HIDDEN = 64  # W_hh tiles live in registers; beyond this nn.GRU (cuDNN) is the better path
POISON = False  # tests set this: outputs start as NaN, so an unwritten element shows


class KernelConfig(NamedTuple):
    block_n: int  # sequences per program
    num_warps: int
    precision: str  # tl.dot input_precision: "ieee", "tf32x3" or "tf32"


# Benchmarks force a configuration here: {"fwd": KernelConfig, "bwd": KernelConfig}.
OVERRIDE: dict[str, KernelConfig] = {}


def pick_config(kind: str, n_seq: int, hidden: int, dtype: torch.dtype) -> KernelConfig:
    """Launch configuration, from the H100 sweep (docs/speed.md): small programs, since the
    recurrence is latency-bound and many resident programs hide each one's step latency.
    float32 uses 3xTF32 products (error ~1e-7, like IEEE float32, and 3.4x faster here);
    bf16/fp16 use one TF32 product (operands are already rounded coarser than TF32)."""
    if kind in OVERRIDE:
        return OVERRIDE[kind]
    precision = "tf32x3" if dtype == torch.float32 else "tf32"
    return KernelConfig(block_n=16, num_warps=4 if kind == "fwd" else 2, precision=precision)


@triton.jit
def _w_tile(w_ptr, gate: tl.constexpr, H: tl.constexpr, BLOCK_H: tl.constexpr,
            TRANSPOSE: tl.constexpr):
    """Gate ``gate``'s H x H block of W_hh (3H x H), as float32, zero-padded to BLOCK_H.
    TRANSPOSE gives tile[k, j] = W[gate*H + j, k] (for h @ W^T), else tile[j, k]."""
    i = tl.arange(0, BLOCK_H)[:, None]
    j = tl.arange(0, BLOCK_H)[None, :]
    mask = (i < H) & (j < H)
    if TRANSPOSE:
        ptrs = w_ptr + (gate * H + j) * H + i
    else:
        ptrs = w_ptr + (gate * H + i) * H + j
    return tl.load(ptrs, mask=mask, other=0.0).to(tl.float32)


@triton.jit
def _bias(ptr, gate: tl.constexpr, H: tl.constexpr, BLOCK_H: tl.constexpr):
    cols = tl.arange(0, BLOCK_H)
    return tl.load(ptr + gate * H + cols, mask=cols < H, other=0.0).to(tl.float32)[None, :]


@triton.jit
def _tanh(x):
    # tanh via the logistic function (no libdevice dependency); absolute error ~1e-7.
    return 2.0 * tl.sigmoid(2.0 * x) - 1.0


@triton.jit
def _bigru_fwd_kernel(gi_ptr, b_ih_ptr, w_hh_ptr, b_hh_ptr, out_ptr, hs_ptr, N, T,
                      H: tl.constexpr, BLOCK_H: tl.constexpr, BLOCK_N: tl.constexpr,
                      WRITE_HS: tl.constexpr, PRECISION: tl.constexpr):
    pid = tl.program_id(0)
    d = tl.program_id(1)  # direction: 0 walks t = 0..T-1, 1 walks t = T-1..0
    rows = pid * BLOCK_N + tl.arange(0, BLOCK_N)
    cols = tl.arange(0, BLOCK_H)
    mask = (rows[:, None] < N) & (cols[None, :] < H)

    w_base = w_hh_ptr + d * (3 * H * H)
    w_r = _w_tile(w_base, 0, H, BLOCK_H, True)
    w_z = _w_tile(w_base, 1, H, BLOCK_H, True)
    w_n = _w_tile(w_base, 2, H, BLOCK_H, True)
    bi = b_ih_ptr + d * (3 * H)
    bh = b_hh_ptr + d * (3 * H)
    b_r = _bias(bi, 0, H, BLOCK_H) + _bias(bh, 0, H, BLOCK_H)
    b_z = _bias(bi, 1, H, BLOCK_H) + _bias(bh, 1, H, BLOCK_H)
    b_in = _bias(bi, 2, H, BLOCK_H)
    b_hn = _bias(bh, 2, H, BLOCK_H)

    row64 = rows.to(tl.int64)[:, None]
    gi_rows = gi_ptr + row64 * (T * 6 * H) + d * (3 * H) + cols[None, :]  # (N, T, 6H)
    h_off = row64 * (T * 2 * H) + d * H + cols[None, :]  # (N, T, 2H)

    t = d * (T - 1)
    a_r = tl.load(gi_rows + t * (6 * H), mask=mask, other=0.0).to(tl.float32)
    a_z = tl.load(gi_rows + t * (6 * H) + H, mask=mask, other=0.0).to(tl.float32)
    a_n = tl.load(gi_rows + t * (6 * H) + 2 * H, mask=mask, other=0.0).to(tl.float32)
    h = tl.zeros([BLOCK_N, BLOCK_H], dtype=tl.float32)
    for s in range(0, T):
        t = s + d * (T - 1 - 2 * s)
        # Prefetch step s+1's input projection: it does not depend on h, so its memory
        # latency overlaps this step's arithmetic.
        g_nx = gi_rows + (t + 1 - 2 * d) * (6 * H)
        m_nx = mask & (s + 1 < T)
        n_r = tl.load(g_nx, mask=m_nx, other=0.0).to(tl.float32)
        n_z = tl.load(g_nx + H, mask=m_nx, other=0.0).to(tl.float32)
        n_n = tl.load(g_nx + 2 * H, mask=m_nx, other=0.0).to(tl.float32)

        r = tl.sigmoid(a_r + b_r + tl.dot(h, w_r, input_precision=PRECISION))  # (G1)
        z = tl.sigmoid(a_z + b_z + tl.dot(h, w_z, input_precision=PRECISION))  # (G2)
        hn = tl.dot(h, w_n, input_precision=PRECISION) + b_hn
        n = _tanh(a_n + b_in + r * hn)  # (G3)
        h = n + z * (h - n)  # (G4)

        o = h_off + t * (2 * H)
        tl.store(out_ptr + o, h.to(out_ptr.dtype.element_ty), mask=mask)
        if WRITE_HS:  # float32 copy for backward when out is bf16/fp16
            tl.store(hs_ptr + o, h, mask=mask)
        a_r, a_z, a_n = n_r, n_z, n_n


@triton.jit
def _bigru_bwd_kernel(gout_ptr, gi_ptr, hs_ptr, b_ih_ptr, w_hh_ptr, b_hh_ptr, dgi_ptr,
                      dw_part_ptr, dbi_part_ptr, dbh_part_ptr, N, T, H: tl.constexpr,
                      BLOCK_H: tl.constexpr, BLOCK_N: tl.constexpr, PRECISION: tl.constexpr):
    pid = tl.program_id(0)
    d = tl.program_id(1)
    rows = pid * BLOCK_N + tl.arange(0, BLOCK_N)
    cols = tl.arange(0, BLOCK_H)
    mask = (rows[:, None] < N) & (cols[None, :] < H)

    w_base = w_hh_ptr + d * (3 * H * H)
    wt_r = _w_tile(w_base, 0, H, BLOCK_H, True)  # for recomputing W_h* h_{t-1}
    wt_z = _w_tile(w_base, 1, H, BLOCK_H, True)
    wt_n = _w_tile(w_base, 2, H, BLOCK_H, True)
    w_r = _w_tile(w_base, 0, H, BLOCK_H, False)  # for dh_{t-1} = da @ W_h*
    w_z = _w_tile(w_base, 1, H, BLOCK_H, False)
    w_n = _w_tile(w_base, 2, H, BLOCK_H, False)
    bi = b_ih_ptr + d * (3 * H)
    bh = b_hh_ptr + d * (3 * H)
    b_r = _bias(bi, 0, H, BLOCK_H) + _bias(bh, 0, H, BLOCK_H)
    b_z = _bias(bi, 1, H, BLOCK_H) + _bias(bh, 1, H, BLOCK_H)
    b_in = _bias(bi, 2, H, BLOCK_H)
    b_hn = _bias(bh, 2, H, BLOCK_H)

    row64 = rows.to(tl.int64)[:, None]
    g_off = row64 * (T * 6 * H) + d * (3 * H) + cols[None, :]
    h_off = row64 * (T * 2 * H) + d * H + cols[None, :]
    step = 1 - 2 * d  # time increment of this direction's processing order

    # Inputs of the last processing step s = T-1 (time t = T-1 for d=0, 0 for d=1).
    t = (1 - d) * (T - 1)
    a_r = tl.load(gi_ptr + g_off + t * (6 * H), mask=mask, other=0.0).to(tl.float32)
    a_z = tl.load(gi_ptr + g_off + t * (6 * H) + H, mask=mask, other=0.0).to(tl.float32)
    a_n = tl.load(gi_ptr + g_off + t * (6 * H) + 2 * H, mask=mask, other=0.0).to(tl.float32)
    go = tl.load(gout_ptr + h_off + t * (2 * H), mask=mask, other=0.0).to(tl.float32)
    hp = tl.load(hs_ptr + h_off + (t - step) * (2 * H), mask=mask & (T > 1), other=0.0)
    dh = tl.zeros([BLOCK_N, BLOCK_H], dtype=tl.float32)
    # This program's share of dW_h* (sum over its rows and steps of dgh^T h_{t-1}) and of the
    # bias gradients (sums of da_r, da_z, da_n and of dgh_n = da_n * r).
    dw_r = tl.zeros([BLOCK_H, BLOCK_H], dtype=tl.float32)
    dw_z = tl.zeros([BLOCK_H, BLOCK_H], dtype=tl.float32)
    dw_n = tl.zeros([BLOCK_H, BLOCK_H], dtype=tl.float32)
    db_r = tl.zeros([BLOCK_H], dtype=tl.float32)
    db_z = tl.zeros([BLOCK_H], dtype=tl.float32)
    db_n = tl.zeros([BLOCK_H], dtype=tl.float32)
    db_hn = tl.zeros([BLOCK_H], dtype=tl.float32)
    for i in range(0, T):
        s = T - 1 - i
        t = s + d * (T - 1 - 2 * s)
        # Prefetch step s-1 (time t - step): none of it depends on dh.
        t_nx = t - step
        m_nx = mask & (s >= 1)
        n_r = tl.load(gi_ptr + g_off + t_nx * (6 * H), mask=m_nx, other=0.0).to(tl.float32)
        n_z = tl.load(gi_ptr + g_off + t_nx * (6 * H) + H, mask=m_nx, other=0.0).to(tl.float32)
        n_n = tl.load(gi_ptr + g_off + t_nx * (6 * H) + 2 * H, mask=m_nx,
                      other=0.0).to(tl.float32)
        n_go = tl.load(gout_ptr + h_off + t_nx * (2 * H), mask=m_nx, other=0.0).to(tl.float32)
        n_hp = tl.load(hs_ptr + h_off + (t_nx - step) * (2 * H), mask=mask & (s >= 2),
                       other=0.0)

        # Recompute (G1)-(G3) of step t from h_{t-1}.
        r = tl.sigmoid(a_r + b_r + tl.dot(hp, wt_r, input_precision=PRECISION))
        z = tl.sigmoid(a_z + b_z + tl.dot(hp, wt_z, input_precision=PRECISION))
        hn = tl.dot(hp, wt_n, input_precision=PRECISION) + b_hn
        n = _tanh(a_n + b_in + r * hn)

        dh = dh + go
        da_n = dh * (1.0 - z) * (1.0 - n * n)  # (G4) then tanh of (G3)
        da_z = dh * (hp - n) * z * (1.0 - z)  # (G4) then sigmoid of (G2)
        da_r = da_n * hn * r * (1.0 - r)  # r * (W_hn h + b_hn) of (G3), sigmoid of (G1)
        d_hn = da_n * r

        g = dgi_ptr + g_off + t * (6 * H)
        tl.store(g, da_r.to(dgi_ptr.dtype.element_ty), mask=mask)
        tl.store(g + H, da_z.to(dgi_ptr.dtype.element_ty), mask=mask)
        tl.store(g + 2 * H, da_n.to(dgi_ptr.dtype.element_ty), mask=mask)
        # Rows past N and padded columns carry zeros here, so they add nothing.
        dw_r = tl.dot(tl.trans(da_r), hp, dw_r, input_precision=PRECISION)
        dw_z = tl.dot(tl.trans(da_z), hp, dw_z, input_precision=PRECISION)
        dw_n = tl.dot(tl.trans(d_hn), hp, dw_n, input_precision=PRECISION)
        db_r += tl.sum(da_r, axis=0)
        db_z += tl.sum(da_z, axis=0)
        db_n += tl.sum(da_n, axis=0)
        db_hn += tl.sum(d_hn, axis=0)

        # dh_{t-1}: through z * h_{t-1} of (G4) and through the three W_h* h_{t-1}.
        dh = (dh * z + tl.dot(da_r, w_r, input_precision=PRECISION)
              + tl.dot(da_z, w_z, input_precision=PRECISION)
              + tl.dot(d_hn, w_n, input_precision=PRECISION))
        a_r, a_z, a_n, go, hp = n_r, n_z, n_n, n_go, n_hp

    part = pid * 2 + d
    i = tl.arange(0, BLOCK_H)[:, None]
    j = tl.arange(0, BLOCK_H)[None, :]
    w_mask = (i < H) & (j < H)
    w_out = dw_part_ptr + part * (3 * H * H) + i * H + j  # (P, 2, 3H, H)
    tl.store(w_out, dw_r, mask=w_mask)
    tl.store(w_out + H * H, dw_z, mask=w_mask)
    tl.store(w_out + 2 * H * H, dw_n, mask=w_mask)
    c_mask = cols < H
    # (P, 2, 3H) each, so that a sum over P gives b_ih's and b_hh's gradients as laid out.
    bi_out = dbi_part_ptr + part * (3 * H) + cols
    bh_out = dbh_part_ptr + part * (3 * H) + cols
    tl.store(bi_out, db_r, mask=c_mask)
    tl.store(bi_out + H, db_z, mask=c_mask)
    tl.store(bi_out + 2 * H, db_n, mask=c_mask)
    tl.store(bh_out, db_r, mask=c_mask)
    tl.store(bh_out + H, db_z, mask=c_mask)
    tl.store(bh_out + 2 * H, db_hn, mask=c_mask)


def _block_h(hidden: int) -> int:
    return max(16, triton.next_power_of_2(hidden))  # tl.dot needs every dimension >= 16


def _new(shape, dtype, like: torch.Tensor) -> torch.Tensor:
    if POISON:
        return torch.full(shape, float("nan"), dtype=dtype, device=like.device)
    return torch.empty(shape, dtype=dtype, device=like.device)


def triton_forward(gi, b_ih, w_hh, b_hh, out_dtype, keep_hs):
    n_seq, steps, six_h = gi.shape
    hidden = six_h // 6
    out = _new((n_seq, steps, 2 * hidden), out_dtype, gi)
    write_hs = keep_hs and out_dtype != torch.float32
    hs = _new((n_seq, steps, 2 * hidden), torch.float32, gi) if write_hs else out
    cfg = pick_config("fwd", n_seq, hidden, out_dtype)
    grid = (triton.cdiv(n_seq, cfg.block_n), 2)
    _bigru_fwd_kernel[grid](gi, b_ih.contiguous(), w_hh.contiguous(), b_hh.contiguous(), out,
                            hs, n_seq, steps, H=hidden, BLOCK_H=_block_h(hidden),
                            BLOCK_N=cfg.block_n, WRITE_HS=write_hs, PRECISION=cfg.precision,
                            num_warps=cfg.num_warps)
    return out, (hs if write_hs else None)


def triton_backward(grad_out, gi, hs, b_ih, w_hh, b_hh, grad_dtype):
    n_seq, steps, six_h = gi.shape
    hidden = six_h // 6
    cfg = pick_config("bwd", n_seq, hidden, grad_dtype)
    programs = triton.cdiv(n_seq, cfg.block_n)
    dgi = _new((n_seq, steps, six_h), grad_dtype, gi)
    dw_part = _new((programs, 2, 3 * hidden, hidden), torch.float32, gi)
    dbi_part = _new((programs, 2, 3 * hidden), torch.float32, gi)
    dbh_part = _new((programs, 2, 3 * hidden), torch.float32, gi)
    _bigru_bwd_kernel[(programs, 2)](grad_out, gi, hs, b_ih.contiguous(), w_hh.contiguous(),
                                     b_hh.contiguous(), dgi, dw_part, dbi_part, dbh_part, n_seq,
                                     steps, H=hidden, BLOCK_H=_block_h(hidden),
                                     BLOCK_N=cfg.block_n, PRECISION=cfg.precision,
                                     num_warps=cfg.num_warps)
    # Plain sums only: no host-built index tensors, whose pageable host-to-device copy would
    # stall the host until the GPU caught up.
    return dgi, dw_part.sum(0), dbi_part.sum(0).view(6 * hidden), dbh_part.sum(0)


TRITON_RECURRENCE = Recurrence(triton_forward, triton_backward)
TritonSplitBiGRU = make_bigru_function(TRITON_RECURRENCE)

SUPPORTED_DTYPES = (torch.float32, torch.bfloat16, torch.float16)


def supports(gru: torch.nn.GRU, x: torch.Tensor) -> bool:
    """Whether the fused path handles this call (else the caller uses nn.GRU)."""
    from image_bench.accel.kernels.bigru import compute_dtype_for

    return (x.is_cuda and x.dim() == 3 and x.shape[0] > 0 and x.shape[1] > 0
            and gru.bidirectional and gru.num_layers == 1 and gru.batch_first and gru.bias
            and getattr(gru, "proj_size", 0) == 0 and gru.hidden_size <= MAX_HIDDEN
            and compute_dtype_for(x) in SUPPORTED_DTYPES)


def fused_bigru(gru: torch.nn.GRU, x: torch.Tensor) -> torch.Tensor:
    """``gru(x)[0]`` through the Triton recurrence (same parameters, same autocast rules)."""
    return split_bigru(gru, x, TritonSplitBiGRU)
