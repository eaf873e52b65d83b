"""What every recognizer of the suite shares: its input protocol, CTC loss and training input."""

from __future__ import annotations

from typing import ClassVar

import torch
import torch.nn.functional as F

from image_bench.losses import ctc_loss
from image_bench.models.base import BenchModel, ModelOutput


def resize_for_recognizer(images: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Bicubic tensor resize, as the evaluators of TextZoom/TPGSR/TG/C3 feed their recognizers
    (``F.interpolate(..., mode='bicubic')`` on the SR tensor, no clamping; ORIGINALS.md §2)."""
    if tuple(images.shape[-2:]) == tuple(size):
        return images
    return F.interpolate(images, size=size, mode="bicubic", align_corners=False)


class Recognizer(BenchModel):
    """A CTC recognizer. ``forward`` takes images at ``input_size``; use :meth:`read` for any size.

    ``lr_fraction`` is the share of training samples read from the bicubic-upsampled LR instead of
    the HR image: 0 when pretraining on ``synth`` (Synth90k-like clean text, as the recognizers of
    the originals were trained), 0.5 when fine-tuning on the LR-HR pairs of ``textzoom``.
    """

    kind: ClassVar[str] = "recognizer"
    input_size: ClassVar[tuple[int, int]] = (32, 128)

    def __init__(self, lr_fraction: float = 0.0):
        super().__init__()
        if not 0.0 <= lr_fraction <= 1.0:
            raise ValueError(f"lr_fraction must lie in [0, 1], got {lr_fraction}")
        self.lr_fraction = lr_fraction

    def read(self, images: torch.Tensor) -> ModelOutput:
        """Recognise images of any size: resize them to ``input_size`` first."""
        return self(resize_for_recognizer(images, self.input_size))

    def loss(self, output: ModelOutput, batch: dict) -> dict[str, torch.Tensor]:
        return {"ctc": ctc_loss(output.logits, batch["targets"], batch["target_lengths"])}

    def training_images(self, batch: dict) -> torch.Tensor:
        lr = resize_for_recognizer(batch["lr"], self.input_size)
        hr = batch.get("hr")
        if hr is None or self.lr_fraction >= 1.0:
            return lr
        hr = resize_for_recognizer(hr, self.input_size)
        if self.lr_fraction <= 0.0:
            return hr
        pick_lr = torch.rand(hr.shape[0], device=hr.device) < self.lr_fraction
        return torch.where(pick_lr[:, None, None, None], lr, hr)

    def training_step(self, batch: dict):
        output = self(self.training_images(batch))
        return output, self.loss(output, batch)


__all__ = ["Recognizer", "resize_for_recognizer"]
