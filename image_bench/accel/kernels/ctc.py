"""Triton kernels for the sync-free CTC loss: the alpha recursion and the beta-gradient pass.

``losses.ctc_nll`` states the algorithm in torch (``losses._alphas``, ``losses._emit_grad``);
these two kernels compute the same, one program per sample with
its 2S+1 extended-label states across the lanes, the frames in a loop. Each step needs the
previous step's states shifted by one and two, so a step's values go to global memory (the
alpha/beta buffers, which the backward needs anyway) and a barrier separates the store from the
shifted loads. In IMAGE-2's graphed training step on the H100 the torch recursion was ~900 tiny
kernels per step (T = 32 frames, forward and autograd backward: adds, fills, pads, copies of
1280 x 51 values), ~2.5 ms of a ~61 ms step; here it is two launches.

This module imports triton: ``losses`` loads it where CUDA is present.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl


@triton.jit
def _lse3(a, b, c):
    m = tl.maximum(tl.maximum(a, b), c)
    return m + tl.log(tl.exp(a - m) + tl.exp(b - m) + tl.exp(c - m))


@triton.jit
def _alpha_kernel(emit_ptr, skip_ptr, alpha_ptr, T, S, step, LOG_ZERO: tl.constexpr,
                  BLOCK_S: tl.constexpr):
    """alpha[t, n, s] for one sample n (emit, skip, alpha: (T, N, S), (N, S), (T, N, S));
    ``step`` = N S, from frame t to t + 1."""
    n = tl.program_id(0).to(tl.int64)
    s = tl.arange(0, BLOCK_S)
    valid = s < S
    row = n * S
    skip = tl.load(skip_ptr + row + s, mask=valid & (s >= 2), other=LOG_ZERO)
    alpha = tl.load(emit_ptr + row + s, mask=valid & (s < 2), other=LOG_ZERO)
    tl.store(alpha_ptr + row + s, alpha, mask=valid)
    for t in range(1, T):
        tl.debug_barrier()  # frame t - 1's stores, visible to every lane of the program
        prev = alpha_ptr + (t - 1) * step + row
        one_back = tl.load(prev + s - 1, mask=valid & (s >= 1), other=LOG_ZERO)
        two_back = tl.load(prev + s - 2, mask=valid & (s >= 2), other=LOG_ZERO) + skip
        emit = tl.load(emit_ptr + t * step + row + s, mask=valid, other=LOG_ZERO)
        alpha = _lse3(alpha, one_back, two_back) + emit
        tl.store(alpha_ptr + t * step + row + s, alpha, mask=valid)


@triton.jit
def _beta_grad_kernel(emit_ptr, skip_ptr, alpha_ptr, final_ptr, weight_ptr, nll_ptr, beta_ptr,
                      grad_ptr, T, S, step, LOG_ZERO: tl.constexpr, BLOCK_S: tl.constexpr):
    """beta[t, n, s] from the last frame back, and grad[t, n, s] = -w_n exp(alpha + beta - emit
    - log P_n) on the way; ``final`` holds log P_n's states (0, else LOG_ZERO), ``weight`` the
    incoming gradient of each sample (0 where it is infeasible), ``nll`` -log P_n."""
    n = tl.program_id(0).to(tl.int64)
    s = tl.arange(0, BLOCK_S)
    valid = s < S
    row = n * S
    w = tl.load(weight_ptr + n)
    nll = tl.load(nll_ptr + n)
    # the skip into s + 2 is the one beta takes from s
    skip_in = tl.load(skip_ptr + row + s + 2, mask=valid & (s + 2 < S), other=LOG_ZERO)
    last = (T - 1) * step + row
    emit = tl.load(emit_ptr + last + s, mask=valid, other=LOG_ZERO)
    beta = tl.load(final_ptr + row + s, mask=valid, other=LOG_ZERO) + emit
    tl.store(beta_ptr + last + s, beta, mask=valid)
    alpha = tl.load(alpha_ptr + last + s, mask=valid, other=LOG_ZERO)
    arg = tl.where(w != 0.0, alpha + beta - emit + nll, LOG_ZERO)
    tl.store(grad_ptr + last + s, -w * tl.exp(arg), mask=valid)
    for k in range(1, T):
        t = T - 1 - k
        tl.debug_barrier()
        nxt = beta_ptr + (t + 1) * step + row
        one_on = tl.load(nxt + s + 1, mask=valid & (s + 1 < S), other=LOG_ZERO)
        two_on = tl.load(nxt + s + 2, mask=valid & (s + 2 < S), other=LOG_ZERO) + skip_in
        at = t * step + row
        emit = tl.load(emit_ptr + at + s, mask=valid, other=LOG_ZERO)
        beta = _lse3(beta, one_on, two_on) + emit
        tl.store(beta_ptr + at + s, beta, mask=valid)
        alpha = tl.load(alpha_ptr + at + s, mask=valid, other=LOG_ZERO)
        arg = tl.where(w != 0.0, alpha + beta - emit + nll, LOG_ZERO)
        tl.store(grad_ptr + at + s, -w * tl.exp(arg), mask=valid)


def _launch_settings(states: int) -> tuple[int, int]:
    block = triton.next_power_of_2(max(states, 2))
    return block, max(1, min(8, block // 32))


def alphas(emit: torch.Tensor, skip: torch.Tensor, log_zero: float) -> torch.Tensor:
    """``losses._alphas``: float32 (T, N, S) emissions and (N, S) skips -> (T, N, S) alphas."""
    frames, n, states = emit.shape
    alpha = torch.empty_like(emit)
    block, warps = _launch_settings(states)
    _alpha_kernel[(n,)](emit, skip, alpha, frames, states, n * states, LOG_ZERO=log_zero,
                        BLOCK_S=block, num_warps=warps)
    return alpha


def emit_grad(emit: torch.Tensor, skip: torch.Tensor, final: torch.Tensor, alpha: torch.Tensor,
              weight: torch.Tensor, nll: torch.Tensor, log_zero: float) -> torch.Tensor:
    """``losses._emit_grad``: float32 ``final`` (N, S), ``weight`` and ``nll`` (N,)."""
    frames, n, states = emit.shape
    beta, grad = torch.empty_like(emit), torch.empty_like(emit)
    block, warps = _launch_settings(states)
    _beta_grad_kernel[(n,)](emit, skip, alpha, final, weight, nll, beta, grad, frames, states,
                            n * states, LOG_ZERO=log_zero, BLOCK_S=block, num_warps=warps)
    return grad
