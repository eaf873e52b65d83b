"""Convolution + ``PixelShuffle``: the SR decoders' upsampling step (TSRN's conv3x3 C' -> s^2 C').

Same parameters, state_dict and function as ``nn.Conv2d`` followed by ``nn.PixelShuffle(s)``,
which is how the models build it: :func:`shuffle_in_conv` swaps the pair in an ``nn.Sequential``
for :class:`ShuffledConv2d` and :class:`ShuffledAlready` (state_dict keys unchanged: the
shuffle holds no parameter).
What differs is the channels_last path (IMAGE's training, issue 7). ``PixelShuffle`` reads its
input's channels in (c, i, j) order: output channel c at sub-position (i, j) comes from input
channel c s^2 + i s + j. In channels_last memory that is a transpose of C' x s^2 values inside
each pixel. Every access of the copy (and of its gradient, the unshuffle) is then strided: on the
H100 the fused Mish-backward + unshuffle kernel of one IMAGE decoder at batch 256 (256 x 256 x
16 x 64 bf16) took 0.63 ms, about five times its bytes at full bandwidth.

So on channels_last input the convolution computes its output channels in (i, j, c) order (its
weight rows and bias permuted, a 147K-value gather per call) and the shuffle becomes a copy of
contiguous runs of s C' values, one way in the forward and the other in the backward. The
gradients are those of the plain form (the permutation is part of the autograd graph), and
NCHW input (the CPU and eval paths, the cost counter) takes ``F.pixel_shuffle`` as it is.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from image_bench.accel.swap import swap_class


class ShuffledConv2d(nn.Conv2d):
    """``nn.Conv2d(in_channels, out_channels * scale**2, kernel_size)`` then PixelShuffle(scale):
    (B, C_in, H, W) -> (B, out_channels, scale H, scale W)."""

    def __init__(self, in_channels: int, out_channels: int, scale: int, kernel_size: int = 3):
        super().__init__(in_channels, out_channels * scale * scale, kernel_size,
                         padding=kernel_size // 2)
        self.scale = scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = self.scale
        if not x.is_contiguous(memory_format=torch.channels_last) or x.shape[1] == 1:
            return F.pixel_shuffle(super().forward(x), s)
        c = self.out_channels // (s * s)
        # rows c s^2 + i s + j -> (i s + j) C' + c
        weight = (self.weight.unflatten(0, (c, s * s)).transpose(0, 1).flatten(0, 1)
                  .contiguous(memory_format=torch.channels_last))
        bias = None if self.bias is None else self.bias.view(c, s * s).t().reshape(-1)
        y = self._conv_forward(x, weight, bias)  # channels_last: memory (B, H, W, s, s, C')
        b, _, h, w = y.shape
        nhwc = y.permute(0, 2, 3, 1).view(b, h, w, s, s, c)
        # (B, H, i, W, j, C') is the shuffled map in channels_last memory: runs of s C' values
        out = nhwc.permute(0, 1, 3, 2, 4, 5).reshape(b, h * s, w * s, c)
        return out.permute(0, 3, 1, 2)


class ShuffledAlready(nn.PixelShuffle):
    """The ``nn.PixelShuffle`` after a :class:`ShuffledConv2d`, which shuffled already."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


def shuffle_in_conv(seq: nn.Sequential) -> int:
    """Swap every ``Conv2d`` + ``PixelShuffle`` pair of ``seq``; returns how many."""
    count = 0
    layers = list(seq)
    for conv, shuffle in zip(layers, layers[1:]):
        if type(conv) is nn.Conv2d and type(shuffle) is nn.PixelShuffle:
            conv.scale = shuffle.upscale_factor
            swap_class(conv, ShuffledConv2d)
            swap_class(shuffle, ShuffledAlready)
            count += 1
    return count


__all__ = ["ShuffledAlready", "ShuffledConv2d", "shuffle_in_conv"]
