"""The optimiser and the training step, shared by the trainer and the speed benchmark."""

from __future__ import annotations

import math

import torch
from torch import nn

from image_bench.accel.fused_update import FusedClipAdamW
from image_bench.models.base import BenchModel

DEFAULT_LR = 1e-4  # the paper's AdamW learning rate (RunConfig's default)
# The paper states AdamW but not its weight decay: PyTorch's AdamW default (0.01) is used.
DEFAULT_WEIGHT_DECAY = 1e-2
# The paper is silent on clipping. A max-norm of 5 only trims the rare CTC gradient spikes of
# early training; models whose original clips differently say so in optim_overrides.
DEFAULT_GRAD_CLIP = 5.0
_OVERRIDE_KEYS = {"lr", "beta1", "beta2", "weight_decay", "grad_clip", "eps", "warmup_steps"}
# How the learning rate moves after the warm-up: held (the paper's) or a half cosine from the
# run's rate down to zero at its last step.
LR_SCHEDULES = ("constant", "cosine")


def model_lr(model_cls) -> float:
    """A model's learning rate when the run does not set one: its original's (optim_overrides)
    or the paper's. The experiments layer writes it into every RunConfig, so a run's identity
    names the rate it trained at."""
    return float(getattr(model_cls, "optim_overrides", {}).get("lr", DEFAULT_LR))


def model_lr_schedule(model_cls) -> str:
    """A model's learning-rate schedule when the run does not set one (BenchModel.lr_schedule);
    written into every RunConfig like its rate."""
    return getattr(model_cls, "lr_schedule", "constant")


def lr_factor(step: int, warmup_steps: int, schedule: str, total_steps: int) -> float:
    """The multiple of the base rate for the step after ``step`` optimiser steps: a linear
    warm-up over ``warmup_steps`` (0: none), then ``schedule`` over ``total_steps``."""
    factor = min(1.0, (step + 1) / warmup_steps) if warmup_steps > 0 else 1.0
    if schedule == "cosine":
        factor *= 0.5 * (1.0 + math.cos(math.pi * min(step, total_steps) / max(1, total_steps)))
    elif schedule != "constant":
        raise ValueError(f"unknown lr_schedule {schedule!r}; known: {', '.join(LR_SCHEDULES)}")
    return factor


def optim_settings(model: BenchModel, lr: float) -> dict:
    """The suite's defaults, then the model's overrides (its original's values), at the run's
    learning rate ``lr`` (RunConfig.lr: ``model_lr`` unless set with ``--set lr=...``)."""
    overrides = dict(type(model).optim_overrides)
    unknown = set(overrides) - _OVERRIDE_KEYS
    if unknown:
        raise KeyError(f"{type(model).__name__}.optim_overrides has unknown keys {sorted(unknown)};"
                       f" known: {sorted(_OVERRIDE_KEYS)}")
    return {"beta1": 0.9, "beta2": 0.999, "weight_decay": DEFAULT_WEIGHT_DECAY,
            "grad_clip": DEFAULT_GRAD_CLIP, "eps": 1e-8, "warmup_steps": 0,
            **overrides, "lr": float(lr)}


def make_optimizer(model: nn.Module, settings: dict, device: torch.device,
                   capturable: bool = False, *, schedule: str = "constant", total_steps: int = 1):
    """AdamW (weight_decay 0 makes it Adam) over the trainable parameters, fused on CUDA, and its
    learning-rate schedule (:func:`lr_factor`: warm-up over ``warmup_steps``, then
    ``schedule`` over ``total_steps``; constant without warm-up is the paper's).

    ``capturable``: see :func:`set_capturable` (call it again after loading a saved state).
    """
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ValueError(f"{type(model).__name__} has no trainable parameters")
    kwargs = {"fused": True} if device.type == "cuda" else {}
    optimizer = torch.optim.AdamW(params, lr=settings["lr"],
                                  betas=(settings["beta1"], settings["beta2"]),
                                  eps=settings["eps"], weight_decay=settings["weight_decay"],
                                  **kwargs)
    warmup = int(settings["warmup_steps"])
    lr_factor(0, warmup, schedule, total_steps)  # an unknown schedule fails here, not mid-run
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: lr_factor(step, warmup, schedule, total_steps))
    set_capturable(optimizer, capturable, device)
    return optimizer, scheduler


def set_capturable(optimizer: torch.optim.Optimizer, capturable: bool,
                   device: torch.device) -> None:
    """Make the optimiser's step recordable in a CUDA graph, or plain again.

    Capturable (CUDA only): the learning rate becomes a device tensor, which the scheduler fills
    in place, so every replay reads the current value (a float would be frozen into the graph).
    Loading a saved optimiser state restores whatever form it was saved in: call this after.
    """
    capturable = capturable and device.type == "cuda"
    for group in optimizer.param_groups:
        group["capturable"] = capturable
        lr = float(group["lr"])
        group["lr"] = torch.tensor(lr, device=device) if capturable else lr


def match_state_layout(optimizer: torch.optim.Optimizer) -> None:
    """Give each per-parameter state tensor (AdamW's moments) its parameter's memory layout: a
    state saved by a run in another layout (accel.optimize.training_layout) loads as saved, and
    the fused step wants both alike."""
    for group in optimizer.param_groups:
        for p in group["params"]:
            state = optimizer.state.get(p, {})
            for key, value in state.items():
                if (torch.is_tensor(value) and value.shape == p.shape
                        and value.stride() != p.stride()):
                    state[key] = torch.empty_like(p, dtype=value.dtype).copy_(value)


class StepModule(nn.Module):
    """forward(batch) = the model's training_step loss terms, so DDP sees one forward call."""

    def __init__(self, model: BenchModel):
        super().__init__()
        self.model = model

    def forward(self, batch: dict) -> dict[str, torch.Tensor]:
        _, terms = self.model.training_step(batch)
        if not terms:
            raise ValueError(f"{type(self.model).__name__}.loss returned no loss terms")
        return terms


class Stepper:
    """One optimisation step: autocast forward + loss, backward, clip, AdamW, schedule.

    Returns a detached device tensor [total, grad_norm, *terms] so the caller syncs with the host
    only when it chooses to (the NaN guard and the log read it in blocks).
    """

    def __init__(self, step_module: nn.Module, optimizer, scheduler, *, grad_clip: float,
                 device: torch.device, amp: bool | None = None, fused_update: bool = False):
        self.step_module, self.optimizer, self.scheduler = step_module, optimizer, scheduler
        self.grad_clip = grad_clip
        self.device = device
        self.amp = device.type == "cuda" if amp is None else amp
        self.params = [p for g in optimizer.param_groups for p in g["params"]]
        self.term_names: list[str] | None = None
        # ``fused_update``: clipping + AdamW in three Triton launches where the optimiser
        # qualifies (accel.fused_update: CUDA, fp32, capturable); else PyTorch's
        self.fused_update = (FusedClipAdamW(optimizer) if fused_update
                             and FusedClipAdamW.supports(optimizer) else None)

    def __call__(self, batch: dict) -> torch.Tensor:
        stats = self.update(batch)
        self.scheduler.step()
        return stats

    def update(self, batch: dict) -> torch.Tensor:
        """Everything of a step but the schedule: the part a CUDA graph can record."""
        # no autocast weight cache: a CUDA graph must not keep casts made at capture time
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.amp,
                            cache_enabled=False):
            terms = self.step_module(batch)
        if self.term_names is None:
            self.term_names = list(terms)
        elif list(terms) != self.term_names:
            raise RuntimeError(f"loss terms changed from {self.term_names} to {list(terms)}")
        total = sum(t.float() for t in terms.values())
        self.optimizer.zero_grad(set_to_none=True)
        total.backward()
        if self.fused_update is not None:  # clips and steps
            norm = self.fused_update.step(self.grad_clip or 0.0)
        else:
            norm = self._clip()
            self.optimizer.step()
        return torch.stack([total.detach(), norm.detach().float(),
                            *[t.detach().float() for t in terms.values()]])

    def _clip(self) -> torch.Tensor:
        """The gradient norm, after clipping the gradients to ``grad_clip`` (0: no clipping)."""
        if self.grad_clip and self.grad_clip > 0:
            return torch.nn.utils.clip_grad_norm_(self.params, self.grad_clip)
        return torch.linalg.vector_norm(
            torch.stack([torch.linalg.vector_norm(p.grad.float())
                         for p in self.params if p.grad is not None]))

    @property
    def column_names(self) -> list[str]:
        return ["loss", "grad_norm", *(self.term_names or [])]
