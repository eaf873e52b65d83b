"""SVTR (Du et al., IJCAI 2022), paper variant SVTR-B, as the IMAGE paper counts it.

Facts (RECOGNIZERS.md §1b, PaddleOCR ``rec_svtrnet.py`` and the SVTR configs): a "patch embedding"
of two stride-2 3x3 conv-BN-GELU layers (image / 4), three stages of mixing blocks with dims
128/256/384, depths 3/6/9 and heads 4/8/12, eight Local mixers then ten Global ones, MLP ratio 4,
"Conv" merging between stages (3x3 conv, stride (2,1): the height halves, the width stays), and a
last stage that pools to (1, 25), projects by a 1x1 conv without bias to 256 channels, Hardswish and
dropout. The CTC head is one Linear(256 -> 37). No STN: IMAGE's "SVTR 22.70M / 1.90G" is SVTR-B
without rectification at 3x32x128 (22,702k parameters measured there with a 37-class head).

Paper Sec. 3: the image is split into character components (patch embedding), mixed locally
(a 7x11 window around each component, Eq. "Local mixing") and globally (all components), merged
stage by stage in height only, then "combined" into one row of 25 character features for CTC.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from image_bench import charset
from image_bench.models.base import ModelOutput, register
from image_bench.models.recognizer import Recognizer
from image_bench.models.vit import Attention, Mlp, init_transformer


def local_window_mask(height: int, width: int, window: tuple[int, int]) -> torch.Tensor:
    """Additive attention mask (N, N) for the Local mixer: token (h, w) sees only tokens within a
    ``window`` = (wh, ww) box centred on it (|dh| <= wh//2, |dw| <= ww//2), -inf elsewhere.

    As in the original, Local mixing is full attention plus this mask, so its FLOPs equal Global's.
    """
    wh, ww = window
    rows = torch.arange(height).repeat_interleave(width)
    cols = torch.arange(width).repeat(height)
    near = ((rows[:, None] - rows[None, :]).abs() <= wh // 2) & (
        (cols[:, None] - cols[None, :]).abs() <= ww // 2)
    mask = torch.zeros(height * width, height * width)
    return mask.masked_fill(~near, float("-inf"))


def drop_path(x: torch.Tensor, rate: torch.Tensor, training: bool) -> torch.Tensor:
    """Stochastic depth: drop the whole residual branch per sample (SVTR trains with 0.1).

    ``rate`` is a 0-dim tensor, not a float, so that one compiled block serves every depth of the
    linear schedule: torch.compile takes a float as a constant and compiles once per value (18 in
    SVTR-B, per batch size and mode), which ran past dynamo's recompile limit and made the quick
    SVTR pretraining 2.5x slower on the H100 (65 -> 165 s). A rate of 0 keeps every sample."""
    if not training:
        return x
    keep = torch.rand(x.shape[0], *([1] * (x.dim() - 1)), device=x.device) >= rate
    return x * keep.to(x.dtype) / (1.0 - rate)


class MixingBlock(nn.Module):
    """One SVTR mixing block: x + Mixer(LN(x)), then x + MLP(LN(x)).

    The SVTR-B configs set ``prenorm: False``. In PaddleOCR's naming that selects the branch that
    normalises *before* each sub-layer and adds one final LayerNorm after the last stage (its
    ``prenorm: True`` branch is the one that normalises after the residual sum). We follow the
    code, not the flag's name. The mixer is Global attention, or Local attention with the
    7x11 window mask (a registered buffer, so it moves with the model).
    """

    def __init__(self, dim: int, heads: int, grid: tuple[int, int], mixer: str,
                 window: tuple[int, int] = (7, 11), mlp_ratio: float = 4.0,
                 drop_path_rate: float = 0.0):
        super().__init__()
        if mixer not in ("Local", "Global"):
            raise ValueError(f"mixer must be 'Local' or 'Global', got {mixer!r}")
        self.mixer_type = mixer
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = Attention(dim, heads, qkv_bias=True)  # SVTRNet default qkv_bias=True
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))
        self.register_buffer("drop_path_rate", torch.tensor(float(drop_path_rate)),
                             persistent=False)
        mask = local_window_mask(*grid, window) if mixer == "Local" else None
        self.register_buffer("mask", mask, persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mask = None if self.mask is None else self.mask.to(x.dtype)
        x = x + drop_path(self.attn(self.norm1(x), mask), self.drop_path_rate, self.training)
        return x + drop_path(self.mlp(self.norm2(x)), self.drop_path_rate, self.training)


class ConvMerging(nn.Module):
    """"Conv" merging between stages: 3x3 conv, stride (2,1), then LayerNorm over channels."""

    def __init__(self, in_dim: int, out_dim: int):
        super().__init__()
        self.conv = nn.Conv2d(in_dim, out_dim, 3, stride=(2, 1), padding=1)
        nn.init.kaiming_normal_(self.conv.weight)
        self.norm = nn.LayerNorm(out_dim)  # sub_norm: nn.LayerNorm with its default eps

    def forward(self, x: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
        b, _, d = x.shape
        x = self.conv(x.transpose(1, 2).reshape(b, d, *grid))
        return self.norm(x.flatten(2).transpose(1, 2))


def _conv_bn_gelu(cin: int, cout: int) -> nn.Sequential:
    # bias_attr=None in the original's patch embedding: Paddle's default, i.e. the conv has a bias.
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride=2, padding=1), nn.BatchNorm2d(cout),
                         nn.GELU())


@register("svtr")
class SVTR(Recognizer):
    """SVTR with a CTC head; defaults are paper SVTR-B at 3x32x128."""

    def __init__(self, image_size: Sequence[int] = (32, 128), in_channels: int = 3,
                 dims: Sequence[int] = (128, 256, 384), depths: Sequence[int] = (3, 6, 9),
                 heads: Sequence[int] = (4, 8, 12), num_local: int = 8,
                 window: Sequence[int] = (7, 11), mlp_ratio: float = 4.0,
                 out_channels: int = 256, out_frames: int = 25, drop_path_rate: float = 0.1,
                 last_drop: float = 0.1, num_classes: int = charset.NUM_CLASSES,
                 lr_fraction: float = 0.0):
        super().__init__(lr_fraction)
        h, w = (int(s) for s in image_size)
        if h % 16 or w % 4:
            raise ValueError(f"SVTR needs a height divisible by 16 and a width by 4, got {h}x{w}")
        if not (len(dims) == len(depths) == len(heads) == 3):
            raise ValueError("dims, depths and heads need three entries (one per stage)")
        if not 0 <= num_local <= sum(depths):
            raise ValueError(f"num_local must lie in [0, {sum(depths)}], got {num_local}")
        # input_size is a class default; an SVTR built for another size reads at that size.
        self.input_size = (h, w)
        self.in_channels = in_channels
        self.out_frames = out_frames

        # Patch embedding: two stride-2 conv-BN-GELU -> (H/4, W/4) components of dim D1.
        self.patch_embed = nn.Sequential(_conv_bn_gelu(in_channels, dims[0] // 2),
                                         _conv_bn_gelu(dims[0] // 2, dims[0]))
        self.grids = [(h // 4, w // 4), (h // 8, w // 4), (h // 16, w // 4)]
        self.pos_embed = nn.Parameter(torch.zeros(1, self.grids[0][0] * self.grids[0][1], dims[0]))

        mixers = ["Local"] * num_local + ["Global"] * (sum(depths) - num_local)
        rates = torch.linspace(0, drop_path_rate, sum(depths)).tolist()  # linear stochastic depth
        self.stages = nn.ModuleList()
        start = 0
        for stage, (dim, depth, head) in enumerate(zip(dims, depths, heads)):
            self.stages.append(nn.ModuleList(
                MixingBlock(dim, head, self.grids[stage], mixers[start + i], tuple(window),
                            mlp_ratio, rates[start + i])
                for i in range(depth)))
            start += depth
        self.merges = nn.ModuleList([ConvMerging(dims[0], dims[1]), ConvMerging(dims[1], dims[2])])
        self.norm = nn.LayerNorm(dims[2], eps=1e-6)  # the final norm of the prenorm=False branch

        # Combining: pool the (H/16, W/4) map to (1, out_frames), 1x1 conv, Hardswish, dropout.
        self.pool = nn.AdaptiveAvgPool2d((1, out_frames))
        self.last_conv = nn.Conv2d(dims[2], out_channels, 1, bias=False)
        self.hardswish = nn.Hardswish()
        # The original uses Paddle's "downscale_in_infer" dropout; PyTorch's upscale-in-train
        # dropout is the same function up to a constant factor that the head absorbs.
        self.dropout = nn.Dropout(last_drop)
        self.head = nn.Linear(out_channels, num_classes)
        self._init_weights()

    def _init_weights(self) -> None:
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        init_transformer(self)

    def forward(self, images: torch.Tensor) -> ModelOutput:
        if images.dim() != 4 or images.shape[1] != self.in_channels:
            raise ValueError(f"SVTR expects (B, {self.in_channels}, H, W), "
                             f"got {tuple(images.shape)}")
        if tuple(images.shape[-2:]) != tuple(self.input_size):
            raise ValueError(f"this SVTR was built for {self.input_size}, got "
                             f"{tuple(images.shape[-2:])}; use read() to resize")
        x = self.patch_embed(images).flatten(2).transpose(1, 2) + self.pos_embed
        for stage, blocks in enumerate(self.stages):
            if stage > 0:
                x = self.merges[stage - 1](x, self.grids[stage - 1])
            for block in blocks:
                x = block(x)
        x = self.norm(x)
        b, _, d = x.shape
        x = self.pool(x.transpose(1, 2).reshape(b, d, *self.grids[2]))
        x = self.dropout(self.hardswish(self.last_conv(x)))  # (B, C, 1, out_frames)
        return ModelOutput(logits=self.head(x.flatten(2).transpose(1, 2)))  # (B, 25, 37)


__all__ = ["SVTR", "MixingBlock", "ConvMerging", "local_window_mask"]
