"""A pre-norm transformer block (``models.vit.Block``) in three Triton launches, for small batches.

At batch 1 IMAGE-2's call is 108 blocks of 32-64 tokens with D = 196; compiled, each block ran
~16 kernels (LayerNorms, GEMMs with split-K reductions, softmax, GELU, residual adds): 1,729
kernels of ~2.7 us per call on the H100. Here a block is

    qkv = LN1(x) W_qkv^T + b;  x1 = out = x + b_proj (+ b_2)        _norm_qkv_kernel
    x1, out += softmax(q_h k_h^T / sqrt(d_h)) v_h W_proj,h^T        _attention_head_kernel
    out += GELU(LN2(x1) W_1j^T + b_1j) W_2j^T                        _norm_mlp_split_kernel

The qkv launch runs over 32-wide output-column tiles; the attention launch over (sample, head,
32 output columns), so each program's chain is one head's attention and one product; the MLP
over 32-unit slices j of its hidden layer. The two residual sums x1 and out are fp32 and take
the heads' and slices' products by atomic adds (the block's output is fp32, and its last bits
vary from call to call with the order of the additions). So a block runs on many SMs at once.
On Hopper each launch is a programmatic dependent launch: it lets the next one start at once,
and that one loads its weights while the previous finishes, then waits (gdc_wait) before it
reads the activations.

H100, bf16, batch 1, 32 tokens, CUDA graph (scripts/gpu_fused_block.py), one block: compiled
~40 us; four launches (attention with all heads per program, fc1 and fc2 apart) 29.9 us, with
PDL 24.6 us; the MLP in one launch 21.5-23.0 us; attention per head 16.9 us. IMAGE-2's batch-1
call: compiled 5.40 ms (1,729 kernels); four launches 4.08 ms (682 kernels), with PDL 3.78 ms;
the MLP in one launch 3.13-3.24 ms (571 kernels); attention per head 2.34-2.37 ms. Tried and not
kept (docs/speed.md): one kernel per block with one program per sample (84 us per block on one
SM); LN1 + qkv + attention in one program per (sample, head) (IMAGE-2 4.15 against 4.01 ms); the
projection recomputed inside the fc1 launch (30.2 us); the projection's weights for all heads
loaded before the wait and picked per head (IMAGE-2 4.89 ms).

Tiles are padded to powers of two with masked loads: D <= 256 (the LayerNorm holds a whole row)
and N <= 64 tokens (one sample's attention in one tile). Products in the weights' dtype with
fp32 accumulation; LayerNorm, softmax and GELU in fp32; qkv and h are kept in the weights' dtype
as under autocast. This module imports triton: only ``accel.fused_block`` imports it, lazily.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

MAX_DIM = 256
MAX_TOKENS = 64
BLOCK_N = 32  # output columns per program of the LN1 + qkv launch
ATTN_BLOCK_N = 32  # output columns per program of the attention launch (16: 2.42 ms, not 2.35)
MLP_BLOCK_H = 32  # hidden units per program of the MLP launch (64: one block 24.5 us, not 23.0)


@triton.jit
def _layer_norm(x, g, beta, d_ok, D: tl.constexpr, eps):
    """LayerNorm of the rows of x (fp32, columns past D are padding) with weight g, bias beta."""
    mean = tl.sum(x, axis=1) / D
    xc = tl.where(d_ok[None, :], x - mean[:, None], 0.0)
    rstd = 1.0 / tl.sqrt(tl.sum(xc * xc, axis=1) / D + eps)
    return xc * rstd[:, None] * g[None, :] + beta[None, :]


@triton.jit
def _norm_qkv_kernel(x_ptr, ln_w, ln_b, w_ptr, b_ptr, qkv_ptr, bp_ptr, b2_ptr, x1_ptr, out_ptr,
                     M, N_OUT, eps, D: tl.constexpr, D_PAD: tl.constexpr, BLOCK_M: tl.constexpr,
                     BLOCK_N: tl.constexpr, PDL: tl.constexpr):
    """qkv[m, n] = LN(x)[m, :] . W[n, :] + b[n] for a (BLOCK_M, BLOCK_N) tile. The tiles of the
    first D columns also start the block's two fp32 sums: x1 = x + b_proj (the attention launch
    adds its heads to it) and out = x + b_proj + b_2 (then the heads and the MLP)."""
    if PDL:
        tl.extra.cuda.gdc_launch_dependents()  # the next launch may start loading its weights
    offs_m = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = tl.program_id(1) * BLOCK_N + tl.arange(0, BLOCK_N)
    offs_d = tl.arange(0, D_PAD)
    m_ok = offs_m < M
    d_ok = offs_d < D
    c_ok = offs_n < D  # this tile's columns that are also columns of x1 and out
    # parameters first: no earlier kernel writes them, so they load while it finishes
    w = tl.load(w_ptr + offs_n[None, :] * D + offs_d[:, None],  # w[d, n] = W[n, d]
                mask=d_ok[:, None] & (offs_n[None, :] < N_OUT), other=0.0)
    bias = tl.load(b_ptr + offs_n, mask=offs_n < N_OUT, other=0.0).to(tl.float32)
    g = tl.load(ln_w + offs_d, mask=d_ok, other=0.0).to(tl.float32)
    beta = tl.load(ln_b + offs_d, mask=d_ok, other=0.0).to(tl.float32)
    bp = tl.load(bp_ptr + offs_n, mask=c_ok, other=0.0).to(tl.float32)
    b2 = tl.load(b2_ptr + offs_n, mask=c_ok, other=0.0).to(tl.float32)
    if PDL:
        tl.extra.cuda.gdc_wait()  # x comes from the previous kernel
    x = tl.load(x_ptr + offs_m[:, None] * D + offs_d[None, :],
                mask=m_ok[:, None] & d_ok[None, :], other=0.0).to(tl.float32)
    xn = _layer_norm(x, g, beta, d_ok, D, eps).to(w_ptr.dtype.element_ty)
    y = tl.dot(xn, w) + bias[None, :]
    tl.store(qkv_ptr + offs_m[:, None] * N_OUT + offs_n[None, :], y.to(qkv_ptr.dtype.element_ty),
             mask=m_ok[:, None] & (offs_n[None, :] < N_OUT))
    if tl.program_id(1) * BLOCK_N < D:
        mc = m_ok[:, None] & c_ok[None, :]
        tile = offs_m[:, None] * D + offs_n[None, :]
        start = tl.load(x_ptr + tile, mask=mc, other=0.0).to(tl.float32) + bp[None, :]
        tl.store(x1_ptr + tile, start, mask=mc)
        tl.store(out_ptr + tile, start + b2[None, :], mask=mc)


@triton.jit
def _attention_head_kernel(qkv_ptr, wp_ptr, x1_ptr, out_ptr, N, scale, D: tl.constexpr,
                           HEADS: tl.constexpr, N_PAD: tl.constexpr, HD_PAD: tl.constexpr,
                           BLOCK_N: tl.constexpr, PDL: tl.constexpr):
    """x1[s, t, n] += (softmax(q_h k_h^T * scale) v_h) . Wp[n, h], and the same onto out, for
    one sample s, one head h and BLOCK_N output columns n (fp32 atomic adds): each program's
    chain is one head's attention and one product, not all heads'."""
    if PDL:
        tl.extra.cuda.gdc_launch_dependents()
    HD: tl.constexpr = D // HEADS
    sample = tl.program_id(0).to(tl.int64) * N
    head = tl.program_id(1) * HD
    offs_n = tl.program_id(2) * BLOCK_N + tl.arange(0, BLOCK_N)
    offs_t = tl.arange(0, N_PAD)
    offs_e = tl.arange(0, HD_PAD)
    t_ok = offs_t < N
    e_ok = offs_e < HD
    n_ok = offs_n < D
    wp = tl.load(wp_ptr + offs_n[None, :] * D + head + offs_e[:, None],  # wp[e, n] = Wp[n, h, e]
                 mask=e_ok[:, None] & n_ok[None, :], other=0.0)
    if PDL:
        tl.extra.cuda.gdc_wait()  # q, k, v come from the previous kernel
    wdt = wp_ptr.dtype.element_ty
    rows = qkv_ptr + (sample + offs_t[:, None]) * (3 * D) + head + offs_e[None, :]
    te = t_ok[:, None] & e_ok[None, :]
    q = tl.load(rows, mask=te, other=0.0)
    k = tl.load(rows + D, mask=te, other=0.0)
    v = tl.load(rows + 2 * D, mask=te, other=0.0)
    s = tl.dot(q, tl.trans(k)) * scale
    s = tl.where(t_ok[None, :], s, float("-inf"))
    p = tl.exp(s - tl.max(s, axis=1)[:, None])
    p = p / tl.sum(p, axis=1)[:, None]
    o = tl.dot(p.to(wdt), v)
    part = tl.dot(o.to(wdt), wp)
    tile = (sample + offs_t[:, None]) * D + offs_n[None, :]
    ok = t_ok[:, None] & n_ok[None, :]
    tl.atomic_add(x1_ptr + tile, part, mask=ok, sem="relaxed")
    tl.atomic_add(out_ptr + tile, part, mask=ok, sem="relaxed")


@triton.jit
def _norm_mlp_split_kernel(x1_ptr, ln_w, ln_b, w1_ptr, b1_ptr, w2_ptr, acc_ptr, M, HIDDEN, eps,
                           D: tl.constexpr, D_PAD: tl.constexpr, BLOCK_M: tl.constexpr,
                           BLOCK_H: tl.constexpr, PDL: tl.constexpr):
    """acc[m, :] += GELU(LN2(x1)[m, :] . W1[j, :] + b1[j]) . W2[:, j] for this program's slice j
    of the hidden units: the MLP in one launch, its fc2 split over the hidden dimension with fp32
    atomic adds (so the summation order, and the last bits, vary between calls)."""
    if PDL:
        tl.extra.cuda.gdc_launch_dependents()
    offs_m = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_j = tl.program_id(1) * BLOCK_H + tl.arange(0, BLOCK_H)
    offs_d = tl.arange(0, D_PAD)
    m_ok = offs_m < M
    d_ok = offs_d < D
    j_ok = offs_j < HIDDEN
    w1 = tl.load(w1_ptr + offs_j[None, :] * D + offs_d[:, None],  # w1[d, j] = W1[j, d]
                 mask=d_ok[:, None] & j_ok[None, :], other=0.0)
    w2 = tl.load(w2_ptr + offs_d[None, :] * HIDDEN + offs_j[:, None],  # w2[j, d] = W2[d, j]
                 mask=j_ok[:, None] & d_ok[None, :], other=0.0)
    b1 = tl.load(b1_ptr + offs_j, mask=j_ok, other=0.0).to(tl.float32)
    g = tl.load(ln_w + offs_d, mask=d_ok, other=0.0).to(tl.float32)
    beta = tl.load(ln_b + offs_d, mask=d_ok, other=0.0).to(tl.float32)
    if PDL:
        tl.extra.cuda.gdc_wait()
    md = m_ok[:, None] & d_ok[None, :]
    x = tl.load(x1_ptr + offs_m[:, None] * D + offs_d[None, :], mask=md, other=0.0)
    wdt = w1_ptr.dtype.element_ty
    xn = _layer_norm(x.to(tl.float32), g, beta, d_ok, D, eps).to(wdt)
    h = tl.dot(xn, w1) + b1[None, :]
    h = 0.5 * h * (1.0 + tl.erf(h * 0.7071067811865476))  # nn.GELU's exact form
    part = tl.dot(h.to(wdt), w2)  # h rounded to the weights' dtype, as fc1's output under autocast
    tl.atomic_add(acc_ptr + offs_m[:, None] * D + offs_d[None, :], part, mask=md, sem="relaxed")


# Programmatic dependent launch (Hopper and later): each launch lets the next one start at once,
# and that one loads its weights before it waits for the activations (tl.extra.cuda.gdc_wait).
# None: on where the GPU supports it (compute capability >= 9).
PDL: bool | None = None


def _use_pdl(device: torch.device) -> bool:
    return PDL if PDL is not None else torch.cuda.get_device_capability(device)[0] >= 9


def _pow2(n: int) -> int:
    return max(16, triton.next_power_of_2(n))  # tl.dot needs every dimension >= 16


def block_forward(block, x: torch.Tensor) -> torch.Tensor:
    """``block(x)`` of a ``models.vit.Block`` (no mask); x (B, N, D) contiguous, 16-bit weights.
    Returns fp32 (B, N, D)."""
    b, n, d = x.shape
    attn, mlp = block.attn, block.mlp
    rows = b * n
    hidden = mlp.fc1.out_features
    block_m = 16 if rows <= 16 else 32
    row_tiles = triton.cdiv(rows, block_m)
    pdl = _use_pdl(x.device)
    launch = {"PDL": pdl, "launch_pdl": pdl, "num_warps": 4}
    qkv = torch.empty((b, n, 3 * d), dtype=attn.qkv.weight.dtype, device=x.device)
    x1 = torch.empty((b, n, d), dtype=torch.float32, device=x.device)  # x + attention branch
    out = torch.empty((b, n, d), dtype=torch.float32, device=x.device)  # x1 + MLP branch
    _norm_qkv_kernel[(row_tiles, triton.cdiv(3 * d, BLOCK_N))](
        x, block.norm1.weight, block.norm1.bias, attn.qkv.weight, attn.qkv.bias, qkv,
        attn.proj.bias, mlp.fc2.bias, x1, out, rows, 3 * d, block.norm1.eps, D=d,
        D_PAD=_pow2(d), BLOCK_M=block_m, BLOCK_N=BLOCK_N, **launch)
    _attention_head_kernel[(b, attn.heads, triton.cdiv(d, ATTN_BLOCK_N))](
        qkv, attn.proj.weight, x1, out, n, attn.scale, D=d, HEADS=attn.heads, N_PAD=_pow2(n),
        HD_PAD=_pow2(d // attn.heads), BLOCK_N=ATTN_BLOCK_N, **launch)
    _norm_mlp_split_kernel[(row_tiles, triton.cdiv(hidden, MLP_BLOCK_H))](
        x1, block.norm2.weight, block.norm2.bias, mlp.fc1.weight, mlp.fc1.bias, mlp.fc2.weight,
        out, rows, hidden, block.norm2.eps, D=d, D_PAD=_pow2(d), BLOCK_M=block_m,
        BLOCK_H=MLP_BLOCK_H, **launch)
    return out
