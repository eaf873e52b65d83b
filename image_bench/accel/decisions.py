"""The speed decisions made from measurements, per model: where each lever paid on the GPU.

They were class attributes of the models; they are facts about this acceleration layer on one
GPU, not about the architectures, so they live here, keyed by the model class. Each takes a model
or its class.
"""

from __future__ import annotations

from torch import nn

from baselines.svtr import SVTR
from image_bench.models.image import IMAGE

# Training samples from which compiling the repeated blocks (accel.optimize) saves more time
# than it costs; shorter runs train them eagerly (still as a CUDA graph). 0: always.
# SVTR, H100, bf16, graphed step: compiling its 18 block regions takes ~27 s and lifts training
# from 6,258 to 9,994 samples/s, so it pays from 27 / (1/6,258 - 1/9,994) ~ 450k samples
# (the quick profile's pretraining is 256k: it cost 27 s and saved 13 s there).
_COMPILE_PAYS_FROM = ((SVTR, 450_000),)
# Models whose training on CUDA keeps the 4-D weights (so the convolutions' activations) in
# channels_last. IMAGE, H100, batch 256, one call: 3,690 -> 3,820 samples/s. cuDNN's NHWC kernels
# without layout transposes, channels-last BatchNorm, and the SR tails' product on aligned
# operands (the 243-row align1 kernels, 1.8 ms per step, go).
_TRAIN_CHANNELS_LAST = (IMAGE,)
# Models whose compiled regions use Inductor's combo kernels in long runs and the bench
# (accel.optimize.COMBO_KERNELS_PAY_FROM). IMAGE, H100, batch 256, one call: 3,977 -> 4,112.
_COMBO_KERNELS = (IMAGE,)


def _cls(model: nn.Module | type) -> type:
    return model if isinstance(model, type) else type(model)


def compile_pays_from(model: nn.Module | type) -> int:
    return next((n for cls, n in _COMPILE_PAYS_FROM if issubclass(_cls(model), cls)), 0)


def train_channels_last(model: nn.Module | type) -> bool:
    return issubclass(_cls(model), _TRAIN_CHANNELS_LAST)


def combo_kernels(model: nn.Module | type) -> bool:
    return issubclass(_cls(model), _COMBO_KERNELS)


__all__ = ["combo_kernels", "compile_pays_from", "train_channels_last"]
