"""A linear layer computed on zero-padded operands, with its own backward (issue 7).

``models.aligned_block`` pads IMAGE's 196-wide tokens and 49-wide heads to multiples of 8 so that
the blocks' products run on cuBLAS's Hopper kernels. Through autograd, each padded weight cost a
pad + cast in the forward and, in the backward, cuBLAS's split-K weight product into a padded
bf16 gradient, a slice + cast back to the fp32 parameter and a separate bias sum.
:class:`PaddedLinear` keeps the forward (pad + cast, which the compiled block fuses, and one
cuBLAS product) and writes its own backward: dX = dY W_pad by cuBLAS, and dW, db by two Triton
launches straight from the padded operands into the parameters' fp32 gradients
(``kernels.wgrad``). Elsewhere (CPU, fp32 or fp64 operands) the same backward runs in torch
(:func:`weight_grad_reference`), which the CPU tests check against autograd through ``F.linear``.

A padded side of a weight is a :data:`Padding` (real, padded): groups of ``real`` values, each
followed by zeros up to ``padded`` (IMAGE's qkv rows: 12 groups of 49 -> 56; its D: one group of
196 -> 200). Every padded term is an exact zero, so the output equals the unpadded layer's.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from image_bench.kernels import cuda_triton_module

_kernels = cuda_triton_module("wgrad")  # at import: see cuda_triton_module
_triton_weight_grad = True


def set_triton_weight_grad(enabled: bool) -> None:
    """Switch the Triton weight gradient on or off (benchmarks compare it with cuBLAS's)."""
    global _triton_weight_grad
    _triton_weight_grad = enabled


# One side of a weight: groups of ``real`` values, each followed by zeros up to ``padded``
# (plain ints, which dynamo passes through Function.apply as constants).
Padding = tuple[int, int]


def padded_size(n: int, side: Padding) -> int:
    """The padded length of a side of ``n`` real values."""
    real, padded = side
    return n // real * padded


def pad_side(t: torch.Tensor, dim: int, side: Padding) -> torch.Tensor:
    """Zeros after each group of ``real`` values along ``dim``, up to ``padded``."""
    real, padded = side
    if padded == real:
        return t
    dim = dim % t.dim()
    groups = t.unflatten(dim, (t.shape[dim] // real, real))
    return F.pad(groups, [0, 0] * (t.dim() - dim - 1) + [0, padded - real]).flatten(dim, dim + 1)


def unpad_side(t: torch.Tensor, dim: int, side: Padding) -> torch.Tensor:
    """The inverse of :func:`pad_side`: the first ``real`` values of each padded group."""
    real, padded = side
    if padded == real:
        return t
    dim = dim % t.dim()
    groups = t.unflatten(dim, (t.shape[dim] // padded, padded))
    return groups.narrow(dim + 1, 0, real).flatten(dim, dim + 1)


def weight_grad_reference(dy: torch.Tensor, x: torch.Tensor, rows: Padding, cols: Padding,
                          bias: bool):
    """dW = dY^T X and db = sum of dY's rows, from (R, padded) operands to the parameter's shape,
    in the operands' dtype (the torch path; ``kernels.wgrad`` on CUDA)."""
    dw = unpad_side(unpad_side(dy.t() @ x, 1, cols), 0, rows)
    return dw, unpad_side(dy.sum(0), 0, rows) if bias else None


def _use_triton(dy: torch.Tensor) -> bool:
    return (_triton_weight_grad and _kernels is not None and dy.is_cuda
            and dy.dtype in (torch.bfloat16, torch.float16))


class PaddedLinear(torch.autograd.Function):
    """x (..., padded_size(I, cols)) in the compute dtype, weight (O, I), bias (O,) or None ->
    x W_pad^T + b_pad, (..., padded_size(O, rows)), with W_pad, b_pad the padded weight and bias
    in x's dtype."""

    @staticmethod
    def forward(ctx, x, weight, bias, rows: Padding, cols: Padding):
        w_pad = pad_side(pad_side(weight, 0, rows), 1, cols).to(x.dtype)
        b_pad = None if bias is None else pad_side(bias, 0, rows).to(x.dtype)
        ctx.save_for_backward(x, w_pad)
        ctx.rows, ctx.cols, ctx.has_bias = rows, cols, bias is not None
        return F.linear(x, w_pad, b_pad)

    @staticmethod
    def backward(ctx, grad_out):
        x, w_pad = ctx.saved_tensors
        dy = grad_out.reshape(-1, grad_out.shape[-1]).contiguous()
        dx = grad_out @ w_pad if ctx.needs_input_grad[0] else None
        dw = db = None
        if ctx.needs_input_grad[1] or ctx.needs_input_grad[2]:
            xs = x.reshape(-1, x.shape[-1]).contiguous()
            if _use_triton(dy):
                dw, db = _kernels.weight_grad(dy, xs, ctx.rows, ctx.cols, ctx.has_bias)
            else:
                dw, db = weight_grad_reference(dy, xs, ctx.rows, ctx.cols, ctx.has_bias)
        return dx, dw, db, None, None


def padded_linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                  rows: Padding, cols: Padding) -> torch.Tensor:
    """:class:`PaddedLinear` on x (..., padded_size(I, cols)), cast first to the autocast dtype
    where autocast is on (as ``F.linear`` would), so that the saved input is the 16-bit one."""
    kind = x.device.type
    if torch.is_autocast_enabled(kind):
        x = x.to(torch.get_autocast_dtype(kind))
    return PaddedLinear.apply(x, weight, bias, rows, cols)


__all__ = ["Padding", "PaddedLinear", "pad_side", "padded_linear", "padded_size",
           "set_triton_weight_grad", "unpad_side", "weight_grad_reference"]
