"""Training data kept where the GPU can reach it fast, and a deterministic batch order.

A TensorSet (uint8 ``lr`` (N,3,16,64), ``hr`` (N,3,32,128) or None, ``labels``, ``identity``) is
small enough to live on the GPU whole (500k quick-profile pairs are ~7.4 GB of uint8). Batches are
gathered there by index and converted to float in [0, 1] on the device, so no worker process or
host copy sits in the step. When the free GPU memory is short, the set stays in pinned host memory
and each batch is copied with ``non_blocking=True``.

CTC targets are encoded once per set (``charset.encode``) and cached beside the images.

Batch order: epoch e visits ``randperm(N)`` drawn from a generator seeded with (seed, e); step s
reads slice ``s mod steps_per_epoch`` of epoch ``s // steps_per_epoch``. The position in the data
is therefore a pure function of (seed, step): resuming at step s needs nothing else, and every DDP
rank computes the same global batch and takes its own contiguous share of it.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from image_bench import charset

# Share of the currently free GPU memory the resident data may take; the rest is for the model.
GPU_DATA_SHARE = 0.4


def set_bytes(ts) -> int:
    n = ts.lr.numel() * ts.lr.element_size()
    if ts.hr is not None:
        n += ts.hr.numel() * ts.hr.element_size()
    return n


@dataclass
class ResidentSet:
    """A TensorSet's tensors placed for fast batching, with its CTC targets."""

    lr: torch.Tensor
    hr: torch.Tensor | None
    targets: torch.Tensor
    target_lengths: torch.Tensor  # on the host, where F.ctc_loss reads them
    device_lengths: torch.Tensor  # on the device, for the sync-free CTC of a graphed step
    labels: list[str]
    device: torch.device
    on_device: bool  # False: pinned host memory, copied per batch

    def __len__(self) -> int:
        return self.lr.shape[0]

    @classmethod
    def from_tensorset(cls, ts, device: torch.device | str, max_length: int = 25) -> ResidentSet:
        device = torch.device(device)
        if ts.lr.dtype != torch.uint8:
            raise TypeError(f"TensorSet.lr must be uint8, got {ts.lr.dtype}")
        if len(ts.labels) != ts.lr.shape[0]:
            raise ValueError(f"{len(ts.labels)} labels for {ts.lr.shape[0]} images")
        targets, lengths = charset.encode(list(ts.labels), max_length=max_length)
        on_device = device.type != "cuda"
        if device.type == "cuda":
            free, _ = torch.cuda.mem_get_info(device)
            on_device = set_bytes(ts) + targets.numel() * 8 < GPU_DATA_SHARE * free

        def place(t: torch.Tensor | None) -> torch.Tensor | None:
            if t is None:
                return None
            if on_device:
                return t.to(device)
            return t.pin_memory() if device.type == "cuda" else t

        return cls(place(ts.lr), place(ts.hr), place(targets), lengths, lengths.to(device),
                   list(ts.labels), device, on_device)

    def batch(self, index: torch.Tensor, lengths_on_device: bool = False) -> dict:
        """The batch of the given sample indices (a CPU long tensor): float images in [0, 1].

        Target lengths come on the host (for ``F.ctc_loss``), or with ``lengths_on_device`` on
        the device (the sync-free CTC that a CUDA graph can record, see ``losses.ctc_loss``)."""
        labels = [self.labels[i] for i in index.tolist()]
        if self.on_device:
            idx = index.to(self.device, non_blocking=True)
        else:
            idx = index

        def take(t: torch.Tensor | None, image: bool) -> torch.Tensor | None:
            if t is None:
                return None
            t = t.index_select(0, idx)
            if not self.on_device:
                if self.device.type == "cuda":
                    t = t.pin_memory()
                t = t.to(self.device, non_blocking=True)
            return t.float().div_(255.0) if image else t

        if lengths_on_device:
            on_device_index = idx if self.on_device else index.to(self.device, non_blocking=True)
            lengths = self.device_lengths.index_select(0, on_device_index)
        else:
            lengths = self.target_lengths.index_select(0, index)
        out = {"lr": take(self.lr, True), "targets": take(self.targets, False),
               "target_lengths": lengths, "labels": labels}
        if self.hr is not None:
            out["hr"] = take(self.hr, True)
        return out


class BatchOrder:
    """Global batch indices for every step, a pure function of (seed, step), sharded by rank."""

    def __init__(self, size: int, batch_size: int, seed: int, rank: int = 0, world: int = 1):
        if batch_size % world:
            raise ValueError(f"batch size {batch_size} is not divisible by {world} processes")
        if size < batch_size:
            raise ValueError(f"the training set holds {size} samples, fewer than one batch of "
                             f"{batch_size}")
        self.size, self.batch_size, self.seed = size, batch_size, seed
        self.rank, self.world = rank, world
        self.steps_per_epoch = size // batch_size  # the incomplete tail batch is dropped
        self._epoch = -1
        self._perm: torch.Tensor | None = None

    def _permutation(self, epoch: int) -> torch.Tensor:
        if epoch != self._epoch:
            g = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
            self._perm, self._epoch = torch.randperm(self.size, generator=g), epoch
        return self._perm

    def global_indices(self, step: int) -> torch.Tensor:
        epoch, k = divmod(step, self.steps_per_epoch)
        return self._permutation(epoch)[k * self.batch_size:(k + 1) * self.batch_size]

    def indices(self, step: int) -> torch.Tensor:
        """This rank's contiguous share of the global batch of ``step`` (0-based)."""
        per_rank = self.batch_size // self.world
        return self.global_indices(step)[self.rank * per_rank:(self.rank + 1) * per_rank]

