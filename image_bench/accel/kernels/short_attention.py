"""Multi-head self-attention over short sequences, forward and backward, in Triton (CUDA only).

IMAGE's transformer blocks attend over 32 or 64 tokens with 4 heads of 49 columns (56 in the
aligned blocks). Written out (``models.vit.attention``), one block's
attention is two batched products of 1,024 tiny matrices at batch 256, a softmax and the copies
that split the heads out of the qkv projection and merge them back, twice as many products and
copies in the backward: about 11 ms of IMAGE-2's 71 ms training step on the H100 (docs/speed.md).

Here one program owns one (sample, head) and keeps its whole n x n score matrix on chip:

    forward:   S = q k^T * scale,  P = softmax(S),  O = P v
    backward:  S, P recomputed from q, k (cheaper than storing P);
               dV = P^T dO,  dP = dO v^T,  dS = P * (dP - rowsum(P * dP)),
               dQ = dS k * scale,  dK = dS^T q * scale

It reads q, k and v straight from the qkv projection's output (B, n, 3 * heads * d_h) and writes
O as (B, n, heads * d_h), the layout the output projection reads, and dQ, dK, dV into one
(B, n, 3 * heads * d_h) gradient: no head copies in either direction. Products take 16-bit
operands with fp32 accumulation, S and the softmax are fp32 (the written-out path rounds S to
bf16 before its fp32 softmax, so this is the more exact of the two), P is rounded to the
operands' dtype for P v, as ``attn.to(v.dtype)`` does. Tiles are padded to powers of two with
masked loads: n <= MAX_TOKENS, d_h <= MAX_HEAD_DIM.

This module imports triton: only ``accel.attention`` imports it, where CUDA is present.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

MAX_TOKENS = 64  # the n x n scores of one head live in registers
MAX_HEAD_DIM = 64
DTYPES = (torch.bfloat16, torch.float16)


@triton.jit
def _head_offsets(n, HEADS: tl.constexpr, DH: tl.constexpr, BLOCK_N: tl.constexpr,
                  BLOCK_D: tl.constexpr):
    """Row/column offsets of one head's (n, d_h) slice inside a (n, 3 * HEADS * DH) sample."""
    rows = tl.arange(0, BLOCK_N)
    cols = tl.arange(0, BLOCK_D)
    ok = (rows[:, None] < n) & (cols[None, :] < DH)
    return rows, rows[:, None] * (3 * HEADS * DH) + cols[None, :], ok


@triton.jit
def _probabilities(q, k, rows, n, scale):
    """P = softmax(q k^T * scale) over the n valid keys, fp32 (BLOCK_N x BLOCK_N)."""
    s = tl.dot(q, tl.trans(k)) * scale
    s = tl.where(rows[None, :] < n, s, -1.0e30)  # finite: no inf - inf
    p = tl.exp(s - tl.max(s, axis=1)[:, None])
    return p / tl.sum(p, axis=1)[:, None]


@triton.jit
def _forward_kernel(qkv_ptr, out_ptr, n, scale, HEADS: tl.constexpr, DH: tl.constexpr,
                    BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr):
    sample = (tl.program_id(0) // HEADS).to(tl.int64)  # offsets past 2^31 at large batches
    head = tl.program_id(0) % HEADS
    rows, offs, ok = _head_offsets(n, HEADS, DH, BLOCK_N, BLOCK_D)
    base = qkv_ptr + sample * n * (3 * HEADS * DH) + head * DH
    q = tl.load(base + offs, mask=ok, other=0.0)
    k = tl.load(base + HEADS * DH + offs, mask=ok, other=0.0)
    v = tl.load(base + 2 * HEADS * DH + offs, mask=ok, other=0.0)
    p = _probabilities(q, k, rows, n, scale)
    o = tl.dot(p.to(v.dtype), v)
    out_offs = rows[:, None] * (HEADS * DH) + tl.arange(0, BLOCK_D)[None, :]
    tl.store(out_ptr + sample * n * (HEADS * DH) + head * DH + out_offs,
             o.to(out_ptr.dtype.element_ty), mask=ok)


@triton.jit
def _backward_kernel(qkv_ptr, dout_ptr, dqkv_ptr, n, scale, HEADS: tl.constexpr,
                     DH: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr):
    sample = (tl.program_id(0) // HEADS).to(tl.int64)  # offsets past 2^31 at large batches
    head = tl.program_id(0) % HEADS
    rows, offs, ok = _head_offsets(n, HEADS, DH, BLOCK_N, BLOCK_D)
    start = sample * n * (3 * HEADS * DH) + head * DH
    q = tl.load(qkv_ptr + start + offs, mask=ok, other=0.0)
    k = tl.load(qkv_ptr + start + HEADS * DH + offs, mask=ok, other=0.0)
    v = tl.load(qkv_ptr + start + 2 * HEADS * DH + offs, mask=ok, other=0.0)
    out_offs = rows[:, None] * (HEADS * DH) + tl.arange(0, BLOCK_D)[None, :]
    do = tl.load(dout_ptr + sample * n * (HEADS * DH) + head * DH + out_offs, mask=ok,
                 other=0.0)
    p = _probabilities(q, k, rows, n, scale)
    dv = tl.dot(tl.trans(p.to(do.dtype)), do)
    dp = tl.dot(do, tl.trans(v))
    ds = (p * (dp - tl.sum(p * dp, axis=1)[:, None])).to(q.dtype)
    dq = tl.dot(ds, k) * scale
    dk = tl.dot(tl.trans(ds), q) * scale
    dst = dqkv_ptr + start + offs
    tl.store(dst, dq.to(dqkv_ptr.dtype.element_ty), mask=ok)
    tl.store(dst + HEADS * DH, dk.to(dqkv_ptr.dtype.element_ty), mask=ok)
    tl.store(dst + 2 * HEADS * DH, dv.to(dqkv_ptr.dtype.element_ty), mask=ok)


def _blocks(n: int, head_dim: int) -> tuple[int, int]:
    # tl.dot needs every tile side >= 16
    return max(16, triton.next_power_of_2(n)), max(16, triton.next_power_of_2(head_dim))


# Benchmarks force warps per program here: {"fwd": w, "bwd": w} (scripts/gpu_short_attention.py)
OVERRIDE: dict[str, int] = {}


def _num_warps(kind: str, n: int) -> int:
    """H100, batch 256, 4 heads of 56, kernels alone as CUDA graph replays (forward / backward,
    us): 32 tokens 1 warp 5.0 / 9.4, 2 warps 5.5 / 9.9, 4 warps 6.2 / 12.1; 64 tokens 2 warps
    11.2 / 32.4, 4 warps 9.1 / 23.2, 8 warps 11.1 / 27.4."""
    return OVERRIDE.get(kind, 4 if n > 32 else 1)


def attention_forward(qkv: torch.Tensor, heads: int, scale: float) -> torch.Tensor:
    """The forward kernel: qkv (B, n, 3 * heads * d_h), contiguous -> O (B, n, heads * d_h)."""
    b, n, width = qkv.shape
    head_dim = width // (3 * heads)
    out = qkv.new_empty(b, n, heads * head_dim)
    block_n, block_d = _blocks(n, head_dim)
    _forward_kernel[(b * heads,)](qkv, out, n, scale, HEADS=heads, DH=head_dim, BLOCK_N=block_n,
                                  BLOCK_D=block_d, num_warps=_num_warps("fwd", n))
    return out


def attention_backward(qkv: torch.Tensor, grad_out: torch.Tensor, heads: int,
                       scale: float) -> torch.Tensor:
    """The backward kernel: dO (B, n, heads * d_h), contiguous -> dqkv, laid out as qkv."""
    b, n, width = qkv.shape
    head_dim = width // (3 * heads)
    dqkv = torch.empty_like(qkv)
    block_n, block_d = _blocks(n, head_dim)
    _backward_kernel[(b * heads,)](qkv, grad_out, dqkv, n, scale, HEADS=heads, DH=head_dim,
                                   BLOCK_N=block_n, BLOCK_D=block_d,
                                   num_warps=_num_warps("bwd", n))
    return dqkv


class ShortAttention(torch.autograd.Function):
    """qkv (B, n, 3 * heads * d_h), contiguous, 16-bit -> (B, n, heads * d_h), same dtype."""

    @staticmethod
    def forward(ctx, qkv, heads: int, scale: float):
        ctx.save_for_backward(qkv)
        ctx.heads, ctx.scale = heads, scale
        return attention_forward(qkv, heads, scale)

    @staticmethod
    def backward(ctx, grad_out):
        (qkv,) = ctx.saved_tensors
        return attention_backward(qkv, grad_out.contiguous(), ctx.heads, ctx.scale), None, None


def supports(qkv: torch.Tensor, heads: int) -> bool:
    """Whether :func:`short_attention` computes this call (else the written-out path runs)."""
    if not qkv.is_cuda or qkv.dim() != 3 or qkv.dtype not in DTYPES or qkv.shape[0] == 0:
        return False
    n, width = qkv.shape[1:]
    return (0 < n <= MAX_TOKENS and width % (3 * heads) == 0
            and width // (3 * heads) <= MAX_HEAD_DIM)


def short_attention(qkv: torch.Tensor, heads: int, scale: float) -> torch.Tensor:
    """softmax(q k^T * scale) v for every head of every sample (see the module docstring)."""
    return ShortAttention.apply(qkv.contiguous(), heads, scale)
