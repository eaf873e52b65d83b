"""GPU levers shared by the trainer and the bench.

Profiling IMAGE-1's bf16 training step on the H100 (scripts/profile_step.py) showed 88 ms of GPU
work per 256-sample step but 200 ms of wall time: the step is bound by launching ~1,400 small
element-wise kernels (LayerNorm, GELU, residual adds and their backward), not by arithmetic.
Compiling the repeated blocks fuses those kernels. Compiling each block on its own ("regional"
compilation) instead of the whole model keeps compile time short: identical blocks share one
compiled graph (parameters are graph inputs), where compiling IMAGE-2 whole took over 130 s.
"""

from __future__ import annotations

import torch
from torch import nn


def region_types() -> tuple[type[nn.Module], ...]:
    """The repeated blocks worth compiling one by one: transformer layers of IMAGE and SVTR.

    SRBs are left to the fused GRU kernel: nn.GRU breaks dynamo graphs."""
    from baselines.svtr import MixingBlock
    from image_bench.models.vit import Block

    return (Block, MixingBlock)


def compile_regions(model: nn.Module, mode: str | None = None) -> list[str]:
    """torch.compile every repeated block of ``model`` in place (``mode`` as torch.compile's);
    returns their names."""
    types = region_types()
    # SVTR's local and global mixers differ only in their mask buffer, so each shape/mask
    # combination compiles once; the default limit of 8 would send later blocks back to eager.
    torch._dynamo.config.recompile_limit = max(torch._dynamo.config.recompile_limit, 64)
    compiled: list[str] = []
    for name, module in model.named_modules():
        if isinstance(module, types) and not any(name.startswith(c + ".") for c in compiled):
            module.compile(dynamic=False, mode=mode)
            compiled.append(name)
    return compiled


def compile_pays(model: nn.Module, samples: int) -> bool:
    """Whether a training run of ``samples`` repays compiling ``model``'s blocks (its measured
    break-even, ``compile_pays_from``; 0 for models that did not measure one)."""
    return samples >= getattr(model, "compile_pays_from", 0)


def configure_cuda() -> None:
    """TF32 for the float32 matrix products that stay outside bf16 autocast (losses, CTC heads)."""
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
    torch.backends.cudnn.benchmark = True
