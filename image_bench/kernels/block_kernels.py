"""A pre-norm transformer block (``models.vit.Block``) in three Triton launches, for small batches.

At batch 1 IMAGE-2's call is 108 blocks of 32-64 tokens with D = 196; compiled, each block ran
~16 kernels (LayerNorms, GEMMs with split-K reductions, softmax, GELU, residual adds): 1,729
kernels of ~2.7 us per call on the H100. Here a block is

    qkv = LN1(x) W_qkv^T + b                              _norm_linear_kernel
    x1  = x + proj(softmax(q k^T / sqrt(d_h)) v)          _attention_proj_kernel (all heads)
    out = x1 + b_2 + sum_j GELU(LN2(x1) W_1j^T + b_1j) W_2j^T    _norm_mlp_split_kernel

the first two over 32-wide output-column tiles, the MLP over 32-unit slices j of its hidden
layer whose fc2 products are added into ``out`` with fp32 atomics (the block's output is fp32,
and its last bits vary from call to call with the order of the additions). So a block runs on
several SMs at once. On Hopper each launch is a programmatic dependent launch: it lets the next
one start at once, and that one loads its weights while the previous finishes, then waits
(gdc_wait) before it reads the activations.

H100, bf16, batch 1, 32 tokens, CUDA graph (scripts/gpu_fused_block.py), one block: compiled
~40 us; four launches (fc1 and fc2 + residual apart) 29.9 us, with PDL 24.6 us; three launches
with PDL 21.5-23.0 us. IMAGE-2's batch-1 call: compiled 5.40 ms (1,729 kernels); four launches
4.08 ms (682 kernels), with PDL 3.78 ms; three launches 3.14 ms (571 kernels). Tried and not
kept (docs/speed.md): one kernel per block with one program per sample (84 us per block on one
SM); LN1 + qkv + attention in one program per (sample, head) (IMAGE-2 4.15 against 4.01 ms); the
projection recomputed inside the fc1 launch (30.2 us); the projection's weights for all heads
loaded before the wait and picked per head (IMAGE-2 4.89 ms).

Tiles are padded to powers of two with masked loads: D <= 256 (the LayerNorm holds a whole row)
and N <= 64 tokens (one sample's attention in one tile). Products in the weights' dtype with
fp32 accumulation; LayerNorm, softmax and GELU in fp32; qkv and h are kept in the weights' dtype
as under autocast. This module imports triton: only ``models.fused_block`` imports it, lazily.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

MAX_DIM = 256
MAX_TOKENS = 64
BLOCK_N = 32  # output columns per program of the LN1 + qkv launch
ATTN_BLOCK_N = 32  # output columns per program of the attention + projection launch
MLP_BLOCK_H = 32  # hidden units per program of the MLP launch (64: one block 24.5 us, not 23.0)


@triton.jit
def _layer_norm(x, g, beta, d_ok, D: tl.constexpr, eps):
    """LayerNorm of the rows of x (fp32, columns past D are padding) with weight g, bias beta."""
    mean = tl.sum(x, axis=1) / D
    xc = tl.where(d_ok[None, :], x - mean[:, None], 0.0)
    rstd = 1.0 / tl.sqrt(tl.sum(xc * xc, axis=1) / D + eps)
    return xc * rstd[:, None] * g[None, :] + beta[None, :]


@triton.jit
def _norm_linear_kernel(x_ptr, ln_w, ln_b, w_ptr, b_ptr, out_ptr, M, N_OUT, eps,
                        D: tl.constexpr, D_PAD: tl.constexpr, BLOCK_M: tl.constexpr,
                        BLOCK_N: tl.constexpr, PDL: tl.constexpr):
    """out[m, n] = LN(x)[m, :] . W[n, :] + b[n] for a (BLOCK_M, BLOCK_N) tile."""
    if PDL:
        tl.extra.cuda.gdc_launch_dependents()  # the next launch may start loading its weights
    offs_m = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = tl.program_id(1) * BLOCK_N + tl.arange(0, BLOCK_N)
    offs_d = tl.arange(0, D_PAD)
    d_ok = offs_d < D
    # parameters first: no earlier kernel writes them, so they load while it finishes
    w = tl.load(w_ptr + offs_n[None, :] * D + offs_d[:, None],  # w[d, n] = W[n, d]
                mask=d_ok[:, None] & (offs_n[None, :] < N_OUT), other=0.0)
    bias = tl.load(b_ptr + offs_n, mask=offs_n < N_OUT, other=0.0).to(tl.float32)
    g = tl.load(ln_w + offs_d, mask=d_ok, other=0.0).to(tl.float32)
    beta = tl.load(ln_b + offs_d, mask=d_ok, other=0.0).to(tl.float32)
    if PDL:
        tl.extra.cuda.gdc_wait()  # x comes from the previous kernel
    x = tl.load(x_ptr + offs_m[:, None] * D + offs_d[None, :],
                mask=(offs_m[:, None] < M) & d_ok[None, :], other=0.0).to(tl.float32)
    xn = _layer_norm(x, g, beta, d_ok, D, eps).to(w_ptr.dtype.element_ty)
    y = tl.dot(xn, w) + bias[None, :]
    tl.store(out_ptr + offs_m[:, None] * N_OUT + offs_n[None, :], y.to(out_ptr.dtype.element_ty),
             mask=(offs_m[:, None] < M) & (offs_n[None, :] < N_OUT))


@triton.jit
def _attention_proj_kernel(qkv_ptr, x_ptr, w_ptr, b_ptr, x1_ptr, acc_ptr, b2_ptr, N, scale,
                           D: tl.constexpr, HEADS: tl.constexpr, N_PAD: tl.constexpr,
                           HD_PAD: tl.constexpr, BLOCK_N: tl.constexpr, PDL: tl.constexpr):
    """x1[s, t, n] = x[s, t, n] + sum_h (softmax(q_h k_h^T * scale) v_h) . Wp[n, h] + b[n]
    for one sample s and BLOCK_N output columns; every head is computed by every column tile
    (the attention is tiny next to the projection's weights). Also acc = x1 + b2 in fp32: the
    MLP launch adds its partial sums to it, and it is the block's output."""
    if PDL:
        tl.extra.cuda.gdc_launch_dependents()
        tl.extra.cuda.gdc_wait()
    HD: tl.constexpr = D // HEADS
    sample = tl.program_id(0).to(tl.int64) * N
    offs_n = tl.program_id(1) * BLOCK_N + tl.arange(0, BLOCK_N)
    offs_t = tl.arange(0, N_PAD)
    offs_e = tl.arange(0, HD_PAD)
    t_ok = offs_t < N
    e_ok = offs_e < HD
    n_ok = offs_n < D
    wdt = w_ptr.dtype.element_ty
    rows = qkv_ptr + (sample + offs_t[:, None]) * (3 * D) + offs_e[None, :]
    acc = tl.zeros((N_PAD, BLOCK_N), dtype=tl.float32)
    for h in tl.static_range(HEADS):
        te = t_ok[:, None] & e_ok[None, :]
        q = tl.load(rows + h * HD, mask=te, other=0.0)
        k = tl.load(rows + D + h * HD, mask=te, other=0.0)
        v = tl.load(rows + 2 * D + h * HD, mask=te, other=0.0)
        s = tl.dot(q, tl.trans(k)) * scale
        s = tl.where(t_ok[None, :], s, float("-inf"))
        p = tl.exp(s - tl.max(s, axis=1)[:, None])
        p = p / tl.sum(p, axis=1)[:, None]
        o = tl.dot(p.to(wdt), v)
        wp = tl.load(w_ptr + offs_n[None, :] * D + h * HD + offs_e[:, None],  # wp[e, n]
                     mask=e_ok[:, None] & n_ok[None, :], other=0.0)
        acc += tl.dot(o.to(wdt), wp)
    tile = (sample + offs_t[:, None]) * D + offs_n[None, :]
    ok = t_ok[:, None] & n_ok[None, :]
    x = tl.load(x_ptr + tile, mask=ok, other=0.0).to(tl.float32)
    y = (x + acc + tl.load(b_ptr + offs_n, mask=n_ok, other=0.0).to(tl.float32)[None, :]
         ).to(x1_ptr.dtype.element_ty)  # x1 as the unfused block stores it: LN2 reads that
    tl.store(x1_ptr + tile, y, mask=ok)
    b2 = tl.load(b2_ptr + offs_n, mask=n_ok, other=0.0).to(tl.float32)
    tl.store(acc_ptr + tile, y.to(tl.float32) + b2[None, :], mask=ok)


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
    """``block(x)`` of a ``models.vit.Block`` (no mask); x (B, N, D) contiguous, 16-bit weights."""
    b, n, d = x.shape
    attn, mlp = block.attn, block.mlp
    wdt = attn.qkv.weight.dtype
    rows = b * n
    hidden = mlp.fc1.out_features
    block_m = 16 if rows <= 16 else 32
    row_tiles = triton.cdiv(rows, block_m)
    out_dtype = torch.promote_types(x.dtype, wdt)  # x + a 16-bit branch, as under autocast
    pdl = _use_pdl(x.device)
    launch = {"PDL": pdl, "launch_pdl": pdl, "num_warps": 4}
    qkv = torch.empty((b, n, 3 * d), dtype=wdt, device=x.device)
    _norm_linear_kernel[(row_tiles, triton.cdiv(3 * d, BLOCK_N))](
        x, block.norm1.weight, block.norm1.bias, attn.qkv.weight, attn.qkv.bias, qkv, rows,
        3 * d, block.norm1.eps, D=d, D_PAD=_pow2(d), BLOCK_M=block_m, BLOCK_N=BLOCK_N, **launch)
    x1 = torch.empty((b, n, d), dtype=out_dtype, device=x.device)
    out = torch.empty((b, n, d), dtype=torch.float32, device=x.device)  # x1 + b2 + the MLP's sum
    _attention_proj_kernel[(b, triton.cdiv(d, ATTN_BLOCK_N))](
        qkv, x, attn.proj.weight, attn.proj.bias, x1, out, mlp.fc2.bias, n, attn.scale, D=d,
        HEADS=attn.heads, N_PAD=_pow2(n), HD_PAD=_pow2(d // attn.heads), BLOCK_N=ATTN_BLOCK_N,
        **launch)
    _norm_mlp_split_kernel[(row_tiles, triton.cdiv(hidden, MLP_BLOCK_H))](
        x1, block.norm2.weight, block.norm2.bias, mlp.fc1.weight, mlp.fc1.bias, mlp.fc2.weight,
        out, rows, hidden, block.norm2.eps, D=d, D_PAD=_pow2(d), BLOCK_M=block_m,
        BLOCK_H=MLP_BLOCK_H, **launch)
    return out
