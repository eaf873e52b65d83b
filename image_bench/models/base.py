"""The common interface every model of the suite speaks, and the registry that builds them by name.

A model is an ``nn.Module`` subclass of :class:`BenchModel`:

- ``forward(images)`` takes an NCHW batch in [0, 1] at ``input_size`` (LR 16x64 for SR and joint
  models; the recognizer's own size for recognizers, to which the evaluator resizes) and returns a
  :class:`ModelOutput`;
- ``loss(output, batch)`` returns a dict of named, already weighted loss terms whose sum is the
  training loss;
- ``training_step(batch)`` = forward + loss; models whose training input is not ``batch['lr']``
  (recognizers reading HR, a language model reading text) override it.

A batch is a dict: ``lr`` (B,3,16,64), ``hr`` (B,3,32,128) or absent for LR-only sets, ``targets``
(B,S) and ``target_lengths`` (B,) from :func:`image_bench.charset.encode`, ``labels`` (list[str]).

Helper networks that a method needs trained beforehand (a frozen recognizer, a stroke
recognizer, a language model) are declared in ``requires`` (role -> registered model name); the
experiments layer trains them once and hands them over through ``attach``.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Callable, ClassVar

import torch
from torch import nn

from image_bench import charset


@dataclass
class ModelOutput:
    """What a forward pass returns. Absent parts are None or empty lists."""

    sr: torch.Tensor | None = None  # final SR image (B,3,32,128), None for a recognizer
    logits: torch.Tensor | None = None  # final CTC logits (B,T,37), None for a pure SR model
    sr_steps: list[torch.Tensor] = field(default_factory=list)  # IMAGE: I_1..I_L (I_{L+1} = sr)
    logits_steps: list[torch.Tensor] = field(default_factory=list)  # IMAGE: p_1..p_L
    clue_logits_steps: list[torch.Tensor] = field(default_factory=list)  # IMAGE: p-hat_1..p-hat_L
    extras: dict[str, torch.Tensor] = field(default_factory=dict)  # model-specific intermediates

    def predictions(self) -> list[str]:
        if self.logits is None:
            raise ValueError("this output has no logits to decode")
        return charset.greedy_decode(self.logits)


class BenchModel(nn.Module):
    """Base class: declares what kind of model this is and how it is trained."""

    kind: ClassVar[str] = "sr"  # 'recognizer' | 'sr' | 'joint' | 'aux'
    input_size: ClassVar[tuple[int, int]] = (16, 64)  # (H, W) that forward() expects
    in_channels: ClassVar[int] = 3
    # Prefixes of submodules that run in training only (STN, attached teachers). They are counted
    # apart by the cost counter and never run at eval.
    training_only: ClassVar[tuple[str, ...]] = ()
    # role -> registered model name of a network that must be trained first and attached.
    requires: ClassVar[dict[str, str]] = {}
    # Optimiser settings that differ from the suite's default (AdamW, lr 1e-4): each model states
    # its original's values here, with the reason in a comment.
    optim_overrides: ClassVar[dict[str, float]] = {}
    # The learning-rate schedule (engine.step.LR_SCHEDULES) a run of this model uses unless it
    # sets one (``--set lr_schedule=...``): the paper's constant rate, or where a model says why.
    lr_schedule: ClassVar[str] = "constant"
    # Whether the training step has no host reads, fixed shapes and nothing built from Python
    # values per batch (such as the label strings), so that it may be recorded as a CUDA graph
    # (accel.graphed). A property of the forward, which only the model knows; the speed
    # decisions made from measurements live in accel.decisions.
    graph_safe: ClassVar[bool] = True

    def loss(self, output: ModelOutput, batch: dict) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def training_step(self, batch: dict) -> tuple[ModelOutput, dict[str, torch.Tensor]]:
        output = self(batch["lr"])
        return output, self.loss(output, batch)

    def attach(self, role: str, module: nn.Module) -> None:
        """Receive a trained helper network for ``role`` (see ``requires``)."""
        raise KeyError(f"{type(self).__name__} takes no helper network {role!r}")

    def example_input(self, batch_size: int = 1) -> torch.Tensor:
        """A random input at the model's own size, for cost counting and benchmarking."""
        h, w = self.input_size
        return torch.rand(batch_size, self.in_channels, h, w)


# ---------------------------------------------------------------------------------------------
# Registry

_REGISTRY: dict[str, Callable[..., BenchModel]] = {}

# Modules whose import registers models. Imported lazily so that `image-bench --help` stays fast
# and so that one broken model file names itself instead of breaking every command.
_MODEL_MODULES = (
    "image_bench.models.image",
    "baselines.crnn",
    "baselines.svtr",
    "baselines.tg",
    "baselines.tpgsr",
    "baselines.c3stisr",
)
_loaded = False


def register(name: str) -> Callable:
    """Class or factory decorator: ``@register('crnn')``."""

    def wrap(factory: Callable[..., BenchModel]) -> Callable[..., BenchModel]:
        if name in _REGISTRY and _REGISTRY[name] is not factory:
            raise ValueError(f"model name {name!r} is registered twice")
        _REGISTRY[name] = factory
        return factory

    return wrap


def _load_all() -> None:
    global _loaded
    if _loaded:
        return
    for module in _MODEL_MODULES:
        importlib.import_module(module)
    _loaded = True


def available() -> list[str]:
    _load_all()
    return sorted(_REGISTRY)


def build(name: str, **kwargs) -> BenchModel:
    """Build a registered model by name; unknown names list the known ones."""
    _load_all()
    if name not in _REGISTRY:
        raise KeyError(f"unknown model {name!r}; known: {', '.join(sorted(_REGISTRY))}")
    return _REGISTRY[name](**kwargs)


def model_class(name: str) -> Callable[..., BenchModel]:
    _load_all()
    if name not in _REGISTRY:
        raise KeyError(f"unknown model {name!r}; known: {', '.join(sorted(_REGISTRY))}")
    return _REGISTRY[name]
