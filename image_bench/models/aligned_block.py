"""A transformer block computed on zero-padded, tensor-core-aligned operands (issue 7).

IMAGE's width D = 196 and head width 49 (Sec. 3.3; chosen to land the paper's parameter count)
make each bf16 row of the blocks' matrix-product operands 392 or 98 bytes, not a multiple of
16. cuBLAS then has to use its 2-byte-aligned sm80 kernels (``..._align2``; ``align1`` for the
attention products): in IMAGE-2's training step those GEMMs were 41 of 97 ms (H100).

Here the same block runs with its operands padded: D to ``aligned(D)`` (196 -> 200) and each head
to ``aligned(D / heads)`` (49 -> 56). The padded weight rows and columns are zeros, made from the
real parameters on every call (``F.pad``, which the compiled block fuses with the bf16 cast
autocast does anyway), so every padded product equals the unpadded one: the extra terms are exact
zeros. Parameters, state_dict, gradients and the counted cost (fvcore counts the plain block,
which the CPU and eager paths keep) do not change. The activation pads fuse into the LayerNorm
kernels and the output slices into the residual adds, so only the compiled block gains:
``engine.optimize.compile_regions(..., align=True)`` turns it on for the blocks that need it, in
training (IMAGE-2 on the H100: 2,522 -> 2,928 samples/s, GEMMs 40.7 -> 28.8 ms per step;
docs/speed.md). Not in inference, which is not graphed at large batches: the pads are more
launches, and there the launches bound the call.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from image_bench.models.attention import attend
from image_bench.models.padded_linear import padded_linear

ALIGN = 8  # 16-byte rows for 2-byte (bf16/fp16) elements


def aligned(n: int) -> int:
    return -(-n // ALIGN) * ALIGN


def needs_alignment(dim: int, heads: int) -> bool:
    return dim % ALIGN != 0 or (dim // heads) % ALIGN != 0


def _pad_last(t: torch.Tensor, size: int) -> torch.Tensor:
    return t if t.shape[-1] == size else F.pad(t, (0, size - t.shape[-1]))


def aligned_linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None):
    """``F.linear`` with the output width padded to a multiple of 8, then sliced back."""
    out, width = weight.shape
    return padded_linear(x, weight, bias, (out, aligned(out)), (width, width))[..., :out]


def aligned_block_forward(block, x: torch.Tensor, mask: torch.Tensor | None = None):
    """``vit.Block.forward`` on padded operands: x + MHSA(LN1(x)), then x1 + MLP(LN2(x1))."""
    attn, mlp = block.attn, block.mlp
    b, n, d = x.shape
    h = attn.heads
    dh = d // h
    tokens, head = (d, aligned(d)), (dh, aligned(dh))  # D 196 -> 200, each head 49 -> 56
    y = _pad_last(block.norm1(x), tokens[1])
    qkv = padded_linear(y, attn.qkv.weight, attn.qkv.bias, head, tokens)  # (b, n, 3 h 56)
    heads_out = attend(qkv, h, attn.scale, mask)  # (b, n, h * 56)
    x1 = x + padded_linear(heads_out, attn.proj.weight, attn.proj.bias, tokens, head)[..., :d]
    hid = mlp.fc1.out_features
    hidden_side = (hid, aligned(hid))
    z = _pad_last(block.norm2(x1), tokens[1])
    hidden = mlp.act(padded_linear(z, mlp.fc1.weight, mlp.fc1.bias, hidden_side, tokens))
    return x1 + padded_linear(hidden, mlp.fc2.weight, mlp.fc2.bias, tokens, hidden_side)[..., :d]


__all__ = ["aligned", "aligned_block_forward", "aligned_linear", "needs_alignment"]
