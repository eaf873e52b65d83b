"""A transformer block computed on zero-padded, tensor-core-aligned operands (issue 7).

IMAGE's width D = 196 and head width 49 (Sec. 3.3; chosen to land the paper's parameter count)
make each bf16 row of the blocks' matrix-product operands 392 or 98 bytes, not a multiple of
16. cuBLAS then has to use its 2-byte-aligned sm80 kernels (``..._align2``; ``align1`` for the
attention products): in IMAGE-2's training step those GEMMs were 41 of 97 ms (H100).

Here the same block runs with its operands padded: D to ``aligned(D)`` (196 -> 200) and each head
to ``aligned(D / heads)`` (49 -> 56). The padded weight rows and columns are zeros, made from the
real parameters on every call (``F.pad``, which the compiled block fuses with the bf16 cast
autocast does anyway), so every padded product equals the unpadded one: the extra terms are exact
zeros (where the input side has a pad, the first pad column carries the bias instead: see
``aligned_block_forward``). Parameters, state_dict, gradients and the counted cost (fvcore
counts the plain block, which the CPU and eager paths keep) do not change. The activation pads
fuse into the LayerNorm kernels and the output slices into the residual adds, so only the
compiled block gains:
``accel.optimize.compile_regions(..., align=True)`` swaps ``vit.Block`` for :class:`AlignedBlock`
(and the patch embeddings for ``accel.patch_embed.AlignedPatchEmbed``) where they need it, in
training (IMAGE-2 on the H100: 2,522 -> 2,928 samples/s, GEMMs 40.7 -> 28.8 ms per step;
docs/speed.md). Not in inference, which is not graphed at large batches: the pads are more
launches, and there the launches bound the call.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from image_bench.accel.attention import attend
from image_bench.accel.kernels import cuda_triton_module
from image_bench.accel.kernels.bigru import compute_dtype_for
from image_bench.models.vit import Block

ALIGN = 8  # 16-byte rows for 2-byte (bf16/fp16) elements
# Rows (tokens x batch) per slice of a weight-gradient product; see weight_grad.
SPLIT_ROWS = 1024


def aligned(n: int) -> int:
    return -(-n // ALIGN) * ALIGN


def needs_alignment(dim: int, heads: int) -> bool:
    return dim % ALIGN != 0 or (dim // heads) % ALIGN != 0


def _pad_last(t: torch.Tensor, size: int) -> torch.Tensor:
    return t if t.shape[-1] == size else F.pad(t, (0, size - t.shape[-1]))


def _pad_heads(t: torch.Tensor, heads: int, head_dim: int, padded_head: int) -> torch.Tensor:
    """(..., heads * head_dim) -> (..., heads * padded_head): zeros after each head's columns."""
    split = t.unflatten(-1, (heads, head_dim))
    return _pad_last(split, padded_head).flatten(-2)


def aligned_linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None):
    """``F.linear`` with the output width padded to a multiple of 8, then sliced back."""
    out = weight.shape[0]
    padded = F.pad(weight, (0, 0, 0, aligned(out) - out))
    bias = None if bias is None else _pad_last(bias, aligned(out))
    return F.linear(x, padded, bias)[..., :out]


def split_count(rows: int) -> int:
    """Slices of the rows for :func:`weight_grad`: halved down to SPLIT_ROWS rows each, at most 16,
    only while they divide evenly (8 for IMAGE-2's 8,192 rows, 16 for 16,384)."""
    s = 1
    while s < 16 and rows % (2 * s) == 0 and rows // (2 * s) >= SPLIT_ROWS:
        s *= 2
    return s


def weight_grad(dy: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """dW = dY^T X for dY (rows, O) and X (rows, I), summed over the rows in slices: one batched
    product of (O, I) partials, then their sum. The blocks' weights are small (O, I <= 784) and the
    rows many (8,192-16,384), so cuBLAS's plain product has few output tiles for 132 SMs (an fc1
    weight gradient at 32 tokens: 77 tiles, 18 us on the H100, the sliced product 11 us). From
    16-bit operands the partials and their sum are fp32 (cuBLAS's ``out_dtype``), where the plain
    product rounded dW to bf16 (relative error 1.7e-3 against float64; sliced: 1e-6)."""
    rows, o = dy.shape
    s = split_count(rows)
    sixteen = dy.dtype in (torch.bfloat16, torch.float16)
    if sixteen and not dy.is_cuda:  # cuBLAS's out_dtype only; the CPU accumulates in fp32 anyway
        return dy.t().float() @ x.float()
    if s == 1:
        return torch.mm(dy.t(), x, out_dtype=torch.float32) if sixteen else dy.t() @ x
    dy_s, x_s = dy.view(s, rows // s, o).transpose(1, 2), x.view(s, rows // s, x.shape[1])
    partial = torch.bmm(dy_s, x_s, out_dtype=torch.float32) if sixteen else torch.bmm(dy_s, x_s)
    return sum_partials(partial)


_PARTIAL_SUM = cuda_triton_module("partial_sum")  # at import: it runs inside compiled regions


@torch.library.custom_op("image_bench::sum_partials", mutates_args=())
def sum_partials(partial: torch.Tensor) -> torch.Tensor:
    """``partial.sum(0)``, opaque to Inductor: left to it, Inductor fused this sum into the
    blocks' LayerNorm-backward reductions, which then ran slower than the plain product had
    (H100, one IMAGE block at 32 tokens: 274 -> 295 us forward + backward; opaque: 270 us).
    On CUDA a Triton kernel (``kernels.partial_sum``), elsewhere torch."""
    if (_PARTIAL_SUM is not None and partial.is_cuda and partial.dtype == torch.float32
            and partial.shape[0] <= 16):
        return _PARTIAL_SUM.sum_partials(partial)
    return partial.sum(0)


@sum_partials.register_fake
def _(partial):
    return partial.new_empty(partial.shape[1:])


class _SlicedLinear(torch.autograd.Function):
    """``F.linear(x, weight, bias)`` in x's dtype (the autocast dtype: bf16 in training) from a
    weight kept in its own (fp32), whose weight gradient is :func:`weight_grad`'s sliced product
    in that dtype; dx and the bias gradient as autograd computes them."""

    @staticmethod
    def forward(ctx, x, weight, bias):
        w = weight.to(x.dtype)
        ctx.save_for_backward(x, w)
        ctx.weight_dtype = weight.dtype
        ctx.has_bias = bias is not None
        return F.linear(x, w, None if bias is None else bias.to(x.dtype))

    @staticmethod
    def backward(ctx, dy):
        x, w = ctx.saved_tensors
        dy2 = dy.reshape(-1, dy.shape[-1])
        dx = (dy2 @ w).view(x.shape) if ctx.needs_input_grad[0] else None
        dw = weight_grad(dy2, x.reshape(-1, x.shape[-1])).to(ctx.weight_dtype)
        db = dy2.sum(0, dtype=ctx.weight_dtype) if ctx.has_bias else None
        return dx, dw, db


def _linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """The blocks' products: x in the compute dtype, the weight gradient sliced (_SlicedLinear)."""
    return _SlicedLinear.apply(x.to(compute_dtype_for(x)), weight, bias)


class _ContiguousGrad(torch.autograd.Function):
    """The identity, whose backward makes the gradient contiguous. The gradients of a weight and
    its bias joined by ``torch.cat`` are views of one tensor; a compiled region returns them as
    such, and autograd then copies each into a contiguous ``.grad`` in a kernel of its own (432
    per IMAGE-2 step on the H100). Made contiguous here, inside the region, the copy fuses into
    the kernel that slices and casts them."""

    @staticmethod
    def forward(ctx, t):
        return t.view_as(t)

    @staticmethod
    def backward(ctx, grad):
        return grad.contiguous()


def _fold_bias(weight: torch.Tensor, bias: torch.Tensor | None, width: int):
    """(O, d) -> (O, width) with the bias as column d where there is room, zeros after. Returns
    that weight, the bias still to add (None where folded in) and whether it was folded (the
    input then needs its column of ones)."""
    if bias is None or weight.shape[1] >= width:
        return _pad_last(weight, width), bias, False
    joined = torch.cat([_ContiguousGrad.apply(weight), _ContiguousGrad.apply(bias)[:, None]], 1)
    return _pad_last(joined, width), None, True


def _input_with_one(y: torch.Tensor, width: int, one: bool) -> torch.Tensor:
    """(..., d) -> (..., width): a column of ones first where ``one``, zeros after."""
    if one:
        y = torch.cat([y, y.new_ones(*y.shape[:-1], 1)], -1)
    return _pad_last(y, width)


def aligned_block_forward(block, x: torch.Tensor, mask: torch.Tensor | None = None):
    """``vit.Block.forward`` on padded operands: x + MHSA(LN1(x)), then x1 + MLP(LN2(x1)).

    Where the input side is padded (qkv and fc1: D 196 -> 200), the bias is the weight's first
    pad column and the input's first pad column is 1: the product adds the bias, and the bias
    gradient comes out of the weight-gradient product as that column, where autograd had summed
    the output gradient's rows in a kernel of its own (2 per block)."""
    attn, mlp = block.attn, block.mlp
    b, n, d = x.shape
    h = attn.heads
    dh = d // h
    dp, dhp = aligned(d), aligned(dh)

    # Attention: q, k, v of each head padded to dhp columns, the tokens' width to dp.
    w_qkv, b_qkv, one = _fold_bias(attn.qkv.weight, attn.qkv.bias, dp)
    w_qkv = F.pad(w_qkv.unflatten(0, (3, h, dh)), (0, 0, 0, dhp - dh)).reshape(3 * h * dhp, dp)
    if b_qkv is not None:
        b_qkv = _pad_last(b_qkv.view(3, h, dh), dhp).flatten()
    y = _input_with_one(block.norm1(x), dp, one)
    # attn.scale is dh ** -0.5: the real width
    heads_out = attend(_linear(y, w_qkv, b_qkv), h, attn.scale, mask)  # (b, n, h * dhp)
    w_proj = F.pad(_pad_heads(attn.proj.weight, h, dh, dhp), (0, 0, 0, dp - d))  # (dp, h * dhp)
    x1 = x + _linear(heads_out, w_proj, _pad_last(attn.proj.bias, dp))[..., :d]

    # MLP: D and the hidden width (IMAGE: 4 D = 784, aligned already) padded; GELU(0) = 0.
    hid = mlp.fc1.out_features
    hp = aligned(hid)
    w_fc1, b_fc1, one = _fold_bias(mlp.fc1.weight, mlp.fc1.bias, dp)
    w_fc1 = F.pad(w_fc1, (0, 0, 0, hp - hid))  # (hp, dp)
    if b_fc1 is not None:
        b_fc1 = _pad_last(b_fc1, hp)
    z = _input_with_one(block.norm2(x1), dp, one)
    hidden = mlp.act(_linear(z, w_fc1, b_fc1))
    w_fc2 = F.pad(_pad_last(mlp.fc2.weight, hp), (0, 0, 0, dp - d))  # (dp, hp)
    return x1 + _linear(hidden, w_fc2, _pad_last(mlp.fc2.bias, dp))[..., :d]


class AlignedBlock(Block):
    """``vit.Block`` (same parameters) computed by :func:`aligned_block_forward`."""

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        return aligned_block_forward(self, x, mask)


__all__ = ["AlignedBlock", "aligned", "aligned_block_forward", "aligned_linear",
           "needs_alignment"]
