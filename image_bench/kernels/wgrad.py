"""Weight and bias gradients of a linear layer on padded operands, in Triton (CUDA only).

The aligned transformer blocks (``models.aligned_block``) multiply zero-padded bf16 operands so
that cuBLAS can use its Hopper kernels. For the weight gradient dW = dY^T X that left three
kinds of work per linear layer in IMAGE-2's training step (H100, batch 256, docs/speed.md):

- cuBLAS's product, K = 8,192 or 16,384 rows into a 200-784 x 200-784 output: split-K kernels
  plus their reduction, 9.3 ms per step against 6.5 ms for the forward products of the same
  FLOPs;
- the slice of the padded bf16 gradient back to the parameter's shape, cast to fp32 (~1.4 ms);
- the bias gradient, a column sum of dY (~0.8 ms).

Here two launches do all three, from the padded operands straight into the fp32 gradients in
the parameters' own layout:

1. ``_partial_kernel``: one program per (output tile, slice of the rows): the tile's dY^T X
   over its rows with fp32 accumulation (and, for the bias, the column sums of its dY tile),
   written to a workspace;
2. ``_reduce_kernel``: one program per part of an output tile sums the slices in a fixed order
   (deterministic, unlike atomics) and stores the values that are real, mapped from the padded
   index to the parameter's: a padded side holds groups of ``gp`` values of which the first
   ``g`` are real (IMAGE's heads: 49 of 56; D: 196 of 200).

The gradients are the fp32 sums themselves, not rounded to bf16 first as cuBLAS's bf16 output
was: the same products, one rounding fewer.

This module imports triton: only ``models.padded_linear`` imports it, where CUDA is present.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

# Tile and split settings, H100 (scripts/gpu_wgrad.py --sweep). ``programs``: the row slices are
# chosen so that tiles x slices is about this many programs, with at least ``min_rows`` rows each.
# ``rb``: output cells per program of the reduction.
CONFIG = {"bm": 64, "bn": 128, "bk": 64, "warps": 4, "stages": 3, "programs": 264,
          "min_rows": 512, "rb": 1024}


@triton.jit
def _partial_kernel(dy_ptr, x_ptr, ws_ptr, wsb_ptr, R, OP, IP, rows_per_split,
                    BM: tl.constexpr, BN: tl.constexpr, BK: tl.constexpr,
                    STAGES: tl.constexpr, BIAS: tl.constexpr):
    tile = tl.program_id(0)
    split = tl.program_id(1)
    tiles = tl.num_programs(0)
    tiles_n = tl.cdiv(IP, BN)
    o = (tile // tiles_n) * BM + tl.arange(0, BM)
    i = (tile % tiles_n) * BN + tl.arange(0, BN)
    first = split * rows_per_split
    last = tl.minimum(first + rows_per_split, R)
    k = tl.arange(0, BK)
    acc = tl.zeros((BM, BN), dtype=tl.float32)
    col_sum = tl.zeros((BM,), dtype=tl.float32)
    for r0 in tl.range(first, last, BK, num_stages=STAGES):
        r = (r0 + k).to(tl.int64)
        in_rows = (r < last)[:, None]
        a = tl.load(dy_ptr + r[:, None] * OP + o[None, :], mask=in_rows & (o < OP)[None, :],
                    other=0.0)  # (BK, BM) of dY
        b = tl.load(x_ptr + r[:, None] * IP + i[None, :], mask=in_rows & (i < IP)[None, :],
                    other=0.0)  # (BK, BN) of X
        acc = tl.dot(tl.trans(a), b, acc)
        if BIAS:
            col_sum += tl.sum(a.to(tl.float32), axis=0)
    slot = (split * tiles + tile).to(tl.int64)
    cells = tl.arange(0, BM)[:, None] * BN + tl.arange(0, BN)[None, :]
    tl.store(ws_ptr + slot * (BM * BN) + cells, acc)
    if BIAS:
        tl.store(wsb_ptr + slot * BM + tl.arange(0, BM), col_sum)


@triton.jit
def _real_index(p, size, g, gp):
    """Padded index -> the parameter's index, and whether it is real (not a pad)."""
    return (p // gp) * g + p % gp, (p < size) & (p % gp < g)


@triton.jit
def _reduce_kernel(ws_ptr, wsb_ptr, dw_ptr, db_ptr, splits, OP, IP, I_REAL, og, ogp, ig, igp,
                   BM: tl.constexpr, BN: tl.constexpr, RB: tl.constexpr, BIAS: tl.constexpr):
    tile = tl.program_id(0)  # one program per RB cells of one output tile
    part = tl.program_id(1)
    tiles = tl.num_programs(0)
    tiles_n = tl.cdiv(IP, BN)
    cells = part * RB + tl.arange(0, RB)
    acc = tl.zeros((RB,), dtype=tl.float32)
    for s in range(splits):  # fixed order: the same sum on every run
        acc += tl.load(ws_ptr + (s * tiles + tile).to(tl.int64) * (BM * BN) + cells)
    ro, o_ok = _real_index((tile // tiles_n) * BM + cells // BN, OP, og, ogp)
    ri, i_ok = _real_index((tile % tiles_n) * BN + cells % BN, IP, ig, igp)
    tl.store(dw_ptr + ro.to(tl.int64) * I_REAL + ri, acc, mask=o_ok & i_ok)
    if BIAS:
        if (tile % tiles_n == 0) & (part == 0):  # one program per row of tiles: the bias
            col_sum = tl.zeros((BM,), dtype=tl.float32)
            for s in range(splits):
                col_sum += tl.load(wsb_ptr + (s * tiles + tile).to(tl.int64) * BM
                                   + tl.arange(0, BM))
            rb, b_ok = _real_index((tile // tiles_n) * BM + tl.arange(0, BM), OP, og, ogp)
            tl.store(db_ptr + rb, col_sum, mask=b_ok)


def splits_for(rows: int, tiles: int, config: dict) -> int:
    """Row slices per output tile: about ``programs`` programs, ``min_rows`` rows or more each."""
    most = max(1, rows // config["min_rows"])
    return max(1, min(most, round(config["programs"] / tiles)))


def weight_grad(dy: torch.Tensor, x: torch.Tensor, out_groups: tuple[int, int],
                in_groups: tuple[int, int], bias: bool, config: dict | None = None):
    """dY (R, OP) and X (R, IP), 16-bit, contiguous -> dW (O, I) and db (O,) (None without
    ``bias``), fp32, in the parameter's layout: ``out_groups`` = (g, gp) says that each group of
    gp padded rows of dW holds g real ones first (the same for the columns, ``in_groups``)."""
    config = config or CONFIG
    rows, op = dy.shape
    ip = x.shape[1]
    (og, ogp), (ig, igp) = out_groups, in_groups
    o_real, i_real = op // ogp * og, ip // igp * ig
    bm, bn, bk = config["bm"], config["bn"], config["bk"]
    tiles = triton.cdiv(op, bm) * triton.cdiv(ip, bn)
    splits = splits_for(rows, tiles, config)
    rows_per_split = triton.cdiv(triton.cdiv(rows, splits), bk) * bk
    splits = triton.cdiv(rows, rows_per_split)
    ws = torch.empty((splits, tiles, bm, bn), dtype=torch.float32, device=dy.device)
    wsb = torch.empty((splits, tiles, bm) if bias else (1,), dtype=torch.float32,
                      device=dy.device)
    dw = torch.empty((o_real, i_real), dtype=torch.float32, device=dy.device)
    db = torch.empty((o_real,), dtype=torch.float32, device=dy.device) if bias else None
    _partial_kernel[(tiles, splits)](dy, x, ws, wsb, rows, op, ip, rows_per_split, BM=bm, BN=bn,
                                     BK=bk, STAGES=config["stages"], BIAS=bias,
                                     num_warps=config["warps"])
    rb = min(config["rb"], bm * bn)
    _reduce_kernel[(tiles, bm * bn // rb)](ws, wsb, dw, db if bias else dw, splits, op, ip,
                                           i_real, og, ogp, ig, igp, BM=bm, BN=bn, RB=rb,
                                           BIAS=bias, num_warps=4)
    return dw, db


__all__ = ["CONFIG", "splits_for", "weight_grad"]
