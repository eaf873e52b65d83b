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
    """
    log_probs = F.log_softmax(logits.float(), dim=-1).transpose(0, 1)  # (T, B, C)
    frames = torch.full((logits.shape[0],), logits.shape[1], dtype=torch.long, device=logits.device)
    return F.ctc_loss(log_probs, targets, frames, lengths, blank=charset.BLANK,
                      reduction="mean", zero_infinity=True)
