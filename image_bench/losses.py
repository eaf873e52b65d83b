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

    Where the lengths live picks the implementation. On the host: ``F.ctc_loss`` (one fused
    kernel on CUDA); it reads lengths on the host, and lengths on the GPU would cost one
    device-to-host sync per call. On the same GPU as the logits: :func:`ctc_nll`, a recursion of
    plain tensor ops that never syncs, so a whole training step can be captured as a CUDA graph
    (``engine.graphed``).
    """
    return ctc_losses([logits], targets, lengths)[0]


def ctc_losses(logits: list[torch.Tensor], targets: torch.Tensor,
               lengths: torch.Tensor) -> list[torch.Tensor]:
    """:func:`ctc_loss` of several logits against the same targets (IMAGE's p_1..p_{L+1}).

    On the sync-free path the logits are stacked along the batch and run through one recursion
    (one set of T small kernels instead of one per logits tensor)."""
    if lengths.device.type == "cpu":
        frames = torch.full((logits[0].shape[0],), logits[0].shape[1], dtype=torch.long)
        return [F.ctc_loss(F.log_softmax(p.float(), dim=-1).transpose(0, 1), targets, frames,
                           lengths, blank=charset.BLANK, reduction="mean", zero_infinity=True)
                for p in logits]
    return sync_free_ctc_losses(logits, targets, lengths)


def sync_free_ctc_losses(logits: list[torch.Tensor], targets: torch.Tensor,
                         lengths: torch.Tensor) -> list[torch.Tensor]:
    """The 'mean' CTC losses of :func:`ctc_losses` through :func:`ctc_nll`, on any device."""
    k, batch = len(logits), logits[0].shape[0]
    log_probs = F.log_softmax(torch.cat(logits).float(), dim=-1).transpose(0, 1)
    lengths = lengths.repeat(k)
    nll = ctc_nll(log_probs, targets.repeat(k, 1), lengths)
    return list((nll / lengths.clamp(min=1)).view(k, batch).mean(dim=1).unbind())


# A finite stand-in for log(0): -inf would give NaN gradients (exp(-inf - -inf)) at unreachable
# states of the recursion; exp(_LOG_ZERO - x) is exactly 0 in float32 all the same.
_LOG_ZERO = -1e30


def ctc_nll(log_probs: torch.Tensor, targets: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """Per-sample CTC negative log-likelihood by the forward (alpha) recursion of Graves et al.
    2006, in log space, with fixed shapes and no host reads: (T, B, C) log-probabilities, (B, S)
    padded targets, (B,) lengths on the same device -> (B,), zero where the target cannot be
    spelt in T frames (``zero_infinity``). Gradients come from autograd through the recursion.

    Extended label l' = (blank, l_1, blank, l_2, ..., l_S, blank), 2S+1 states. alpha_t(s) =
    [alpha_{t-1}(s) + alpha_{t-1}(s-1) + alpha_{t-1}(s-2) if l'_s != blank and l'_s != l'_{s-2}]
    * y_t(l'_s); the likelihood is alpha_{T-1}(2n) + alpha_{T-1}(2n-1) for a target of length n.
    """
    frames, batch, _ = log_probs.shape
    states = 2 * targets.shape[1] + 1
    ext = targets.new_full((batch, states), charset.BLANK)
    ext[:, 1::2] = targets
    emit = log_probs.gather(2, ext.unsqueeze(0).expand(frames, -1, -1))  # (T, B, 2S+1)
    # the skip s-2 -> s is allowed into a label state that differs from the label two back
    skip = log_probs.new_zeros(batch, states)
    can_skip = (ext[:, 2:] != charset.BLANK) & (ext[:, 2:] != ext[:, :-2])
    skip[:, 2:] = torch.where(can_skip, 0.0, _LOG_ZERO)
    alpha = F.pad(emit[0, :, :2], (0, states - 2), value=_LOG_ZERO)  # alpha_0: only s = 0, 1
    for t in range(1, frames):
        one_back = F.pad(alpha[:, :-1], (1, 0), value=_LOG_ZERO)
        two_back = F.pad(alpha[:, :-2], (2, 0), value=_LOG_ZERO) + skip
        alpha = torch.logaddexp(torch.logaddexp(alpha, one_back), two_back) + emit[t]
    last = alpha.gather(1, torch.stack([2 * lengths, (2 * lengths - 1).clamp(min=0)], dim=1))
    # a zero-length target ends only in the first blank state: drop the second pick
    last[:, 1] = torch.where(lengths > 0, last[:, 1], _LOG_ZERO)
    nll = -torch.logsumexp(last, dim=1)
    return torch.where(nll < -_LOG_ZERO / 2, nll, torch.zeros_like(nll))


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
