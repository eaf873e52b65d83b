"""Transformer blocks in three Triton launches for small-batch inference on CUDA.

:func:`fuse_blocks_for_inference` gives every ``vit.Block`` of a model the class
:class:`InferenceBlock` (same parameters, same state_dict keys). Without gradients, on CUDA, with
no mask, 16-bit weights, at most ``MAX_ROWS`` tokens in the batch, at most 64 tokens per sample
and a width <= 256, the block runs ``kernels.block_kernels``; anything else runs the plain block,
which ``accel.optimize.compile_regions`` still compiles for the large batches (that path only:
the Triton launches stay outside the compiled region, as they did when the class was a wrapper
around the block). On the CPU or without triton it is the block itself.
"""

from __future__ import annotations

import torch
from torch import nn

from image_bench.accel.kernels import triton_module
from image_bench.accel.swap import swap_class
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


class InferenceBlock(Block):
    """A ``vit.Block`` that runs as three Triton launches where :func:`fused_block_applies`."""

    _compiled_block = None  # the plain block's compiled forward, set by compile()

    def compile(self, *args, **kwargs) -> None:
        """Compile the plain block's path only, as ``nn.Module.compile`` compiles a module."""
        self._compiled_block = torch.compile(self._block_call, *args, **kwargs)

    def _block_call(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        return Block.forward(self, x, mask)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        if fused_block_applies(self, x, mask):
            return _kernels().block_forward(self, x.contiguous())
        if self._compiled_block is not None:
            return self._compiled_block(x, mask)
        return Block.forward(self, x, mask)


def fuse_blocks_for_inference(model: nn.Module) -> int:
    """Swap every ``vit.Block`` of ``model`` in place; returns how many were swapped."""
    count = 0
    for module in model.modules():
        if isinstance(module, Block) and not isinstance(module, InferenceBlock):
            swap_class(module, InferenceBlock)
            count += 1
    return count


__all__ = ["InferenceBlock", "fuse_blocks_for_inference", "fused_block_applies"]
