"""Transformer parts for IMAGE's recognizer and ViTs, and for SVTR's global mixers.

The layout (and so the state_dict names) is timm's ``vision_transformer.Block``: pre-norm,
``attn.qkv``/``attn.proj``, ``mlp.fc1``/``mlp.fc2``. timm itself is not imported: every timm
release imports torchvision, whose PyPI build links the CUDA build of torch, so it cannot be
imported beside the CPU build this suite tests on. Plain torch: the attention is written out
(:func:`attention`), which fvcore counts through its matmul handler; the Triton attention, the
aligned blocks and the patch copies of the channels_last layout live in ``image_bench.accel``.
"""

from __future__ import annotations

import torch
from torch import nn


def attention(qkv: torch.Tensor, heads: int, scale: float,
              mask: torch.Tensor | None = None) -> torch.Tensor:
    """softmax(q k^T * scale + mask) v per head: qkv (B, n, 3 * heads * d_h) as the qkv projection
    gives it -> (B, n, heads * d_h) as the output projection reads it."""
    b, n, width = qkv.shape
    q, k, v = qkv.view(b, n, 3, heads, width // (3 * heads)).permute(2, 0, 3, 1, 4)
    scores = (q * scale) @ k.transpose(-2, -1)
    if mask is not None:
        scores = scores + mask
    attn = scores.softmax(dim=-1).to(v.dtype)  # float32 under autocast (its fp32 list)
    return (attn @ v).transpose(1, 2).reshape(b, n, width // 3)


class Attention(nn.Module):
    """Multi-head self-attention, softmax(q k^T / sqrt(d_h) + mask) v, with an additive mask.

    Not ``F.scaled_dot_product_attention``: IMAGE's heads are 196 / 4 = 49 wide, which the flash
    kernels pad to 56 (copying q, k, v and the output on every call), and with 32-64 tokens the
    two products are small. Written out and compiled, IMAGE-2 trained 6.6% faster on the H100
    than through SDPA (2,164 -> 2,306 samples/s); on CUDA ``accel.attention`` runs its own
    kernels in its place.
    """

    def __init__(self, dim: int, heads: int, qkv_bias: bool = True):
        super().__init__()
        if dim % heads:
            raise ValueError(f"dim {dim} is not divisible by {heads} heads")
        self.heads = heads
        self.scale = (dim // heads) ** -0.5
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        return self.proj(attention(self.qkv(x), self.heads, self.scale, mask))


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class Block(nn.Module):
    """Pre-norm transformer encoder layer: x + MHSA(LN(x)), then x + MLP(LN(x))."""

    def __init__(self, dim: int, heads: int, mlp_ratio: float = 4.0, qkv_bias: bool = True):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = Attention(dim, heads, qkv_bias)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        x = x + self.attn(self.norm1(x), mask)
        return x + self.mlp(self.norm2(x))


class PatchEmbed(nn.Module):
    """Non-overlapping patches -> tokens (a convolution with stride = kernel), plus a learned
    position embedding."""

    def __init__(self, in_channels: int, dim: int, image_size, patch_size):
        super().__init__()
        gh, gw = image_size[0] // patch_size[0], image_size[1] // patch_size[1]
        if gh * patch_size[0] != image_size[0] or gw * patch_size[1] != image_size[1]:
            raise ValueError(f"patch {patch_size} does not tile image {image_size}")
        self.num_tokens = gh * gw
        self.image_size, self.patch_size = tuple(image_size), tuple(patch_size)
        self.proj = nn.Conv2d(in_channels, dim, kernel_size=patch_size, stride=patch_size)
        self.pos_embed = nn.Parameter(torch.zeros(1, self.num_tokens, dim))
        nn.init.trunc_normal_(self.pos_embed, std=0.02)

    def check(self, x: torch.Tensor) -> None:
        """Refuse a map of another size or channel count."""
        if tuple(x.shape[1:]) != (self.proj.in_channels, *self.image_size):
            raise ValueError(f"patch embedding reads (B, {self.proj.in_channels}, "
                             f"{self.image_size[0]}, {self.image_size[1]}), got {tuple(x.shape)}")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.check(x)
        # (B, D, H/ph, W/pw) -> (B, tokens, D), tokens row-major
        return self.proj(x).flatten(2).transpose(1, 2) + self.pos_embed


def init_transformer(module: nn.Module) -> None:
    """timm's ViT initialisation: truncated-normal(0.02) linear weights, zero biases, unit LN.
    Matters for the deep stacks (16-30 blocks): PyTorch's default Kaiming-uniform linear init makes
    the pre-norm residual stream grow with depth."""
    for m in module.modules():
        if isinstance(m, nn.Linear):
            nn.init.trunc_normal_(m.weight, std=0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.LayerNorm):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
