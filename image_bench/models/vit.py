"""Transformer parts for IMAGE's recognizer and ViTs, and for SVTR's global mixers.

The layout (and so the state_dict names) is timm's ``vision_transformer.Block``: pre-norm,
``attn.qkv``/``attn.proj``, ``mlp.fc1``/``mlp.fc2``. timm itself is not imported: every timm
release imports torchvision, whose PyPI build links the CUDA build of torch, so it cannot be
imported beside the CPU build this suite tests on. The attention core is ``models.attention``:
Triton kernels on CUDA in 16-bit, elsewhere two matrix products and a softmax (see
:class:`Attention` for why not SDPA); fvcore, which counts in fp32, counts both products through
its matmul handler.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from image_bench.accel.aligned_block import aligned_block_forward, aligned_linear
from image_bench.accel.attention import attend


class Attention(nn.Module):
    """Multi-head self-attention, softmax(q k^T / sqrt(d_h) + mask) v, with an additive mask.

    Not ``F.scaled_dot_product_attention``: IMAGE's heads are 196 / 4 = 49 wide, which the flash
    kernels pad to 56 (copying q, k, v and the output on every call), and with 32-64 tokens the
    two products are small. Written out and compiled, IMAGE-2 trained 6.6% faster on the H100
    than through SDPA (2,164 -> 2,306 samples/s, scripts/gpu_explore.py); :func:`attend` now
    runs its own kernels on CUDA.
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
        return self.proj(attend(self.qkv(x), self.heads, self.scale, mask))


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class Block(nn.Module):
    """Pre-norm transformer encoder layer: x + MHSA(LN(x)), then x + MLP(LN(x)).

    ``aligned = True`` computes the same function on zero-padded operands (models/aligned_block.py;
    set by ``engine.optimize.compile_regions(..., align=True)`` for training, where D or the head
    width is not a multiple of 8)."""

    aligned = False

    def __init__(self, dim: int, heads: int, mlp_ratio: float = 4.0, qkv_bias: bool = True):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = Attention(dim, heads, qkv_bias)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        if self.aligned:
            return aligned_block_forward(self, x, mask)
        x = x + self.attn(self.norm1(x), mask)
        return x + self.mlp(self.norm2(x))


class PatchEmbed(nn.Module):
    """Non-overlapping patches -> tokens, plus a learned position embedding.

    The patch projection is a convolution with stride = kernel (its parameters keep that layout)
    computed as patches @ W^T: cuDNN picked a 1.7 ms weight-gradient kernel (``wgrad_alg1``) for
    q_VT's 32x4 patches at batch 256 on the H100, 4% of IMAGE-2's training step, where the
    product is one well-shaped GEMM. Same function and the same counted MACs (fvcore).
    ``aligned`` pads the output width to a multiple of 8 (models/aligned_block.py)."""

    aligned = False

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

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        ph, pw = self.patch_size
        if (c, h, w) != (self.proj.in_channels, *self.image_size):
            raise ValueError(f"patch embedding reads (B, {self.proj.in_channels}, "
                             f"{self.image_size[0]}, {self.image_size[1]}), got {tuple(x.shape)}")
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
