"""CPU tests of TSRN's image loss (``losses.tsrn_image_loss``) and its compiled switch."""

from __future__ import annotations

import torch

from image_bench import losses


def _gradient_map(img: torch.Tensor) -> torch.Tensor:
    """Central differences written out pixel by pixel, zero outside the image."""
    b, c, h, w = img.shape
    out = torch.empty_like(img)
    for y in range(h):
        for x in range(w):
            right = img[..., y, x + 1] if x + 1 < w else 0.0
            left = img[..., y, x - 1] if x > 0 else 0.0
            down = img[..., y + 1, x] if y + 1 < h else 0.0
            up = img[..., y - 1, x] if y > 0 else 0.0
            out[..., y, x] = torch.sqrt(((right - left) / 2) ** 2 + ((down - up) / 2) ** 2 + 1e-6)
    return out


def test_image_loss_is_100_times_mse_plus_the_gradient_prior():
    torch.manual_seed(0)
    sr = torch.rand(2, 4, 5, 7, dtype=torch.float64)
    hr = torch.rand(2, 4, 5, 7, dtype=torch.float64)
    mse = ((sr - hr) ** 2).mean()
    prior = (_gradient_map(sr[:, :3]) - _gradient_map(hr[:, :3])).abs().mean()  # RGB only
    expected = 100.0 * (mse + 1e-4 * prior)
    torch.testing.assert_close(losses.tsrn_image_loss(sr, hr), expected.float(), rtol=1e-6,
                               atol=0)


def test_the_compiled_switch_leaves_cpu_tensors_on_the_eager_form():
    torch.manual_seed(1)
    sr = torch.rand(2, 3, 4, 6, requires_grad=True)
    hr = torch.rand(2, 3, 4, 6)
    eager = losses.tsrn_image_loss(sr, hr)
    (eager_grad,) = torch.autograd.grad(eager, sr)
    try:
        losses.compile_image_loss()
        assert losses._image_loss_compiled
        got = losses.tsrn_image_loss(sr, hr)  # CPU: never compiled, nor torch.compile called
        (grad,) = torch.autograd.grad(got, sr)
    finally:
        losses.compile_image_loss(False)
    assert not losses._image_loss_compiled
    assert torch.equal(got, eager) and torch.equal(grad, eager_grad)
