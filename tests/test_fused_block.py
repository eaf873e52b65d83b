"""CPU tests of the Triton transformer block's class (``accel.fused_block``).

The kernels run on the GPU (``image-bench bench --check``). Here: swapping a model's blocks, and
that on the CPU the swapped block is exactly the plain one, under the same state_dict keys.
"""

from __future__ import annotations

import torch

from image_bench.accel.fused_block import (
    InferenceBlock,
    fuse_blocks_for_inference,
    fused_block_applies,
)
from image_bench.models.image_parts import TransformerStack


def test_swapping_every_block_keeps_the_stack_output_and_keys_on_the_cpu():
    torch.manual_seed(0)
    stack = TransformerStack(dim=32, depth=3, heads=4, mlp_ratio=2.0).eval()
    x = torch.randn(2, 5, 32)
    keys = list(stack.state_dict())
    with torch.no_grad():
        before = stack(x)
        assert fuse_blocks_for_inference(stack) == 3
        after = stack(x)
    assert all(isinstance(b, InferenceBlock) for b in stack.blocks)
    assert list(stack.state_dict()) == keys
    torch.testing.assert_close(after, before, rtol=0, atol=0)
    assert fuse_blocks_for_inference(stack) == 0  # nothing left to swap


def test_compiling_an_inference_block_compiles_the_plain_path_only(monkeypatch):
    """``compile_regions`` calls ``module.compile``: for an InferenceBlock that compiles the
    plain block's forward, so the Triton launches stay outside the compiled region."""
    compiled = []
    monkeypatch.setattr(torch, "compile", lambda fn, **kw: compiled.append(fn) or fn)
    block = TransformerStack(dim=32, depth=1, heads=4, mlp_ratio=2.0).blocks[0].eval()
    fuse_blocks_for_inference(block)
    block.compile(dynamic=False)
    assert compiled == [block._block_call]
    x = torch.randn(1, 4, 32)
    with torch.no_grad():
        torch.testing.assert_close(block(x), block._block_call(x), rtol=0, atol=0)


def test_the_kernels_never_apply_on_the_cpu_to_fp32_weights_or_with_a_mask():
    block = TransformerStack(dim=32, depth=1, heads=4, mlp_ratio=2.0).blocks[0]
    with torch.no_grad():
        assert not fused_block_applies(block, torch.randn(1, 4, 32), None)  # fp32 weights
        half = block.to(torch.bfloat16)
        assert not fused_block_applies(half, torch.randn(1, 4, 32, dtype=torch.bfloat16), None)
        meta = torch.randn(1, 4, 32, device="meta")
        assert not fused_block_applies(half, meta, torch.zeros(4, 4, device="meta"))
