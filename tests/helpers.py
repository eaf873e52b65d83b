"""What the model tests share: a small LR-HR batch, a short training loop, a gradient check."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from image_bench import charset

WORDS = ["street", "2018", "language", "milk", "tracker", "excellent", "rogers", "zoom"]


def make_batch(n: int = 8, seed: int = 0, labels: list[str] | None = None) -> dict:
    """Smooth random HR images (structure at 8x32, upsampled), LR by bicubic downsampling,
    and words (``labels`` or a fixed list, cycled)."""
    g = torch.Generator().manual_seed(seed)
    hr = F.interpolate(torch.rand(n, 3, 8, 32, generator=g), size=(32, 128), mode="bilinear",
                       align_corners=False)
    lr = F.interpolate(hr, size=(16, 64), mode="bicubic", align_corners=False).clamp(0, 1)
    words = labels or WORDS
    labels = [words[i % len(words)] for i in range(n)]
    targets, lengths = charset.encode(labels)
    return {"lr": lr, "hr": hr, "targets": targets, "target_lengths": lengths, "labels": labels}


def train_losses(model, batch: dict, steps: int, optimizer, grad_clip: float | None = None,
                 terms: list | None = None) -> list[float]:
    """Run ``steps`` training steps on one batch; the total loss of each step. ``terms``, if
    given, collects each step's dict of loss terms."""
    params = [p for p in model.parameters() if p.requires_grad]
    history = []
    for _ in range(steps):
        _, losses = model.training_step(batch)
        loss = sum(losses.values())
        optimizer.zero_grad()
        loss.backward()
        if grad_clip is not None:
            torch.nn.utils.clip_grad_norm_(params, grad_clip)
        optimizer.step()
        history.append(loss.item())
        if terms is not None:
            terms.append({k: v.item() for k, v in losses.items()})
    assert all(torch.isfinite(torch.tensor(history))), history
    return history


def without_gradient(model) -> list[str]:
    """Names of trainable parameters that the last backward pass left without a gradient."""
    return [n for n, p in model.named_parameters()
            if p.requires_grad and (p.grad is None or p.grad.abs().sum() == 0)]


def without_gradient_after_one_update(model, batch: dict) -> list[str]:
    """without_gradient after one SGD update on ``batch``: an STN's last layer starts at zero
    weights (identity warp), which blocks the gradient to the layers before it until it moved."""
    train_losses(model, batch, 2, torch.optim.SGD(model.parameters(), lr=1e-3))
    return without_gradient(model)
