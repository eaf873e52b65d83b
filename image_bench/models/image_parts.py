"""Building blocks of IMAGE (Zhao et al.) that are not shared with the TSRN family.

- :class:`TransformerStack`: L pre-norm timm-layout blocks + a final LayerNorm (ViT's trunk).
- :class:`ViTEncoder`: patch embedding + TransformerStack; the recognizer's h_0^s (patch
  [H, W//32] on the LR) and the guidance ViT q_VT (patch [2H, W//16] on h-hat, Eq. 7).
- :class:`ConvDecoder`: TSRN's tail (conv3x3+BN, conv3x3 C'->4C', PixelShuffle(2), Mish, conv9x9,
  tanh); it returns the pixel-shuffled map (h-hat of Eq. 6) and the SR image. Used for q_CD and
  for the final SR decoder.
- :class:`Projector`: q_PJ of Eq. 5, four transposed convolutions with BN, then bilinear
  interpolation to the LR grid (TPGSR's "InfoGen" layout).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from image_bench.models.vit import Block, PatchEmbed, init_transformer


class TransformerStack(nn.Module):
    """``depth`` pre-norm encoder blocks, then LayerNorm (the ViT trunk without its embedding)."""

    def __init__(self, dim: int, depth: int, heads: int, mlp_ratio: float):
        super().__init__()
        if depth < 1:
            raise ValueError(f"a transformer stack needs at least one block, got depth {depth}")
        self.blocks = nn.ModuleList(Block(dim, heads, mlp_ratio) for _ in range(depth))
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        init_transformer(self)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            tokens = block(tokens)
        return self.norm(tokens)


class ViTEncoder(nn.Module):
    """Image (B, C, H, W) -> tokens (B, M, D): patches, learned positions, blocks, final norm."""

    def __init__(self, in_channels: int, image_size: tuple[int, int], patch_size: tuple[int, int],
                 dim: int, depth: int, heads: int, mlp_ratio: float):
        super().__init__()
        self.patch_embed = PatchEmbed(in_channels, dim, image_size, patch_size)
        self.num_tokens = self.patch_embed.num_tokens
        self.trunk = TransformerStack(dim, depth, heads, mlp_ratio)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # the patch embedding refuses a map of another size or channel count
        return self.trunk(self.patch_embed(x))


class ConvDecoder(nn.Module):
    """Pixel feature (B, C', H, W) -> (h-hat (B, C', 2H, 2W), SR image (B, 3, 2H, 2W)).

    The layers are TSRN's tail (ORIGINALS §3.1: "block7" conv3x3+BN, conv3x3 C'->4C',
    PixelShuffle(2), Mish, conv9x9, tanh); the paper only says "several convolution layers and a
    pixel shuffle module". The optional ``skip`` is TSRN's global skip (block1 + block7), used by
    the final decoder only: Eq. 6 gives q_CD the single input h_{i-1}^p.

    ``map_grad=False`` returns h-hat detached, for callers whose h-hat takes no gradient (the
    final decoder, and q_CD under detached clues). Same values; but a compiled decoder would
    otherwise be handed a zero gradient for h-hat, made NCHW and copied to h-hat's channels_last
    layout before its backward: 0.29 ms per decoder at batch 256 on the H100, three per IMAGE-2
    step.
    """

    def __init__(self, channels: int = 64, out_channels: int = 3, scale: int = 2):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(channels, channels, 3, padding=1),
                                  nn.BatchNorm2d(channels))
        self.upsample = nn.Sequential(nn.Conv2d(channels, channels * scale * scale, 3, padding=1),
                                      nn.PixelShuffle(scale), nn.Mish())
        self.tail = nn.Conv2d(channels, out_channels, 9, padding=4)

    def forward(self, feature: torch.Tensor, skip: torch.Tensor | None = None,
                map_grad: bool = True):
        x = self.body(feature)
        if skip is not None:
            x = x + skip
        shuffled = self.upsample(x)
        sr = torch.tanh(self.tail(shuffled))
        return (shuffled if map_grad else shuffled.detach()), sr


class Projector(nn.Module):
    """q_PJ (Eq. 5): class distribution (B, M, |A|) -> semantic clue map (B, C', H, W).

    The paper: "four transposed convolution layers followed by batch normalization and a bilinear
    interpolation". Silent on widths and kernels; we take TPGSR's InfoGen (ORIGINALS §3.2): k3,
    no bias, strides 2, 2, 2, (2, 1), paddings 1, 1, 1, (1, 0), each followed by BN + ReLU, widths
    |A| -> 512 -> 128 -> 64 -> C' (TPGSR ends at 32; the paper's c_i^s has C' = 64 channels).
    The M = 32 distributions enter as a 1 x M map with |A| channels; the last layer leaves a
    1 x 251 map, which bilinear interpolation (align_corners=True, as TPGSR) stretches to H x W.
    """

    def __init__(self, num_classes: int, out_channels: int, out_size: tuple[int, int],
                 widths: tuple[int, ...] = (512, 128, 64)):
        super().__init__()
        if len(widths) != 3:
            raise ValueError(f"q_PJ has four transposed convolutions: give 3 hidden widths, "
                             f"got {widths}")
        self.out_size = tuple(out_size)
        chans = (num_classes, *widths, out_channels)
        strides = ((2, 2), (2, 2), (2, 2), (2, 1))
        paddings = ((1, 1), (1, 1), (1, 1), (1, 0))
        layers: list[nn.Module] = []
        for cin, cout, stride, pad in zip(chans[:-1], chans[1:], strides, paddings):
            layers += [nn.ConvTranspose2d(cin, cout, 3, stride, pad, bias=False),
                       nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]
        self.layers = nn.Sequential(*layers)

    def forward(self, probs: torch.Tensor) -> torch.Tensor:
        x = probs.transpose(1, 2).unsqueeze(2)  # (B, |A|, 1, M)
        x = self.layers(x)  # (B, C', 1, 251): one row
        # Bilinear interpolation of a one-row map repeats its interpolated row on every output
        # row, so only the width is interpolated, then expanded: the same values, but the 2-D
        # backward added 16 rows into one with atomics (0.5-0.8 ms per call at batch 256, H100).
        rows = self.out_size[0] if x.shape[-2] == 1 else None
        size = (1, self.out_size[1]) if rows else self.out_size
        x = F.interpolate(x, size=size, mode="bilinear", align_corners=True)
        return x.expand(-1, -1, rows, -1) if rows else x


__all__ = ["ConvDecoder", "Projector", "TransformerStack", "ViTEncoder"]
