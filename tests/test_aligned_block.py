"""The aligned transformer block (issue 7): same function, same gradients, switched on only where
the widths need it. float64 on the CPU: the padded terms are exact zeros, so the two forms agree
to rounding."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from image_bench.accel import aligned_block
from image_bench.accel.aligned_block import (
    AlignedBlock,
    aligned,
    needs_alignment,
    split_count,
    weight_grad,
)
from image_bench.accel.optimize import align_blocks
from image_bench.accel.patch_embed import AlignedPatchEmbed, FastPatchEmbed
from image_bench.models.image import IMAGE
from image_bench.models.vit import Block, PatchEmbed


def forward_and_grads(block: Block, x: torch.Tensor, mask, aligned_path: bool):
    block.__class__ = AlignedBlock if aligned_path else Block  # what align_blocks swaps
    block.zero_grad(set_to_none=True)
    x = x.clone().requires_grad_(True)
    out = block(x, mask)
    (out * torch.linspace(-1, 1, out.numel(), dtype=out.dtype).view_as(out)).sum().backward()
    return out.detach(), x.grad, {n: p.grad for n, p in block.named_parameters()}


@pytest.mark.parametrize("dim,heads,mlp_ratio,tokens,masked,qkv_bias", [
    (196, 4, 4.0, 7, False, True),   # IMAGE's widths: 196 -> 200, heads 49 -> 56
    (196, 4, 4.0, 5, True, True),    # with an additive attention mask
    (20, 2, 1.3, 3, False, True),    # hidden 26 -> 32 as well
    (196, 4, 4.0, 3, False, False),  # no qkv bias: nothing rides in the pad column
    (48, 4, 2.0, 3, False, True),    # D aligned, heads of 12 -> 16: no pad column for the bias
])
def test_aligned_block_computes_the_same_function_and_gradients(dim, heads, mlp_ratio, tokens,
                                                                 masked, qkv_bias):
    torch.manual_seed(0)
    block = Block(dim, heads, mlp_ratio, qkv_bias).double()
    for p in block.parameters():  # non-trivial LayerNorm and biases too
        torch.nn.init.normal_(p, std=0.1)
    x = torch.randn(2, tokens, dim, dtype=torch.float64)
    mask = torch.randn(tokens, tokens, dtype=torch.float64) if masked else None
    ref_out, ref_dx, ref_grads = forward_and_grads(block, x, mask, aligned_path=False)
    out, dx, grads = forward_and_grads(block, x, mask, aligned_path=True)
    torch.testing.assert_close(out, ref_out, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(dx, ref_dx, rtol=1e-12, atol=1e-12)
    assert grads.keys() == ref_grads.keys()
    for name in grads:
        assert grads[name].shape == ref_grads[name].shape, name  # the parameters' own shapes
        torch.testing.assert_close(grads[name], ref_grads[name], rtol=1e-12, atol=1e-12)


def test_alignment_arithmetic():
    assert [aligned(n) for n in (1, 8, 49, 196, 784)] == [8, 8, 56, 200, 784]
    assert needs_alignment(196, 4)          # IMAGE: 392-byte rows, 98-byte heads
    assert needs_alignment(64, 3)           # heads of 21
    assert not needs_alignment(256, 8)      # SVTR's widest stage: heads of 32


def test_only_the_blocks_that_need_it_are_aligned():
    image = IMAGE(1, vit_depth=1, fuser_depth=1, clue_vit_depth=1)
    assert align_blocks(image) == 3
    blocks = [m for m in image.modules() if isinstance(m, Block)]
    assert len(blocks) == 3 and all(isinstance(b, AlignedBlock) for b in blocks)
    assert all(isinstance(e, AlignedPatchEmbed) for e in image.modules()
               if isinstance(e, PatchEmbed))
    tiny = Block(16, 2)  # 16 wide, heads of 8: aligned already
    assert align_blocks(tiny) == 0 and type(tiny) is Block


@pytest.mark.parametrize("fast", [PatchEmbed, FastPatchEmbed, AlignedPatchEmbed])
@pytest.mark.parametrize("layout", [torch.contiguous_format, torch.channels_last])
def test_patch_embedding_as_a_product_equals_the_strided_convolution(fast, layout):
    torch.manual_seed(0)
    embed = PatchEmbed(5, 196, (8, 12), (4, 3)).double()
    embed.__class__ = fast
    x = torch.randn(2, 5, 8, 12, dtype=torch.float64).contiguous(memory_format=layout)
    conv = F.conv2d(x, embed.proj.weight, embed.proj.bias, stride=(4, 3))
    expected = conv.flatten(2).transpose(1, 2) + embed.pos_embed
    out = embed(x)
    torch.testing.assert_close(out, expected, rtol=1e-12, atol=1e-12)
    out.square().sum().backward()
    weight_grad = embed.proj.weight.grad.clone()
    embed.zero_grad()
    expected.square().sum().backward()
    torch.testing.assert_close(weight_grad, embed.proj.weight.grad, rtol=1e-12, atol=1e-12)


def test_sr_parts_are_regions_only_when_asked():
    from image_bench.accel.optimize import region_types
    from image_bench.models.srb import SRB
    from image_bench.models.stn import STN

    assert Block in region_types() and not {SRB, STN, PatchEmbed} & set(region_types())
    assert {Block, SRB, STN, PatchEmbed} <= set(region_types(sr_parts=True))


@pytest.mark.parametrize("fast", [PatchEmbed, FastPatchEmbed])
def test_patch_embedding_refuses_an_input_of_the_wrong_size(fast):
    embed = PatchEmbed(5, 16, (8, 12), (4, 3))
    embed.__class__ = fast
    for shape in [(1, 5, 8, 15), (1, 5, 12, 8), (1, 4, 8, 12)]:  # 12x8 would tile, transposed
        with pytest.raises(ValueError, match="patch embedding"):
            embed(torch.zeros(shape))


def test_training_compiles_sr_parts_and_combo_kernels_only_for_long_runs(monkeypatch):
    from image_bench.accel import optimize

    real = optimize.compile_regions
    calls = []
    monkeypatch.setattr(optimize, "compile_regions", lambda model, **kw: calls.append(kw) or [])
    from image_bench.models import base

    image = base.build("image-1", vit_depth=1, fuser_depth=1, clue_vit_depth=1)
    for samples in (256_000, optimize.SR_COMPILE_PAYS_FROM, optimize.COMBO_KERNELS_PAY_FROM):
        optimize.compile_for_training(image, samples)
    optimize.compile_for_training(base.build("tpgsr"), optimize.COMBO_KERNELS_PAY_FROM)
    # combo kernels only where measured (IMAGE), and only for long runs
    assert [(c["sr_parts"], c["combo"]) for c in calls] == [(False, False), (True, False),
                                                           (True, True), (True, False)]
    with pytest.raises(ValueError, match="mode or options"):
        real(Block(16, 2), mode="max-autotune", combo=True)


def test_split_count_halves_the_rows_down_to_the_slice_size():
    rows = (8192, 16384, 8000, 2048, 1000, 1024 * 64)
    assert [split_count(r) for r in rows] == [8, 16, 4, 2, 1, 16]


def test_sliced_weight_gradient_equals_the_plain_product(monkeypatch):
    torch.manual_seed(0)
    dy, x = torch.randn(48, 5, dtype=torch.float64), torch.randn(48, 7, dtype=torch.float64)
    monkeypatch.setattr(aligned_block, "SPLIT_ROWS", 4)  # 48 rows -> 8 slices of 6
    assert split_count(48) == 8
    torch.testing.assert_close(weight_grad(dy, x), dy.t() @ x, rtol=1e-12, atol=1e-12)
    grad16 = weight_grad(dy.bfloat16(), x.bfloat16())  # 16-bit operands: an fp32 result
    assert grad16.dtype == torch.float32
    torch.testing.assert_close(grad16.double(), dy.bfloat16().double().t() @ x.bfloat16().double(),
                               rtol=1e-6, atol=1e-6)


def test_aligned_block_with_sliced_weight_gradients(monkeypatch):
    """The block's own products through the sliced path (2 slices of 7 rows here)."""
    monkeypatch.setattr(aligned_block, "SPLIT_ROWS", 2)
    torch.manual_seed(1)
    block = Block(196, 4).double()
    for p in block.parameters():
        torch.nn.init.normal_(p, std=0.1)
    x = torch.randn(2, 7, 196, dtype=torch.float64)
    ref_out, ref_dx, ref_grads = forward_and_grads(block, x, None, aligned_path=False)
    out, dx, grads = forward_and_grads(block, x, None, aligned_path=True)
    torch.testing.assert_close(out, ref_out, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(dx, ref_dx, rtol=1e-12, atol=1e-12)
    for name in grads:
        torch.testing.assert_close(grads[name], ref_grads[name], rtol=1e-12, atol=1e-12)
