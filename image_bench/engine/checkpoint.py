"""Checkpoints: atomic writes, prefix-tolerant loading, and models rebuilt from their RunConfig.

A checkpoint is a ``torch.save`` dict. ``last.pt`` holds everything needed to resume (model,
optimizer, scheduler, RNG states, step, best score); ``best.pt`` holds the model weights of the
best validation score. Both are written to a temporary file in the same folder, fsynced, and
renamed over the old file, so a crash leaves either the old or the new checkpoint, never half a
file.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import torch
from torch import nn

from image_bench.experiments.config import RunConfig
from image_bench.models import base
from image_bench.models.base import BenchModel, build

# Wrappers add these to state-dict keys: DDP ('module.'), torch.compile ('_orig_mod.').
_WRAPPER_PREFIXES = ("module.", "_orig_mod.")


def atomic_save(obj, path: Path) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def strip_prefixes(state: dict) -> dict:
    out = {}
    for key, value in state.items():
        changed = True
        while changed:
            changed = False
            for prefix in _WRAPPER_PREFIXES:
                if key.startswith(prefix):
                    key, changed = key[len(prefix):], True
        out[key] = value
    return out


def unwrap(model: nn.Module) -> nn.Module:
    """The plain module inside DDP / compile wrappers."""
    while True:
        if hasattr(model, "module") and isinstance(model.module, nn.Module):
            model = model.module
        elif hasattr(model, "_orig_mod"):
            model = model._orig_mod
        else:
            return model


def model_state(model: nn.Module) -> dict:
    return strip_prefixes(unwrap(model).state_dict())


def load_checkpoint(path: Path, map_location="cpu") -> dict:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    try:
        return torch.load(path, map_location=map_location, weights_only=False)
    except Exception as exc:  # a truncated or foreign file: name it
        raise RuntimeError(f"cannot read checkpoint {path}: {exc}") from exc


def weights_of(ckpt: dict) -> dict:
    """The model state dict of a checkpoint of this suite, or a bare state dict."""
    state = ckpt.get("model", ckpt) if isinstance(ckpt, dict) else ckpt
    return strip_prefixes(state)


def load_weights(model: nn.Module, state: dict, *, strict: bool = True) -> dict:
    """Load ``state`` into ``model``.

    strict=True: every key must match in name and shape. strict=False (pretrained init): load the
    tensors whose name and shape agree and return what did not, so the caller can report it.
    """
    state = strip_prefixes(state)
    own = model.state_dict()
    if strict:
        missing = sorted(set(own) - set(state))
        unexpected = sorted(set(state) - set(own))
        shape = sorted(k for k in set(own) & set(state) if own[k].shape != state[k].shape)
        if missing or unexpected or shape:
            raise RuntimeError(
                f"checkpoint does not fit {type(model).__name__}: missing {missing[:8]}, "
                f"unexpected {unexpected[:8]}, shape mismatch {shape[:8]}")
        model.load_state_dict(state)
        return {"missing": [], "unexpected": [], "shape_mismatch": []}
    fitting = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
    model.load_state_dict(fitting, strict=False)
    return {
        "missing": sorted(set(own) - set(fitting)),
        "unexpected": sorted(set(state) - set(own)),
        "shape_mismatch": sorted(k for k in state if k in own and own[k].shape != state[k].shape),
    }


def build_by_name(name: str, kwargs: dict | None = None) -> BenchModel:
    # A model whose module is already imported is built directly, without importing every model
    # module of the registry (one broken or missing model file then breaks only itself).
    factory = base._REGISTRY.get(name)
    if factory is not None:
        return factory(**dict(kwargs or {}))
    return build(name, **dict(kwargs or {}))


def build_model(cfg: RunConfig) -> BenchModel:
    return build_by_name(cfg.model, cfg.model_kwargs)


def attach_helpers(model: BenchModel, cfg: RunConfig,
                   helper_checkpoints: dict[str, Path] | None, device: str | torch.device) -> None:
    """Build each helper of ``cfg.helpers`` from its own RunConfig and attach it.

    A helper without a checkpoint is attached untrained; that is right only when the model's own
    checkpoint carries the helper's weights (a jointly fine-tuned helper), which the strict load
    that follows checks.
    """
    helper_checkpoints = helper_checkpoints or {}
    unknown = set(helper_checkpoints) - set(cfg.helpers)
    if unknown:
        raise KeyError(f"helper checkpoints for roles {sorted(unknown)} that {cfg.model} does "
                       f"not use; its helpers: {sorted(cfg.helpers)}")
    for role, helper_cfg in sorted(cfg.helpers.items()):
        if role in helper_checkpoints:
            model.attach(role, load_model(helper_cfg, helper_checkpoints[role], device=device))
            continue
        before = len(model.state_dict())
        model.attach(role, build_model(helper_cfg).to(device).eval())
        if len(model.state_dict()) == before:
            # The helper's weights are not part of the model's state: nothing would fill them.
            raise ValueError(f"{cfg.model} needs a checkpoint for its helper {role!r} "
                             f"({helper_cfg.model}); pass helper_checkpoints={{{role!r}: path}}")


def load_model(cfg: RunConfig, checkpoint: Path, device: str = "cpu",
               helper_checkpoints: dict[str, Path] | None = None) -> BenchModel:
    """Rebuild ``cfg``'s model, attach its helpers, load ``checkpoint`` strictly; eval mode,
    through the acceleration layer (``accel.for_inference``: the same state_dict)."""
    from image_bench import accel

    model = build_model(cfg)
    model.to(device)
    attach_helpers(model, cfg, helper_checkpoints, device)
    load_weights(model, weights_of(load_checkpoint(checkpoint)), strict=True)
    return accel.for_inference(model).to(device).eval()
