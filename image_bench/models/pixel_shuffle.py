"""``nn.PixelShuffle`` whose gradient keeps the channels_last layout of its input (issue 7).

The SR decoders upsample with conv3x3 C' -> 4C', then PixelShuffle(2). In IMAGE's channels_last
training the shuffle's backward (Inductor's fused Mish-backward + pixel-unshuffle kernel, or
aten's) wrote the gradient in NCHW, and cuDNN's convolution backward then re-laid it to
channels_last: one 134 MB copy (256 x 256 x 16 x 64 bf16), 0.44 ms per decoder, three decoders
per IMAGE-2 step on the H100 (``scripts/profile_step.py --by-op``). Here the backward writes the
gradient in channels_last directly when the input was. Same function, no parameters; NCHW
input takes ``F.pixel_shuffle`` as it is.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class _ShuffleKeepingLayout(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, scale: int) -> torch.Tensor:
        ctx.scale = scale
        return F.pixel_shuffle(x, scale)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        grad_x = F.pixel_unshuffle(grad, ctx.scale)
        return grad_x.contiguous(memory_format=torch.channels_last), None


class PixelShuffle(nn.PixelShuffle):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() == 4 and x.shape[1] > 1 and x.is_contiguous(memory_format=torch.channels_last):
            return _ShuffleKeepingLayout.apply(x, self.upscale_factor)
        return F.pixel_shuffle(x, self.upscale_factor)


__all__ = ["PixelShuffle"]
