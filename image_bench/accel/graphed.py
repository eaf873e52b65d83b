"""The whole training step as one CUDA graph.

Profiling IMAGE-2's bf16 step on the H100 showed the GPU idle most of the time: the host cannot
enqueue ~5,000 small kernels per step (LayerNorms, GELUs, GRU gates, their backward) as fast as
the GPU runs them. A CUDA graph records the step once (forward, loss, backward, clipping, fused
AdamW) and replays it with one launch, so the host no longer sets the pace.

What a replay needs, and how the suite provides it:

- fixed shapes and addresses: each batch is copied into static buffers (the data already live
  on the GPU, ``engine.data``); CTC targets are padded to a fixed length;
- no host reads inside the step: CTC lengths stay on the device and the loss takes the
  sync-free recursion (``losses.ctc_nll``); the NaN guard reads the returned statistics after
  the replay, in blocks, as the eager path does;
- an optimiser that reads its learning rate and step count from device memory (fused AdamW,
  ``capturable=True``, tensor lr that the scheduler fills in place between replays; the
  Stepper's Triton clip + AdamW, ``accel.fused_update``, reads the same state);
- randomness drawn on the device (LR/HR picks, dropout): graph replays advance the generator's
  offset, so each replay draws new numbers.

Models that build tensors from Python values per batch (TG encodes stroke sequences from the
label strings on the host) say ``graph_safe = False`` and train eagerly. If a capture fails, the
trainer goes on eagerly and records why; a failed capture runs no kernel, so no weight changed.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:  # the engine's step, which this wraps; accel does not import the engine
    from image_bench.engine.step import Stepper

# Eager steps on a side stream before the capture: lazy initialisations (cuBLAS handles,
# optimiser state, autotuning, compiled regions) must happen outside the graph.
WARMUP_STEPS = 3
# The batch entries a captured step reads (no 'labels': a model that needs the strings per
# batch must not be captured, and fails the capture with a KeyError if it is).
STATIC_KEYS = ("lr", "hr", "targets", "target_lengths")


class GraphedStepper:
    """Drop-in for :class:`Stepper` on one CUDA device: eager warm-up, then capture, then replay.

    ``__call__(batch)`` returns the same [total, grad_norm, *terms] statistics as the eager step
    (a fresh tensor each call). ``batch`` must hold the target lengths on the device.
    """

    def __init__(self, stepper: Stepper, warmup: int = WARMUP_STEPS):
        if stepper.device.type != "cuda":
            raise ValueError("CUDA graphs need a CUDA device")
        self.stepper = stepper
        self.warmup = warmup
        self.graph: torch.cuda.CUDAGraph | None = None
        self.static: dict[str, torch.Tensor] | None = None
        self.static_stats: torch.Tensor | None = None
        self.failure: str | None = None  # why the capture failed; eager from then on
        self.steps = 0

    @property
    def column_names(self) -> list[str]:
        return self.stepper.column_names

    @property
    def captured(self) -> bool:
        return self.graph is not None

    def _load(self, batch: dict) -> dict[str, torch.Tensor]:
        missing = [k for k in ("lr", "targets", "target_lengths") if k not in batch]
        if missing:
            raise KeyError(f"a graphed step needs batch entries {missing}")
        if batch["target_lengths"].device.type != "cuda":
            raise ValueError("a graphed step needs the target lengths on the GPU "
                             "(ResidentSet.batch(..., lengths_on_device=True))")
        if self.static is None:
            self.static = {k: batch[k].clone() for k in STATIC_KEYS if batch.get(k) is not None}
        else:
            for k, buf in self.static.items():
                if batch[k].shape != buf.shape:
                    raise ValueError(f"batch entry {k!r} changed shape from {tuple(buf.shape)} "
                                     f"to {tuple(batch[k].shape)}: a graph replays fixed shapes")
                buf.copy_(batch[k], non_blocking=True)
        return self.static

    def __call__(self, batch: dict) -> torch.Tensor:
        self.steps += 1
        if self.failure is not None:
            return self.stepper(batch)
        static = self._load(batch)
        if self.graph is None and self.steps <= self.warmup:
            side = torch.cuda.Stream()
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side):
                stats = self.stepper(static)
            torch.cuda.current_stream().wait_stream(side)
            return stats.clone()
        if self.graph is None:
            self._capture(static)
            if self.graph is None:
                return self.stepper(batch)
        self.graph.replay()
        self.stepper.scheduler.step()
        return self.static_stats.clone()

    def _capture(self, static: dict) -> None:
        stepper = self.stepper
        stepper.optimizer.zero_grad(set_to_none=True)
        graph = torch.cuda.CUDAGraph()
        try:
            with torch.cuda.graph(graph):
                self.static_stats = stepper.update(static)
        except Exception as exc:  # noqa: BLE001 - any failure means: train eagerly
            self.failure = f"{type(exc).__name__}: {exc}"[:500]
            self.static_stats = None
            torch.cuda.synchronize()
            stepper.optimizer.zero_grad(set_to_none=True)
            return
        self.graph = graph
