"""Loss functions shared by the models of the suite."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from image_bench import charset


def ctc_loss(logits: torch.Tensor, targets: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """CTC loss of logits (B, T, 37) against padded targets (B, S) with lengths (B,).

    Computed in float32 (CTC's log-space recursions are not safe in bf16); averaged over the batch
    after dividing each sample by its target length (PyTorch's 'mean' reduction). Infinite
    losses (a target longer than the frames can spell) are zeroed rather than poisoning the batch.

    The lengths are kept on the host: ``F.ctc_loss`` reads them there, and lengths on the GPU
    cost one device-to-host sync per call (five per IMAGE-2 step, which stalled the whole step).
    """
    log_probs = F.log_softmax(logits.float(), dim=-1).transpose(0, 1)  # (T, B, C)
    frames = torch.full((logits.shape[0],), logits.shape[1], dtype=torch.long)
    return F.ctc_loss(log_probs, targets, frames, lengths.cpu(), blank=charset.BLANK,
                      reduction="mean", zero_infinity=True)


def gradient_magnitude(images: torch.Tensor) -> torch.Tensor:
    """sqrt(((x[r]-x[l])/2)^2 + ((x[b]-x[t])/2)^2 + 1e-6), zero-padded central differences
    (the gradient map of TSRN's gradient prior loss, ORIGINALS.md §3.1)."""
    padded = F.pad(images, (1, 1, 1, 1))
    dx = (padded[..., 1:-1, 2:] - padded[..., 1:-1, :-2]) / 2
    dy = (padded[..., 2:, 1:-1] - padded[..., :-2, 1:-1]) / 2
    return torch.sqrt(dx * dx + dy * dy + 1e-6)


def gradient_prior_loss(sr: torch.Tensor, hr: torch.Tensor) -> torch.Tensor:
    """L1 between the gradient-magnitude maps of SR and HR, on the RGB channels."""
    return F.l1_loss(gradient_magnitude(sr[:, :3].float()), gradient_magnitude(hr[:, :3].float()))


def tsrn_image_loss(sr: torch.Tensor, hr: torch.Tensor) -> torch.Tensor:
    """TSRN's ImageLoss as the originals train with it: 100 * (MSE + 1e-4 * gradient prior).

    MSE runs over every channel given (RGB, plus the mask channel where a model uses one)."""
    return 100.0 * (F.mse_loss(sr.float(), hr.float()) + 1e-4 * gradient_prior_loss(sr, hr))
