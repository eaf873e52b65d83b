"""Transformer blocks in three Triton launches for small-batch inference on CUDA.

:func:`fuse_blocks_for_inference` wraps every ``vit.Block`` of a model (an inference copy: the
state_dict names gain ``.block``) in :class:`InferenceBlock`. Without gradients, on CUDA, with
no mask, 16-bit weights, at most ``MAX_ROWS`` tokens in the batch, at most 64 tokens per sample
and a width <= 256, the wrapper runs ``kernels.block_kernels``; anything else goes to the wrapped
block, which ``engine.optimize.compile_regions`` still compiles for the large batches. On the
CPU or without triton it is the block itself.
"""

from __future__ import annotations

import torch
from torch import nn

from image_bench.accel.kernels import triton_module
from image_bench.models.vit import Block

WEIGHT_DTYPES = (torch.bfloat16, torch.float16)
# Batch-1 calls are what the kernels are for (32-64 tokens); the compiled block's cuBLAS GEMMs
# are kept for large batches, where the kernels were not measured.
MAX_ROWS = 512


def _kernels():
    return triton_module("block_kernels")


def fused_block_applies(block: Block, x: torch.Tensor, mask: torch.Tensor | None) -> bool:
    """Whether the Triton path computes ``block(x, mask)`` (else the block runs)."""
    if mask is not None or not x.is_cuda or x.dim() != 3 or x.numel() == 0:
        return False
    params = list(block.parameters())
    wdt = params[0].dtype
    if wdt not in WEIGHT_DTYPES or any(p.dtype != wdt for p in params):
        return False
    if torch.is_grad_enabled() and (x.requires_grad or any(p.requires_grad for p in params)):
        return False  # forward only: no backward kernels
    if torch.is_autocast_enabled("cuda") and torch.get_autocast_dtype("cuda") != wdt:
        return False  # autocast would compute in another dtype than the kernels
    kernels = _kernels()
    b, n, d = x.shape
    return (kernels is not None and block.attn.qkv.bias is not None
            and x.dtype in (torch.float32, *WEIGHT_DTYPES) and b * n <= MAX_ROWS
            and n <= kernels.MAX_TOKENS and d <= kernels.MAX_DIM)


class InferenceBlock(nn.Module):
    """A ``vit.Block`` that runs as three Triton launches where :func:`fused_block_applies`."""

    def __init__(self, block: Block):
        super().__init__()
        self.block = block

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        if fused_block_applies(self.block, x, mask):
            return _kernels().block_forward(self.block, x.contiguous())
        return self.block(x, mask)


def fuse_blocks_for_inference(model: nn.Module) -> int:
    """Wrap every ``vit.Block`` of ``model`` in place; returns how many were wrapped."""
    count = 0
    for parent in list(model.modules()):
        if isinstance(parent, InferenceBlock):
            continue  # already wrapped
        for name, child in list(parent.named_children()):
            if isinstance(child, Block):
                setattr(parent, name, InferenceBlock(child))
                count += 1
    return count


__all__ = ["InferenceBlock", "fuse_blocks_for_inference", "fused_block_applies"]
