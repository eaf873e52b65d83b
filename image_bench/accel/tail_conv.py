"""The SR models' wide convolutions between few and many channels, fast on the GPU: the tails
(9x9, 64 -> 3 or 4) and the heads (9x9, 3 -> 64).

The models build them as plain ``nn.Conv2d``; :func:`split_tail` and :func:`split_head` swap
them for the classes below (same parameters, same state_dict keys).

In IMAGE-2's training step on the H100 the three 9x9 64 -> 3 tails took ~13 ms of 109 ms of
kernels (5.4 ms per tail, forward + backward, at batch 256): cuDNN runs them as implicit GEMMs
whose tiles hold 32 output channels, 3 of them used.
:class:`TailConv2d` is an ``nn.Conv2d`` (same parameters, same state_dict) that on CUDA computes
the same convolution as one matrix product to O*k*k planes and a shifted sum
(``kernels.shifted_planes``): every weight tap becomes a row of a well-shaped product, and the
shifted sum is one memory-bound pass. On the CPU, and without triton, it is ``nn.Conv2d``.
``split_conv2d`` with :func:`sum_shifted_reference` (``F.fold``) is the same decomposition in
plain torch, so the CPU tests check the algebra against ``F.conv2d`` in float64;
:class:`ReferenceKernels` holds torch forms of the three Triton kernels, so that they also run
the autograd Functions (:func:`conv_functions`) that the GPU runs on them.

The SR heads (9x9, 3 -> 64 at 16 x 64) are the mirror image. :class:`HeadConv2d` keeps cuDNN's
forward but computes its backward on the same kernels: the input gradient as a tail's forward (the
'same' convolution of grad_out with the transposed, flipped weight, 64 -> 3), the weight gradient
with the tails' weight-gradient kernel, the few-channel side (here the input) shifted and the taps
mirrored, and the bias gradient as a column sum of grad_out's (pixels, channels) rows. cuDNN's
backward there (H100, benchmark mode, IMAGE-2's graphed step) was an indexed sm80 dgrad kernel
(0.36 ms), its wgrad and a 0.18 ms bf16 sum over the channels_last gradient for the bias.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from image_bench.accel.kernels import cuda_triton_module
from image_bench.accel.kernels.bigru import compute_dtype_for
from image_bench.accel.swap import swap_class


def sum_shifted_reference(z: torch.Tensor, bias: torch.Tensor | None, k: int, h: int,
                          w: int) -> torch.Tensor:
    """out[b, o, y, x] = sum_{i, j} z[b, (o, i, j), y + i - p, x + j - p] (+ bias), in torch.

    ``F.fold`` adds plane (i', j') at offset -(i' - p): the planes go in flipped."""
    b, rows, hw = z.shape
    o = rows // (k * k)
    flipped = z.view(b, o, k, k, hw).flip(2, 3).reshape(b, rows, hw)
    out = F.fold(flipped, (h, w), k, padding=k // 2)
    return out if bias is None else out + bias.view(1, -1, 1, 1).to(out.dtype)


def tap_rows(weight: torch.Tensor) -> torch.Tensor:
    """(O, C, k, k) -> (O*k*k, C): row (o, i, j) = w[o, :, i, j]."""
    o, c, k, _ = weight.shape
    return weight.permute(0, 2, 3, 1).reshape(o * k * k, c)


def planes(taps: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """z = W' x: (O*k*k, C) taps and x (B, C, H, W) -> (B, O*k*k, H*W), one batched product.

    bmm on the broadcast taps: torch.matmul would fold the batch into one product through
    transposed copies of x and z (16 ms of copies per IMAGE-2 training step on the H100)."""
    # (A hand-written backward returning dx in x's channels_last layout was measured with the
    # planes built: 3,916-3,921 against 3,924 samples/s, within the spread; not kept.)
    b, c, h, w = x.shape
    return torch.bmm(taps.expand(b, -1, -1), x.reshape(b, c, h * w))


def split_conv2d(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                 sum_shifted: Callable = sum_shifted_reference) -> torch.Tensor:
    """``F.conv2d(x, weight, bias, padding=k // 2)`` as z = W' x (one product), then the
    shifted sum of z's k*k planes per output channel."""
    k = weight.shape[2]
    return sum_shifted(planes(tap_rows(weight), x), bias, k, x.shape[2], x.shape[3])


def shifted_grad_reference(grad_out: torch.Tensor, k: int) -> torch.Tensor:
    """grad_z (B, O*k*k, H*W) of :func:`sum_shifted_reference`, in torch:
    grad_z[b, (o, i, j), y, x] = grad_out[b, o, y - i + p, x - j + p], zero outside the image.

    ``F.unfold`` reads offset +(i' - p): the taps come out flipped."""
    b, o, h, w = grad_out.shape
    z = F.unfold(grad_out, k, padding=k // 2)
    return z.view(b, o, k, k, h * w).flip(2, 3).reshape(b, o * k * k, h * w)


class ReferenceKernels:
    """``kernels.shifted_planes``'s ``sum_shifted``, ``input_grad`` and ``weight_grad`` in torch,
    same signatures and results (up to rounding): the oracle of the CPU tests."""

    sum_shifted = staticmethod(sum_shifted_reference)

    @staticmethod
    def input_grad(grad_out, taps, like, k):
        dx = torch.einsum("btp,tc->bcp", shifted_grad_reference(grad_out, k), taps)
        return torch.empty_like(like).copy_(dx.view(like.shape))  # like's dtype and layout

    @staticmethod
    def weight_grad(grad_out, x, k):
        b, c = x.shape[:2]
        dtaps = torch.einsum("btp,bcp->tc", shifted_grad_reference(grad_out, k),
                             x.reshape(b, c, -1))
        return dtaps if dtaps.dtype == torch.float64 else dtaps.float()


def conv_functions(kernels) -> tuple[Callable, Callable]:
    """The split tail convolution and the head convolution as autograd Functions on ``kernels``
    (``kernels.shifted_planes`` on CUDA, :class:`ReferenceKernels` in the tests); each computes
    ``F.conv2d(x, weight, bias, padding=k // 2)`` in the autocast dtype. The tail's backward
    gathers grad_z on chip (``input_grad`` and ``weight_grad``) instead of building it
    (``gather_shifted``) for two batched products: H100, bf16, batch 256, 64 -> 3 at 32 x 128:
    see ``docs/speed.md``."""

    class SplitConv(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x, weight, bias):
            dtype = compute_dtype_for(x)  # the autocast dtype in training, as conv2d would compute
            taps, xc, k = tap_rows(weight).to(dtype), x.to(dtype), weight.shape[2]
            ctx.save_for_backward(xc, taps)
            ctx.k, ctx.x_dtype, ctx.weight_dtype = k, x.dtype, weight.dtype
            ctx.bias_dtype = None if bias is None else bias.dtype
            return kernels.sum_shifted(planes(taps, xc), bias, k, x.shape[2], x.shape[3])

        @staticmethod
        def backward(ctx, grad_out):
            xc, taps = ctx.saved_tensors
            g = grad_out.to(taps.dtype)
            dx = None
            if ctx.needs_input_grad[0]:
                dx = kernels.input_grad(g, taps, xc, ctx.k).to(ctx.x_dtype)
            o, c, k = g.shape[1], taps.shape[1], ctx.k
            dw = kernels.weight_grad(g, xc, k).view(o, k, k, c).permute(0, 3, 1, 2)
            return dx, dw.to(ctx.weight_dtype), _bias_grad(grad_out, ctx.bias_dtype)

    class HeadConv(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x, weight, bias):
            dtype = compute_dtype_for(x)
            xc, wc, k = x.to(dtype), weight.to(dtype), weight.shape[2]
            ctx.save_for_backward(xc, wc)
            ctx.x_dtype, ctx.weight_dtype = x.dtype, weight.dtype
            ctx.bias_dtype = None if bias is None else bias.dtype
            return F.conv2d(xc, wc, None if bias is None else bias.to(dtype), padding=k // 2)

        @staticmethod
        def backward(ctx, grad_out):
            xc, wc = ctx.saved_tensors
            g = grad_out.to(wc.dtype)
            if not (g.is_contiguous() or g.is_contiguous(memory_format=torch.channels_last)):
                g = g.contiguous()  # weight_grad reads NCHW or channels_last pixels
            o, c, k, _ = wc.shape  # o many (64), c few (3)
            dx = None
            if ctx.needs_input_grad[0]:
                # the 'same' convolution of g with w[o, c, k-1-i, k-1-j] as (c, o) weights: a
                # tail's forward, many -> few channels
                flipped = wc.transpose(0, 1).flip(2, 3)
                dx = split_conv2d(g, flipped, None, kernels.sum_shifted).to(ctx.x_dtype)
            # dw[o, c, i, j] = sum g[o, y, x] x[c, y + i - p, x + j - p]: the tails' weight
            # gradient with x as the shifted few-channel side, at tap (k-1-i, k-1-j)
            dw = kernels.weight_grad(xc, g, k).view(c, k, k, o).flip(1, 2).permute(3, 0, 1, 2)
            return dx, dw.to(ctx.weight_dtype), _bias_grad(grad_out, ctx.bias_dtype)

    return SplitConv.apply, HeadConv.apply


def _bias_grad(grad_out: torch.Tensor, dtype: torch.dtype | None) -> torch.Tensor | None:
    if dtype is None:
        return None
    wide = torch.promote_types(grad_out.dtype, torch.float32)  # fp32 sums of 16-bit gradients
    if grad_out.shape[1] > 1 and grad_out.is_contiguous(memory_format=torch.channels_last):
        # a column sum of the (pixels, channels) rows, a view: summing (0, 2, 3) of the
        # channels_last tensor took 0.18 ms for the heads' (256, 64, 16, 64) bf16 gradient (H100)
        return grad_out.permute(0, 2, 3, 1).reshape(-1, grad_out.shape[1]).sum(0, dtype=wide).to(
            dtype)
    return grad_out.sum((0, 2, 3), dtype=wide).to(dtype)


_KERNELS = cuda_triton_module("shifted_planes")  # at import: see kernels.cuda_triton_module
_SPLIT_CONV, _HEAD_CONV = conv_functions(_KERNELS) if _KERNELS is not None else (None, None)


class _SameConv2d(nn.Conv2d):
    """A stride-1, 'same'-padded k x k ``nn.Conv2d`` (same parameters, same state_dict) that on
    CUDA, for batches of at least ``split_min_batch``, calls ``function()`` instead where it
    exists; ``split = False`` on the class turns that off (the benchmarks compare both)."""

    split = True
    split_min_batch = 32

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int):
        if kernel_size % 2 != 1:
            raise ValueError(f"a 'same' {type(self).__name__} needs an odd kernel, "
                             f"got {kernel_size}")
        super().__init__(in_channels, out_channels, kernel_size, padding=kernel_size // 2)

    def function(self) -> Callable | None:
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        function = self.function()
        if (self.split and function is not None and x.is_cuda and x.dim() == 4
                and x.shape[0] >= self.split_min_batch):
            return function(x, self.weight, self.bias)
        return super().forward(x)


class TailConv2d(_SameConv2d):
    """A stride-1, 'same'-padded k x k ``nn.Conv2d`` that runs split on CUDA (see the module)
    for batches of at least ``split_min_batch``.

    H100, bf16, 9x9 64 -> 3 at 32 x 128: batch 256 forward + backward cuDNN 5.39-5.61 ms, split
    1.83-1.93 ms (2.05-2.29 ms while the backward built grad_z; 64 -> 4: 5.41-5.46, 2.29-2.43
    and 2.45-2.70 ms; three calls); batch-1 forward cuDNN 0.195 ms, split 0.266 ms. Batches in
    between were not measured; 32 keeps the batch-1 latency path on cuDNN."""

    def function(self) -> Callable | None:
        return _SPLIT_CONV


class HeadConv2d(_SameConv2d):
    """A 'same' k x k convolution from few channels to many (the SR models' 9x9 3 -> 64 heads)
    whose backward, while gradients are recorded, runs on the split kernels (see the module); its
    forward is cuDNN's either way."""

    def function(self) -> Callable | None:
        return _HEAD_CONV if torch.is_grad_enabled() else None


def is_same_conv(conv: nn.Module) -> bool:
    """Whether ``conv`` is a plain stride-1, 'same'-padded, odd square ``nn.Conv2d``."""
    if not isinstance(conv, nn.Conv2d):
        return False
    k = conv.kernel_size[0]
    return (k % 2 == 1 and conv.kernel_size == (k, k) and conv.stride == (1, 1)
            and conv.padding == (k // 2, k // 2) and conv.dilation == (1, 1) and conv.groups == 1
            and conv.padding_mode == "zeros")


def _swap_same_conv(conv: nn.Module, fast: type) -> bool:
    if not is_same_conv(conv):
        return False
    swap_class(conv, fast)
    return True


def split_tail(conv: nn.Module) -> bool:
    """Swap a plain 'same' convolution (an SR tail, many -> few channels) for
    :class:`TailConv2d`; returns whether it did."""
    return _swap_same_conv(conv, TailConv2d)


def split_head(conv: nn.Module) -> bool:
    """Swap a plain 'same' convolution (an SR head, few -> many channels) for
    :class:`HeadConv2d`; returns whether it did."""
    return _swap_same_conv(conv, HeadConv2d)


__all__ = ["HeadConv2d", "ReferenceKernels", "TailConv2d", "conv_functions", "split_conv2d",
           "split_head", "split_tail", "sum_shifted_reference"]
