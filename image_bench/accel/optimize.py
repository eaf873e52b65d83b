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

from image_bench.accel import decisions
from image_bench.accel.aligned_block import AlignedBlock, needs_alignment
from image_bench.accel.patch_embed import AlignedPatchEmbed
from image_bench.accel.swap import swap_class
from image_bench.losses import compile_image_loss
from image_bench.models.vit import Block, PatchEmbed

# Compiling the SR parts too (below) trains faster, measured on the H100 at batch 256
# (scripts/gpu_explore.py, ``nosr`` against ``base``): IMAGE-2 3,105 -> 3,351, TPGSR 5,715 ->
# 6,998, C3-STISR 2,261 -> 2,401, TG 2,725 -> 2,805 samples/s; but it costs 30-50 s more of cold
# compilation (IMAGE-2 9-51 s -> 104 s, TPGSR 1 -> 36 s, TG 0.3 -> 29 s). That repays itself
# after 1.1M (TPGSR) to 2.6M (TG) training samples (IMAGE-2: 2.2M); the quick profile's runs are
# shorter, so the trainer compiles them from this many samples on.
SR_COMPILE_PAYS_FROM = 2_000_000
# Inductor's combo kernels (independent small kernels of one region in one launch: the aligned
# blocks' weight pads and casts, bias-gradient sums) trained IMAGE-2 3,977 -> 4,112 samples/s
# on the H100 (scripts/gpu_explore.py ``combo`` between two ``base`` runs, one call), for about
# 25 s more of compilation (36 s against 12 s with a warm cache for the rest). At ~8.5 us saved
# per sample that repays itself after ~3M samples: long runs and the bench use them, for the
# models that measured them (``combo_kernels``: IMAGE).
COMBO_KERNELS_PAY_FROM = 3_000_000


def region_types(sr_parts: bool = False) -> tuple[type[nn.Module], ...]:
    """The repeated blocks worth compiling one by one: transformer layers of IMAGE and SVTR; with
    ``sr_parts`` also the SR parts (the STN, SRBs with the fused GRU inside, IMAGE's conv
    decoders and q_PJ), whose BatchNorm, Mish, max-pools, pixel shuffle and layout copies then
    fuse, and the patch embeddings (q_VT's reads the conv decoders' h-hat: its (ph, pw, C) patch
    copy runs inside Inductor's kernel). The STN and the patch embeddings: IMAGE-2 on the H100,
    batch 256 (scripts/gpu_explore.py, one call), 4,937-4,946 -> 4,966 (STN), 4,974 (patch
    embeddings); the two with the stacks' final LayerNorms 5,003 samples/s (the LayerNorms alone:
    4,941, not kept)."""
    from baselines.svtr import MixingBlock
    from image_bench.models.image_parts import ConvDecoder, Projector
    from image_bench.models.srb import SRB
    from image_bench.models.stn import STN

    sr = (STN, SRB, ConvDecoder, Projector, PatchEmbed) if sr_parts else ()
    return (Block, MixingBlock, *sr)


def compile_regions(model: nn.Module, mode: str | None = None, *, sr_parts: bool = False,
                    align: bool = False, combo: bool = False) -> list[str]:
    """torch.compile every repeated block of ``model`` in place (``mode`` as torch.compile's;
    ``sr_parts`` as :func:`region_types`; ``combo``: Inductor's combo kernels, see
    ``COMBO_KERNELS_PAY_FROM``); returns their names.

    ``align``: transformer blocks whose width or head width is not a multiple of 8 (IMAGE: 196
    and 49) compute on zero-padded, aligned operands (:func:`align_blocks`). Measured to help
    training steps, which run as CUDA graphs; the pads add launches, and uncaptured large-batch
    inference is bound by launching (IMAGE-2 at batch 256, H100: 23 ms of kernels in a 55-126 ms
    call), so inference keeps the plain blocks."""
    if combo and mode is not None:
        raise ValueError("combo kernels are an Inductor option; torch.compile takes a mode or "
                         "options, not both")
    options = {"mode": mode} if not combo else {"options": {"combo_kernels": True}}
    if align:
        align_blocks(model)
    types = region_types(sr_parts)
    # SVTR's local and global mixers differ only in their mask buffer, so each shape/mask
    # combination compiles once; the default limit of 8 would send later blocks back to eager.
    torch._dynamo.config.recompile_limit = max(torch._dynamo.config.recompile_limit, 64)
    # dynamo refuses to enter a module holding an nn.GRU unless told to; the SRBs call the fused
    # Triton GRU on CUDA (one graph, no breaks: docs/speed.md), nn.GRU elsewhere.
    torch._dynamo.config.allow_rnn = True
    if sr_parts:  # the SR outputs' image loss too, eager ~25 small kernels per output
        compile_image_loss()
    compiled: list[str] = []
    for name, module in model.named_modules():
        if isinstance(module, types) and not any(name.startswith(c + ".") for c in compiled):
            module.compile(dynamic=False, **options)
            compiled.append(name)
    return compiled


def align_blocks(model: nn.Module) -> int:
    """Swap the transformer blocks (and patch embeddings) whose widths are not multiples of 8
    for their aligned form (accel/aligned_block.py); returns how many blocks."""
    count = 0
    for module in model.modules():
        if isinstance(module, Block) and needs_alignment(module.attn.qkv.in_features,
                                                         module.attn.heads):
            swap_class(module, AlignedBlock)
            count += 1
        elif isinstance(module, PatchEmbed) and needs_alignment(module.proj.out_channels, 1):
            swap_class(module, AlignedPatchEmbed)
    return count


def compile_pays(model: nn.Module | type, samples: float) -> bool:
    """Whether a training run of ``samples`` repays compiling ``model``'s blocks (its measured
    break-even, ``decisions.compile_pays_from``; 0 for models that did not measure one)."""
    return samples >= decisions.compile_pays_from(model)


def compile_for_training(model: nn.Module, samples: float) -> list[str]:
    """Compile what a training run of ``samples`` repays (:func:`compile_pays` for the blocks,
    ``SR_COMPILE_PAYS_FROM`` for the SR parts, ``COMBO_KERNELS_PAY_FROM`` for combo kernels), on
    aligned operands; returns the regions."""
    if not compile_pays(model, samples):
        return []
    return compile_regions(model, sr_parts=samples >= SR_COMPILE_PAYS_FROM, align=True,
                           combo=samples >= COMBO_KERNELS_PAY_FROM
                           and decisions.combo_kernels(model))


def training_layout(model: nn.Module, device: torch.device) -> bool:
    """channels_last 4-D weights for training on CUDA where the model measured it faster
    (``decisions.train_channels_last``); before the optimiser is made, so its state follows.
    Returns whether it did. Parameters keep their identity; checkpoints load into either layout."""
    if device.type != "cuda" or not decisions.train_channels_last(model):
        return False
    model.to(memory_format=torch.channels_last)
    return True


def configure_cuda() -> None:
    """TF32 for the float32 matrix products that stay outside bf16 autocast (losses, CTC heads)."""
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
    torch.backends.cudnn.benchmark = True
