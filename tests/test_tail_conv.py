"""CPU tests of the split tail convolution (``accel.tail_conv``).

The Triton shifted sum runs on the GPU (``image-bench bench --check``, in the models). Here:
the decomposition it implements (one product to O*k*k planes, then a shifted sum) against
``F.conv2d`` in float64, forward and every gradient; the tail's and the head's autograd Functions
the GPU runs, on the torch forms of their kernels (``ReferenceKernels``), same check; and that
``TailConv2d`` and ``HeadConv2d`` are ``nn.Conv2d`` on the CPU with the same state_dict.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from image_bench.accel.tail_conv import (
    HeadConv2d,
    ReferenceKernels,
    TailConv2d,
    conv_functions,
    split_conv2d,
)


def _matches_conv2d(function, shape, out_channels, k, layout=torch.contiguous_format):
    """function(x, weight, bias) against F.conv2d in float64, output and every gradient; x and
    the output gradient in ``layout``."""
    torch.manual_seed(0)
    x = torch.randn(*shape, dtype=torch.float64).contiguous(memory_format=layout)
    x.requires_grad_(True)
    weight = torch.randn(out_channels, shape[1], k, k, dtype=torch.float64, requires_grad=True)
    bias = torch.randn(out_channels, dtype=torch.float64, requires_grad=True)
    grad_out = torch.randn(shape[0], out_channels, *shape[2:], dtype=torch.float64)
    grad_out = grad_out.contiguous(memory_format=layout)

    expected = F.conv2d(x, weight, bias, padding=k // 2)
    got = function(x, weight, bias)
    torch.testing.assert_close(got, expected, rtol=1e-12, atol=1e-12)
    for a, b in zip(torch.autograd.grad(got, (x, weight, bias), grad_out),
                    torch.autograd.grad(expected, (x, weight, bias), grad_out)):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("shape,out_channels,k", [
    ((2, 64, 8, 16), 3, 9),   # the SR tail, on a small map
    ((1, 5, 3, 7), 4, 9),     # a kernel wider than the map: most taps fall outside
    ((3, 6, 5, 5), 2, 3),
    ((1, 1, 1, 1), 1, 1),
])
def test_split_convolution_equals_conv2d_with_every_gradient(shape, out_channels, k):
    _matches_conv2d(split_conv2d, shape, out_channels, k)


@pytest.mark.parametrize("which", [0, 1], ids=["tail", "head"])
@pytest.mark.parametrize("shape,out_channels,k,layout", [
    ((2, 64, 8, 16), 3, 9, torch.channels_last),      # the SR tail, on a small map, as trained
    ((2, 3, 8, 16), 64, 9, torch.channels_last),      # the SR head
    ((2, 64, 8, 16), 4, 9, torch.contiguous_format),
    ((1, 5, 3, 7), 4, 9, torch.contiguous_format),    # a kernel wider than the map
    ((3, 6, 5, 5), 2, 3, torch.channels_last),
    ((1, 1, 1, 1), 1, 1, torch.contiguous_format),
])
def test_conv_functions_equal_conv2d_with_every_gradient(which, shape, out_channels, k, layout):
    """The autograd Functions that run on the Triton kernels on CUDA, here on their torch forms:
    the tap orders, flips and transposes of their backward, in float64 (the channels_last cases
    take the bias gradient's column-sum path)."""
    _matches_conv2d(conv_functions(ReferenceKernels)[which], shape, out_channels, k, layout)


@pytest.mark.parametrize("which", [0, 1], ids=["tail", "head"])
def test_conv_functions_without_input_gradient_or_bias(which):
    function = conv_functions(ReferenceKernels)[which]
    torch.manual_seed(1)
    x = torch.randn(2, 8, 6, 10, dtype=torch.float64)
    weight = torch.randn(3, 8, 5, 5, dtype=torch.float64, requires_grad=True)
    grad_out = torch.randn(2, 3, 6, 10, dtype=torch.float64)
    (got,) = torch.autograd.grad(function(x, weight, None), weight, grad_out)
    (expected,) = torch.autograd.grad(F.conv2d(x, weight, padding=2), weight, grad_out)
    torch.testing.assert_close(got, expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("cls,in_channels,out_channels", [(TailConv2d, 64, 3),
                                                          (HeadConv2d, 3, 64)])
def test_wide_convs_are_conv2d_on_the_cpu_with_the_same_state_dict(cls, in_channels,
                                                                  out_channels):
    torch.manual_seed(0)
    reference = nn.Conv2d(in_channels, out_channels, 9, padding=4)
    conv = cls(in_channels, out_channels, 9)
    assert set(conv.state_dict()) == {"weight", "bias"}
    conv.load_state_dict(reference.state_dict())
    x = torch.randn(2, in_channels, 6, 10)
    torch.testing.assert_close(conv(x), reference(x), rtol=0, atol=0)


@pytest.mark.parametrize("cls", [TailConv2d, HeadConv2d])
def test_wide_convs_refuse_an_even_kernel(cls):
    with pytest.raises(ValueError, match="odd kernel"):
        cls(64, 3, 8)


@pytest.mark.parametrize("layout", [torch.contiguous_format, torch.channels_last])
@pytest.mark.parametrize("scale", [2, 3])
def test_shuffled_conv_is_conv_then_pixel_shuffle(layout, scale):
    """Same values and gradients (float64) as Conv2d + PixelShuffle; channels_last stays so."""
    from image_bench.accel.pixel_shuffle import ShuffledConv2d

    torch.manual_seed(0)
    conv = ShuffledConv2d(5, 4, scale).double().to(memory_format=layout)
    plain = nn.Conv2d(5, 4 * scale * scale, 3, padding=1).double()
    plain.load_state_dict(conv.state_dict())  # the same parameter names and shapes
    x = torch.randn(2, 5, 3, 7, dtype=torch.float64).contiguous(memory_format=layout)
    x.requires_grad_(True)
    out = conv(x)
    expected = F.pixel_shuffle(plain(x), scale)
    assert out.shape == (2, 4, 3 * scale, 7 * scale)
    torch.testing.assert_close(out, expected, rtol=0, atol=1e-12)
    assert out.is_contiguous(memory_format=layout)
    grad_out = torch.randn_like(out)
    got = torch.autograd.grad(out, (x, conv.weight, conv.bias), grad_out)
    want = torch.autograd.grad(expected, (x, plain.weight, plain.bias), grad_out)
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w, rtol=0, atol=1e-12)
    assert got[0].is_contiguous(memory_format=layout)
