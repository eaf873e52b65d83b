"""The acceleration layer: takes a built (plain torch) model and makes it fast, in place.

The models (``image_bench.models``, ``baselines``) are the architectures only. This layer swaps
some of their modules' classes for faster ones that compute the same function from the same
parameters (``accel.swap``): no parameter and no state_dict key changes, so a checkpoint loads
into the plain model and the fast one alike. What it swaps:

- the SRBs' GRU blocks for the fused Triton BiGRU (``accel.gru``);
- the SR heads and tails (9x9, 3 <-> 64 'same' convolutions) for their split kernels
  (``accel.tail_conv``), the decoders' conv + PixelShuffle for the channels_last-friendly form
  (``accel.pixel_shuffle``);
- the transformers' attention for the Triton attention (``accel.attention``), the patch
  embeddings for one product (``accel.patch_embed``);
- in training: the blocks for their aligned form, compiled regions (``accel.optimize``), IMAGE's
  two streams (``accel.branch_streams``), channels_last weights;
- in inference (the bench's optimized mode): blocks as three Triton launches
  (``accel.fused_block``).

Every fast module takes the plain torch path off CUDA, so on the CPU an accelerated model
computes what the plain one does (``tests/test_accel.py`` checks outputs and gradients of every
registered model in float64). The engine applies it; ``IMAGE_BENCH_PLAIN=1`` (or ``image-bench
bench --mode plain``) runs the plain model. The graphed step (``accel.graphed``), the fused
clip + AdamW (``accel.fused_update``) and the kernels (``accel.kernels``) live here too.

Dependency direction: the models never import this package; it imports the models it knows how
to speed up; the engine imports it.
"""

from __future__ import annotations

import os

import torch
from torch import nn

from image_bench import losses
from image_bench.accel.attention import FastAttention
from image_bench.accel.gru import FusedGruBlock
from image_bench.accel.kernels import triton_module
from image_bench.accel.optimize import compile_for_training, training_layout
from image_bench.accel.patch_embed import FastPatchEmbed
from image_bench.accel.pixel_shuffle import shuffle_in_conv
from image_bench.accel.swap import swap_class
from image_bench.accel.tail_conv import split_head, split_tail
from image_bench.models.image import IMAGE
from image_bench.models.image_parts import ConvDecoder
from image_bench.models.srb import GruBlock
from image_bench.models.tsrn import TSRNBackbone
from image_bench.models.vit import Attention, PatchEmbed

PLAIN_ENV = "IMAGE_BENCH_PLAIN"


def plain_requested() -> bool:
    """Whether the environment asks for the plain models (``IMAGE_BENCH_PLAIN=1``)."""
    return os.environ.get(PLAIN_ENV, "").strip().lower() not in ("", "0", "false", "no")


def fast_modules(model: nn.Module) -> nn.Module:
    """Swap every module of ``model`` that has a fast form (see the package docstring; not the
    training-only levers); returns the model. Idempotent."""
    for m in list(model.modules()):
        if isinstance(m, GruBlock):
            swap_class(m, FusedGruBlock)
        elif isinstance(m, Attention):
            swap_class(m, FastAttention)
        elif isinstance(m, PatchEmbed):
            swap_class(m, FastPatchEmbed)
        elif isinstance(m, TSRNBackbone):
            split_head(m.block1[0])
            split_tail(m.tail)
            shuffle_in_conv(m.upsample)
        elif isinstance(m, ConvDecoder):
            split_tail(m.tail)
            shuffle_in_conv(m.upsample)
        elif isinstance(m, IMAGE):
            split_head(m.pixel_encoder[0])
    return model


def fast_losses(enabled: bool = True) -> None:
    """The CTC recursions on their Triton kernels on CUDA (``losses.use_ctc_kernels``); off also
    turns the compiled image loss off, which ``compile_regions`` turns on with the SR parts."""
    losses.use_ctc_kernels((lambda: triton_module("ctc")) if enabled else None)
    if not enabled:
        losses.compile_image_loss(False)


def for_training(model: nn.Module, device: torch.device, *, samples: float,
                 compile: bool = True, streams: bool = True) -> dict:
    """Make ``model`` fast for a training run of ``samples`` samples on ``device``, in place:
    the fast modules, the CTC kernels, channels_last weights where measured faster, IMAGE's two
    streams (``streams``: one device, no DDP), and on CUDA the compiled regions that such a run
    repays (``compile``; ``samples=math.inf``: all that long runs get). Call it before the
    optimiser is made (its state follows the weights' layout). Returns the levers it used;
    ``{"plain": True}`` and nothing changed under ``IMAGE_BENCH_PLAIN=1``."""
    if plain_requested():
        fast_losses(False)
        return {"plain": True}
    from image_bench.accel.branch_streams import training_streams

    fast_modules(model)
    fast_losses(True)
    levers = {"channels_last": training_layout(model, device),
              "branch_streams": streams and training_streams(model, device)}
    regions = compile_for_training(model, samples) if compile and device.type == "cuda" else []
    levers["compiled_regions"] = regions
    return levers


def for_inference(model: nn.Module) -> nn.Module:
    """The fast modules for evaluation and reading (each takes its torch path off CUDA); the
    plain model under ``IMAGE_BENCH_PLAIN=1``. Returns the model."""
    return model if plain_requested() else fast_modules(model)


__all__ = ["PLAIN_ENV", "fast_losses", "fast_modules", "for_inference", "for_training",
           "plain_requested"]
