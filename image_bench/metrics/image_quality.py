"""PSNR and SSIM in TextZoom's convention (ORIGINALS.md §2, RECOGNIZERS.md §1e).

TextZoom's ``utils/ssim_psnr.py``, inherited unchanged by TPGSR, TATT, TG and C3-STISR:

- images are NCHW RGB tensors in [0, 1]; only the first 3 channels count (a 4th mask channel is
  dropped); no clamping, rounding or Y-channel conversion, no border crop;
- PSNR = 20 log10(255 / sqrt(MSE)) on the images scaled by 255, with ONE MSE over the whole batch;
- SSIM: an 11x11 Gaussian window with sigma 1.5, applied per channel with zero padding of 5
  ("same" size), C1 = 0.01^2, C2 = 0.03^2, and the SSIM map averaged over pixels, channels and
  batch items.

Reported figures are means of these per-batch values over the evaluation batches (so they depend
slightly on the batch size; the evaluator records the batch size it used). The ``*_per_image``
functions give the same formulas with the batch of one image, for per-image tables and figures.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

WINDOW = 11
SIGMA = 1.5
C1 = 0.01**2
C2 = 0.03**2


def _check_pair(sr: torch.Tensor, hr: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    if sr.dim() != 4 or hr.dim() != 4:
        raise ValueError(f"expected NCHW tensors, got {tuple(sr.shape)} and {tuple(hr.shape)}")
    if sr.shape[1] < 3 or hr.shape[1] < 3:
        raise ValueError("PSNR/SSIM read the first 3 (RGB) channels; got fewer")
    sr, hr = sr[:, :3].double(), hr[:, :3].double()
    if sr.shape != hr.shape:
        raise ValueError(f"SR {tuple(sr.shape)} and HR {tuple(hr.shape)} differ in shape")
    return sr, hr


def _psnr_from_mse(mse: torch.Tensor) -> torch.Tensor:
    # Identical images give mse 0 and PSNR +inf, as TextZoom's formula does.
    return 20.0 * torch.log10(255.0 / torch.sqrt(mse))


def psnr(sr: torch.Tensor, hr: torch.Tensor) -> float:
    """PSNR (dB) of a batch, from the MSE over the whole batch (TextZoom's convention)."""
    sr, hr = _check_pair(sr, hr)
    mse = ((sr * 255.0 - hr * 255.0) ** 2).mean()
    return float(_psnr_from_mse(mse))


def psnr_per_image(sr: torch.Tensor, hr: torch.Tensor) -> torch.Tensor:
    """PSNR (dB) of each image, shape (N,), float64."""
    sr, hr = _check_pair(sr, hr)
    mse = ((sr * 255.0 - hr * 255.0) ** 2).flatten(1).mean(1)
    return _psnr_from_mse(mse)


def gaussian_window(size: int = WINDOW, sigma: float = SIGMA) -> torch.Tensor:
    """The normalised 2-D Gaussian window (outer product of the 1-D one), float64."""
    x = torch.arange(size, dtype=torch.float64) - size // 2
    g = torch.exp(-(x**2) / (2 * sigma**2))
    g = g / g.sum()
    return torch.outer(g, g)


def ssim_map(sr: torch.Tensor, hr: torch.Tensor) -> torch.Tensor:
    """The SSIM map (N,3,H,W): depthwise Gaussian filtering with zero padding (pytorch-ssim)."""
    sr, hr = _check_pair(sr, hr)
    channels = sr.shape[1]
    window = gaussian_window().to(sr.device).expand(channels, 1, WINDOW, WINDOW).contiguous()

    def blur(x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, window, padding=WINDOW // 2, groups=channels)

    mu_x, mu_y = blur(sr), blur(hr)
    mu_x2, mu_y2, mu_xy = mu_x * mu_x, mu_y * mu_y, mu_x * mu_y
    sigma_x2 = blur(sr * sr) - mu_x2
    sigma_y2 = blur(hr * hr) - mu_y2
    sigma_xy = blur(sr * hr) - mu_xy
    # Wang et al. 2004, Eq. 13
    return ((2 * mu_xy + C1) * (2 * sigma_xy + C2)) / (
        (mu_x2 + mu_y2 + C1) * (sigma_x2 + sigma_y2 + C2)
    )


def ssim(sr: torch.Tensor, hr: torch.Tensor) -> float:
    """SSIM of a batch: the SSIM map averaged over pixels, channels and images."""
    return float(ssim_map(sr, hr).mean())


def ssim_per_image(sr: torch.Tensor, hr: torch.Tensor) -> torch.Tensor:
    """SSIM of each image, shape (N,), float64."""
    return ssim_map(sr, hr).flatten(1).mean(1)


def finite_or_none(value: float) -> float | None:
    """JSON cannot hold inf/nan: identical images (PSNR inf) are reported as None."""
    return value if math.isfinite(value) else None


__all__ = ["psnr", "ssim", "psnr_per_image", "ssim_per_image", "ssim_map", "gaussian_window"]
