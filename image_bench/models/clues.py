"""Text clues for clue-guided STISR (TPGSR, C3-STISR): the pieces both methods share.

- :class:`InfoGen`: TPGSR's projector of a recognizer's probability sequence (B, T, 37) to a
  spatial clue map, resized to the LR feature size (16x64).
- :func:`prior_dropout`: TPGSR's 25% prior dropout (the first floor(B/4) samples get no clue).
- :func:`text_prior_loss`: TPGSR's TP loss, L1 + KL between the TPG's output on LR and a frozen
  recognizer's output on HR.
- :class:`GlyphRenderer`: C3-STISR's visual clue, the recognized text drawn as an image, on the
  device from precomputed glyph bitmaps.
- :class:`DeformableDepthwiseConv`, :class:`SpatialClueAttention`, :class:`DeformFuser`,
  :class:`GatedFusion`: C3-STISR's clue refinement and fusion modules.

Layer facts are from the released code (ORIGINALS.md §3.2, §3.4: mjq11302010044/TPGSR and
JingyeChen/C3-STISR); the code here is the suite's own.
"""

from __future__ import annotations

import functools
import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.parametrizations import weight_norm

from image_bench import charset

# ---------------------------------------------------------------------------------------------
# Recognition clue: probability sequence -> clue map (TPGSR "InfoGen")


class InfoGen(nn.Module):
    """Four transposed convolutions (k3, no bias), each followed by BN + ReLU, that spread a
    probability sequence (B, T, classes) seen as a (classes)x1xT map into ``out_channels`` maps,
    then a bilinear resize (align_corners=True, as the originals) to ``size``.

    Channel widths 37 -> 512 -> 128 -> 64 -> out. Strides 2, 2, 2, (2, 1). TPGSR pads the first
    three by 1 (output 1 x (8T-5)); C3-STISR's copy leaves the first two unpadded (``c3_padding``;
    output 25 x (8T+5)). Both hold the same parameters (853,952 for 37 -> 32).
    """

    def __init__(self, in_channels: int = charset.NUM_CLASSES, out_channels: int = 32,
                 size: tuple[int, int] = (16, 64), c3_padding: bool = False,
                 widths: tuple[int, int, int] = (512, 128, 64)):
        super().__init__()
        first_pad = 0 if c3_padding else 1
        w1, w2, w3 = widths  # the originals' 512, 128, 64; smaller only for tiny test models
        spec = [(in_channels, w1, 2, first_pad), (w1, w2, 2, first_pad), (w2, w3, 2, 1),
                (w3, out_channels, (2, 1), (1, 0) if not c3_padding else 1)]
        layers: list[nn.Module] = []
        for cin, cout, stride, pad in spec:
            layers += [nn.ConvTranspose2d(cin, cout, 3, stride, pad, bias=False),
                       nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]
        self.net = nn.Sequential(*layers)
        self.size = size

    def forward(self, probs: torch.Tensor) -> torch.Tensor:
        if probs.dim() != 3:
            raise ValueError(f"InfoGen expects a probability sequence (B, T, C), got "
                             f"{tuple(probs.shape)}")
        x = probs.transpose(1, 2).unsqueeze(2)  # (B, C, 1, T), TPGSR's text-prior layout
        x = self.net(x)
        return F.interpolate(x, size=self.size, mode="bilinear", align_corners=True)


def prior_dropout(probs: torch.Tensor, training: bool) -> torch.Tensor:
    """TPGSR's prior dropout: in training the first floor(B/4) samples of the batch get an
    all-zero text prior (so the SR network also learns to work without one); never at eval."""
    if not training:
        return probs
    b = probs.shape[0]
    keep = (torch.arange(b, device=probs.device) >= b // 4).to(probs.dtype)
    return probs * keep.view(b, *([1] * (probs.dim() - 1)))


def text_prior_loss(p_lr: torch.Tensor, p_hr: torch.Tensor) -> torch.Tensor:
    """TPGSR's TP loss: 100 * (mean |p_LR - p_HR| + KL(p_HR || p_LR)).

    The KL term is PyTorch's ``KLDivLoss(log p_LR, p_HR)`` with its default 'mean' reduction
    (mean over every element), as the original; written out to avoid that reduction's warning.
    """
    p_lr = p_lr.float()
    p_hr = p_hr.float().detach()
    l1 = (p_lr - p_hr).abs().mean()
    log_lr = torch.log(p_lr.clamp_min(1e-12))
    kl = (p_hr * (torch.log(p_hr.clamp_min(1e-12)) - log_lr)).mean()
    return 100.0 * (l1 + kl)


# ---------------------------------------------------------------------------------------------
# Visual clue: the recognized text drawn as an image


@functools.lru_cache(maxsize=4)
def glyph_atlas(height: int = 32, width: int = 20, supersample: int = 4) -> np.ndarray:
    """Anti-aliased bitmaps (NUM_CLASSES, height, width) in [0, 1] of every symbol of the
    alphabet in DejaVu Sans Mono (bundled with matplotlib, so no font download); row 0, the CTC
    blank, is empty. Rasterised once from the font outlines (TextPath), baseline shared by all
    glyphs so that a word drawn from them reads like set text."""
    from matplotlib.font_manager import FontProperties
    from matplotlib.path import Path as MplPath
    from matplotlib.textpath import TextPath

    prop = FontProperties(family="DejaVu Sans Mono")
    # Vertical frame of the cell in font units (size 1): descender to ascender of the font.
    bottom, top = -0.24, 0.78
    advance = 0.602  # DejaVu Sans Mono's advance width at size 1
    ss = supersample
    ys = top - (np.arange(height * ss) + 0.5) * (top - bottom) / (height * ss)
    xs = (np.arange(width * ss) + 0.5) * advance / (width * ss)
    points = np.stack(np.meshgrid(xs, ys), axis=-1).reshape(-1, 2)
    atlas = np.zeros((charset.NUM_CLASSES, height, width), dtype=np.float32)
    for index, symbol in enumerate(charset.ALPHABET, start=1):
        path = TextPath((0, 0), symbol, size=1, prop=prop)
        # Even-odd fill over the closed contours: the counters of 'o', '0', 'a' ... stay empty.
        inside = np.zeros(len(points), dtype=bool)
        for polygon in path.to_polygons():
            inside ^= MplPath(polygon).contains_points(points)
        inside = inside.reshape(height * ss, width * ss)
        atlas[index] = inside.reshape(height, ss, width, ss).mean(axis=(1, 3))
    return atlas


class GlyphRenderer(nn.Module):
    """Draws the text a probability sequence spells (greedy CTC: argmax, merge repeats, drop
    blanks) as ink maps: (B, T, 37) -> (B, 1, height, width), ink = 1.

    Everything runs as tensor ops on the input's device: the glyph atlas is a buffer, the CTC
    collapse is a cumsum/scatter, and each output column looks up the column of the glyph of the
    character whose slot it falls in. The n characters share the width equally, each glyph
    stretched to its slot (the suite's choice: TextZoom crops are tight around the word, so the
    drawn word spans the crop too; the C3 paper does not give its layout).
    """

    def __init__(self, height: int = 32, width: int = 128, glyph_width: int = 20):
        super().__init__()
        self.height, self.width = height, width
        atlas = torch.from_numpy(glyph_atlas(height, glyph_width))
        self.register_buffer("atlas", atlas, persistent=False)

    @torch.no_grad()
    def forward(self, probs: torch.Tensor) -> torch.Tensor:
        if probs.dim() != 3 or probs.shape[-1] != self.atlas.shape[0]:
            raise ValueError(f"expected probabilities (B, T, {self.atlas.shape[0]}), got "
                             f"{tuple(probs.shape)}")
        b, t, _ = probs.shape
        idx = probs.argmax(dim=-1)  # (B, T); an all-zero (dropped) prior gives blanks only
        prev = F.pad(idx, (1, 0), value=charset.BLANK)[:, :-1]
        keep = (idx != charset.BLANK) & (idx != prev)
        count = keep.sum(dim=1, keepdim=True)  # (B, 1) characters per word
        slot = torch.where(keep, keep.cumsum(dim=1) - 1, torch.full_like(idx, t))
        chars = idx.new_zeros(b, t + 1).scatter_(1, slot, idx)[:, :t]  # (B, T) text, blank-padded
        cols = torch.arange(self.width, device=probs.device, dtype=torch.float32)
        pos = (cols + 0.5) / self.width * count.float()  # (B, W) position in characters
        which = pos.floor().long().clamp(min=0, max=t - 1)
        which = torch.minimum(which, (count - 1).clamp(min=0))
        char_at = chars.gather(1, which)  # (B, W); blank (empty glyph) for empty words
        glyph_w = self.atlas.shape[-1]
        u = ((pos - which.float()) * glyph_w).long().clamp(0, glyph_w - 1)
        ink = self.atlas[char_at, :, u]  # (B, W, H)
        return ink.permute(0, 2, 1).unsqueeze(1).to(probs.dtype)


# ---------------------------------------------------------------------------------------------
# C3-STISR clue refinement: modulated deformable convolution and spatial attention


class DeformableDepthwiseConv(nn.Module):
    """Modulated deformable convolution (DCNv2) with one group and one offset group per input
    channel, stride 1, 'same' padding: torchvision's ``DeformConv2d(c, m*c, k, padding=k//2,
    groups=c)`` as C3-STISR uses it, written with ``grid_sample`` (torchvision is not a
    dependency of the suite).

    ``offset`` (B, 2*C*k*k, H, W) holds (dy, dx) per channel and kernel tap; ``mask``
    (B, C*k*k, H, W) the modulation in [0, 1]. Samples outside the map read zero.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3):
        super().__init__()
        if out_channels % in_channels:
            raise ValueError("out_channels must be a multiple of in_channels (depthwise groups)")
        self.in_channels, self.out_channels, self.k = in_channels, out_channels, kernel_size
        self.weight = nn.Parameter(torch.empty(out_channels, 1, kernel_size, kernel_size))
        self.bias = nn.Parameter(torch.empty(out_channels))
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))
        bound = 1 / math.sqrt(kernel_size * kernel_size)
        nn.init.uniform_(self.bias, -bound, bound)

    def forward(self, x: torch.Tensor, offset: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        k2 = self.k * self.k
        if offset.shape[1] != 2 * c * k2 or mask.shape[1] != c * k2:
            raise ValueError("offset/mask channel counts do not match the input")
        taps = torch.arange(self.k, device=x.device, dtype=x.dtype) - self.k // 2
        ty, tx = torch.meshgrid(taps, taps, indexing="ij")
        off = offset.view(b, c, k2, 2, h, w)
        ys = torch.arange(h, device=x.device, dtype=x.dtype).view(1, 1, 1, h, 1)
        xs = torch.arange(w, device=x.device, dtype=x.dtype).view(1, 1, 1, 1, w)
        y = ys + ty.reshape(1, 1, k2, 1, 1) + off[:, :, :, 0]
        xx = xs + tx.reshape(1, 1, k2, 1, 1) + off[:, :, :, 1]
        # Pixel centres at (2i + 1) / size - 1 in grid_sample's align_corners=False frame: exact
        # integer positions read exact pixels, for any map size (1-pixel-high maps included).
        grid = torch.stack([(2 * xx + 1) / w - 1, (2 * y + 1) / h - 1], dim=-1)
        sampled = F.grid_sample(x.reshape(b * c, 1, h, w), grid.view(b * c, k2 * h, w, 2),
                                mode="bilinear", padding_mode="zeros", align_corners=False)
        sampled = sampled.view(b, c, k2, h, w) * mask.view(b, c, k2, h, w)
        weight = self.weight.view(c, self.out_channels // c, k2)
        out = torch.einsum("bckhw,cmk->bcmhw", sampled, weight).reshape(b, self.out_channels, h, w)
        return out + self.bias.view(1, -1, 1, 1)


def _conv(cin: int, cout: int, k: int, stride: int = 1, padding: int | None = None) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, k, stride, k // 2 if padding is None else padding)


class SpatialClueAttention(nn.Module):
    """C3-STISR's per-clue spatial attention ("DSTA" in the release): an enhanced-spatial-attention
    block whose coarse branch (strided conv, 7x7/3 max-pool) is refined by a modulated deformable
    convolution whose offsets come from two scales, plus a channel gate from its pooled output.
    Returns ``x * spatial_mask * channel_gate``. Layer list as the release (35,848 parameters for
    32 channels); the input must be at least 16 pixels high (the clue maps are 16x64)."""

    def __init__(self, channels: int = 32):
        super().__init__()
        f = channels // 4
        self.f = f
        self.reduce = _conv(channels, f, 1)
        self.skip = _conv(f, f, 1)
        self.stride_conv = _conv(f, f, 3, stride=2, padding=0)
        self.range_conv = _conv(f, f, 3)
        self.conv_a = _conv(f, f, 3)
        self.conv_b = _conv(f, f, 3)
        self.offsets = _conv(f, 3 * 9 * f, 3)  # (dy, dx, modulation) per channel and tap
        self.down = nn.Sequential(_conv(f, f, 3, stride=2), nn.ReLU(inplace=True))
        self.offsets_coarse = _conv(f, 3 * 9 * f, 3)
        self.dcn = DeformableDepthwiseConv(f, f, 3)
        self.expand = _conv(f, channels, 1)
        self.channel_gate = nn.Sequential(nn.Conv2d(f, 2 * f, 1), nn.ReLU(inplace=True),
                                          nn.Conv2d(2 * f, channels, 1), nn.Sigmoid())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        reduced = self.reduce(x)
        coarse = F.max_pool2d(self.stride_conv(reduced), kernel_size=7, stride=3)
        feat = F.relu(self.range_conv(coarse))
        feat = F.relu(self.conv_b(F.relu(self.conv_a(feat))))
        fine = self.offsets(feat)
        far = F.interpolate(self.offsets_coarse(self.down(feat)), size=fine.shape[-2:],
                            mode="bilinear", align_corners=False)
        off_mask = fine + far
        n_off = 2 * 9 * self.f
        feat = F.relu(self.dcn(coarse, off_mask[:, :n_off], torch.sigmoid(off_mask[:, n_off:])))
        gate = self.channel_gate(F.adaptive_avg_pool2d(feat, 1))
        feat = F.interpolate(feat, size=x.shape[-2:], mode="bilinear", align_corners=False)
        spatial = torch.sigmoid(self.expand(feat + self.skip(reduced)))
        return x * spatial * gate


class DeformFuser(nn.Module):
    """C3-STISR's visual-clue fuser ("vis_rec_fuser"): a small U-Net (``levels`` scales of
    ``width`` channels) predicts per-channel offsets and modulation for a deformable depthwise
    convolution over its input, which aligns the drawn glyphs with the recognition map."""

    def __init__(self, in_channels: int, out_channels: int = 32, width: int = 32,
                 levels: int = 4):
        super().__init__()
        relu = functools.partial(nn.ReLU, inplace=True)
        self.in_conv = nn.Sequential(_conv(in_channels, width, 3), relu())
        self.down = nn.ModuleList(
            nn.Sequential(_conv(width, width, 3, stride=2), relu(), _conv(width, width, 3), relu())
            for _ in range(levels - 1))
        self.bottom = nn.Sequential(_conv(width, width, 3, stride=2), relu(),
                                    _conv(width, width, 3), relu(),
                                    nn.ConvTranspose2d(width, width, 4, 2, 1), relu())
        self.up = nn.ModuleList(
            nn.Sequential(_conv(2 * width, width, 3), relu(),
                          nn.ConvTranspose2d(width, width, 4, 2, 1), relu())
            for _ in range(levels - 1))
        self.out_conv = nn.Sequential(_conv(width, width, 3), relu())
        self.offsets = _conv(width, 3 * 9 * in_channels, 3)
        self.dcn = DeformableDepthwiseConv(in_channels, out_channels, 3)
        self.in_channels = in_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips = [self.in_conv(x)]
        for down in self.down:
            skips.append(down(skips[-1]))
        feat = self.bottom(skips[-1])
        for up, skip in zip(reversed(self.up), reversed(skips[1:])):
            feat = up(torch.cat([feat, skip], dim=1))
        off_mask = self.offsets(self.out_conv(feat))
        n_off = 2 * 9 * self.in_channels
        return F.relu(self.dcn(x, off_mask[:, :n_off], torch.sigmoid(off_mask[:, n_off:])))


class GatedFusion(nn.Module):
    """C3-STISR's clue fusion: every clue h_i is stacked with a guide map g of the LR image and
    passed through its own gate branch (weight-normalised 1x1 conv, ReLU, depthwise 3x3 convs of
    dilation 1, 2, 4, 8); a 1x1 compression of all branches gives one score map per clue and
    channel, a softmax over the clues turns them into gates, and the fused clue is
    h_t = sum_i gate_i * h_i. With three clues (the paper); the release wires only two."""

    def __init__(self, channels: int = 32, num_clues: int = 3):
        super().__init__()
        c2 = 2 * channels

        def branch() -> nn.Sequential:
            layers: list[nn.Module] = [weight_norm(nn.Conv2d(c2, c2, 1, bias=False)),
                                       nn.ReLU(inplace=True)]
            for d in (1, 2, 4, 8):
                layers.append(weight_norm(nn.Conv2d(c2, c2, 3, padding=d, dilation=d, groups=c2)))
            return nn.Sequential(*layers)

        self.branches = nn.ModuleList(branch() for _ in range(num_clues))
        self.compress = nn.Sequential(
            nn.LeakyReLU(0.2),
            weight_norm(nn.Conv2d(num_clues * c2, num_clues * channels, 1, bias=False)))
        self.channels, self.num_clues = channels, num_clues

    def forward(self, guide: torch.Tensor, clues: list[torch.Tensor]) -> torch.Tensor:
        if len(clues) != self.num_clues:
            raise ValueError(f"expected {self.num_clues} clues, got {len(clues)}")
        maps = [branch(torch.cat([guide, clue], dim=1))
                for branch, clue in zip(self.branches, clues)]
        b, _, h, w = guide.shape
        scores = self.compress(torch.cat(maps, dim=1)).view(b, self.num_clues, self.channels, h, w)
        gates = torch.softmax(scores, dim=1)
        return (gates * torch.stack(clues, dim=1)).sum(dim=1)


__all__ = ["InfoGen", "prior_dropout", "text_prior_loss", "glyph_atlas", "GlyphRenderer",
           "DeformableDepthwiseConv", "SpatialClueAttention", "DeformFuser", "GatedFusion"]
