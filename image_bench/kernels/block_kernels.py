"""A pre-norm transformer block (``models.vit.Block``) in four Triton launches, for small batches.

At batch 1 IMAGE-2's call is 108 blocks of 32-64 tokens with D = 196; compiled, each block ran
~16 kernels (LayerNorms, GEMMs with split-K reductions, softmax, GELU, residual adds): 1,729
kernels of ~2.7 us per call on the H100. Here a block is

    qkv = LN1(x) W_qkv^T + b                          _norm_linear_kernel
    x1  = x + proj(softmax(q k^T / sqrt(d_h)) v)      _attention_proj_kernel (all heads)
    h   = GELU(LN2(x1) W_1^T + b_1)                   _norm_linear_kernel
    out = x1 + h W_2^T + b_2                          _linear_residual_kernel

each launch spread over 32-wide output-column tiles, so a block runs on several SMs at once.
On Hopper each launch is a programmatic dependent launch: it lets the next one start at once,
and that one loads its weights while the previous finishes, then waits (gdc_wait) before it
reads the activations. H100, bf16, batch 1, 32 tokens, CUDA graph (scripts/gpu_fused_block.py):
compiled block 41.6 us, these launches 29.9 us, with PDL 24.6 us; IMAGE-2's batch-1 call
5.40 -> 4.08 ms (1,729 -> 682 kernels), with PDL 3.78 ms. (Tried and not kept, docs/speed.md:
one kernel per block with one program per sample, 84 us per block on one SM; LN1 + qkv +
attention in one program per (sample, head), 27.9 us against 29.3 us per block without PDL but
IMAGE-2 4.15 ms against 4.01 ms; the projection recomputed inside the fc1 launch, 30.2 us.)

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
BLOCK_N = 32  # output columns per program of the three linear launches
ATTN_BLOCK_N = 32  # output columns per program of the attention + projection launch


@triton.jit
def _norm_linear_kernel(x_ptr, ln_w, ln_b, w_ptr, b_ptr, out_ptr, M, N_OUT, eps,
                        D: tl.constexpr, D_PAD: tl.constexpr, BLOCK_M: tl.constexpr,
                        BLOCK_N: tl.constexpr, GELU: tl.constexpr, PDL: tl.constexpr):
    """out[m, n] = act(LN(x)[m, :] . W[n, :] + b[n]) for a (BLOCK_M, BLOCK_N) tile."""
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
    mean = tl.sum(x, axis=1) / D
    xc = tl.where(d_ok[None, :], x - mean[:, None], 0.0)
    rstd = 1.0 / tl.sqrt(tl.sum(xc * xc, axis=1) / D + eps)
    wdt = w_ptr.dtype.element_ty
    xn = (xc * rstd[:, None] * g[None, :] + beta[None, :]).to(wdt)
    y = tl.dot(xn, w) + bias[None, :]
    if GELU:
        y = 0.5 * y * (1.0 + tl.erf(y * 0.7071067811865476))  # nn.GELU's exact form
    tl.store(out_ptr + offs_m[:, None] * N_OUT + offs_n[None, :], y.to(out_ptr.dtype.element_ty),
             mask=(offs_m[:, None] < M) & (offs_n[None, :] < N_OUT))


@triton.jit
def _attention_proj_kernel(qkv_ptr, x_ptr, w_ptr, b_ptr, out_ptr, N, scale,
                           D: tl.constexpr, HEADS: tl.constexpr, N_PAD: tl.constexpr,
                           HD_PAD: tl.constexpr, BLOCK_N: tl.constexpr, PDL: tl.constexpr):
    """out[s, t, n] = x[s, t, n] + sum_h (softmax(q_h k_h^T * scale) v_h) . Wp[n, h] + b[n]
    for one sample s and BLOCK_N output columns; every head is computed by every column tile
    (the attention is tiny next to the projection's weights)."""
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
    y = x + acc + tl.load(b_ptr + offs_n, mask=n_ok, other=0.0).to(tl.float32)[None, :]
    tl.store(out_ptr + tile, y.to(out_ptr.dtype.element_ty), mask=ok)


@triton.jit
def _linear_residual_kernel(a_ptr, w_ptr, b_ptr, res_ptr, out_ptr, M, K, N_OUT,
                            BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
                            BLOCK_K: tl.constexpr, PDL: tl.constexpr):
    """out[m, n] = res[m, n] + a[m, :] . W[n, :] + b[n], K in BLOCK_K slices."""
    if PDL:
        tl.extra.cuda.gdc_launch_dependents()
        tl.extra.cuda.gdc_wait()
    offs_m = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = tl.program_id(1) * BLOCK_N + tl.arange(0, BLOCK_N)
    offs_k = tl.arange(0, BLOCK_K)
    m_ok = offs_m < M
    n_ok = offs_n < N_OUT
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for k0 in range(0, K, BLOCK_K):
        k_ok = k0 + offs_k < K
        a = tl.load(a_ptr + offs_m[:, None] * K + k0 + offs_k[None, :],
                    mask=m_ok[:, None] & k_ok[None, :], other=0.0)
        w = tl.load(w_ptr + offs_n[None, :] * K + k0 + offs_k[:, None],
                    mask=k_ok[:, None] & n_ok[None, :], other=0.0)
        acc += tl.dot(a, w)
    tile = offs_m[:, None] * N_OUT + offs_n[None, :]
    ok = m_ok[:, None] & n_ok[None, :]
    y = tl.load(res_ptr + tile, mask=ok, other=0.0).to(tl.float32) + acc
    y += tl.load(b_ptr + offs_n, mask=n_ok, other=0.0).to(tl.float32)[None, :]
    tl.store(out_ptr + tile, y.to(out_ptr.dtype.element_ty), mask=ok)


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
        3 * d, block.norm1.eps, D=d, D_PAD=_pow2(d), BLOCK_M=block_m, BLOCK_N=BLOCK_N,
        GELU=False, **launch)
    x1 = torch.empty((b, n, d), dtype=out_dtype, device=x.device)
    _attention_proj_kernel[(b, triton.cdiv(d, ATTN_BLOCK_N))](
        qkv, x, attn.proj.weight, attn.proj.bias, x1, n, attn.scale, D=d, HEADS=attn.heads,
        N_PAD=_pow2(n), HD_PAD=_pow2(d // attn.heads), BLOCK_N=ATTN_BLOCK_N, **launch)
    h = torch.empty((b, n, hidden), dtype=wdt, device=x.device)
    _norm_linear_kernel[(row_tiles, triton.cdiv(hidden, BLOCK_N))](
        x1, block.norm2.weight, block.norm2.bias, mlp.fc1.weight, mlp.fc1.bias, h, rows, hidden,
        block.norm2.eps, D=d, D_PAD=_pow2(d), BLOCK_M=block_m, BLOCK_N=BLOCK_N, GELU=True,
        **launch)
    out = torch.empty_like(x1)
    _linear_residual_kernel[(row_tiles, triton.cdiv(d, BLOCK_N))](
        h, mlp.fc2.weight, mlp.fc2.bias, x1, out, rows, hidden, d, BLOCK_M=block_m,
        BLOCK_N=BLOCK_N, BLOCK_K=64, **launch)
    return out
