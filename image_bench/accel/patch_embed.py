"""The patch embedding (``models.vit.PatchEmbed``) as one product with the patches, and in the
channels_last layout without single-value gathers.

The plain form is a convolution with stride = kernel. cuDNN picked a 1.7 ms weight-gradient kernel
(``wgrad_alg1``) for q_VT's 32x4 patches at batch 256 on the H100, 4% of IMAGE-2's training step,
where patches @ W^T is one well-shaped GEMM: same function, same parameters and the same counted
MACs. ``AlignedPatchEmbed`` pads the output width to a multiple of 8 (``accel.aligned_block``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from image_bench.accel.aligned_block import aligned_linear
from image_bench.models.vit import PatchEmbed


class FastPatchEmbed(PatchEmbed):
    aligned = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.check(x)
        b, c, h, w = x.shape
        ph, pw = self.patch_size
        # (B, C, H, W) -> (B, tokens, patch features), tokens row-major as conv output's flatten(2)
        if c > 1 and x.is_contiguous(memory_format=torch.channels_last):
            # features ordered (ph, pw, C), the weight's columns to match: the copy then moves
            # runs of pw * C values (q_VT's h-hat in IMAGE's training: 0.29 ms per call at batch
            # 256 on the H100 when it gathered single values)
            patches = (x.permute(0, 2, 3, 1).reshape(b, h // ph, ph, w // pw, pw, c)
                       .permute(0, 1, 3, 2, 4, 5).reshape(b, self.num_tokens, ph * pw * c))
            weight = self.proj.weight.permute(0, 2, 3, 1).flatten(1)
        else:
            patches = (x.reshape(b, c, h // ph, ph, w // pw, pw).permute(0, 2, 4, 1, 3, 5)
                       .reshape(b, self.num_tokens, c * ph * pw))
            weight = self.proj.weight.flatten(1)
        linear = aligned_linear if self.aligned else F.linear
        return linear(patches, weight, self.proj.bias) + self.pos_embed


class AlignedPatchEmbed(FastPatchEmbed):
    aligned = True


__all__ = ["AlignedPatchEmbed", "FastPatchEmbed"]
