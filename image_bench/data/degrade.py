"""Degradation models: HR crop -> LR crop, each at its own native size.

(a) ``synth``: the "S" pretraining data of STISR work: bicubic x2 downsampling after a mild blur.
(b) ``camera``: a TextZoom-like zoom pair. TextZoom's LR is the same scene shot at a shorter focal
    length, so the LR has fewer pixels on the text, is out of focus, slightly misaligned with the
    HR (shift, scale, rotation), noisier, differently exposed, and JPEG-compressed. Three
    severities give easy / medium / hard.
(c) ``ic15``: an IC15-352-like LR-only crop: more noise, lower quality JPEG, blur and contrast
    calibrated on real IC15 training crops (`python bench/data.py ic15`); the different
    backgrounds and perspective come from the renderer's IC15 style.

Severities are calibrated (`python bench/data.py quality`) so that, as in TextZoom, the
bicubic-upsampled LR (16x64 -> 32x128) against the HR gives about 20.35 dB PSNR / 0.696 SSIM over
the test set, falling from easy to hard.
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageFilter


@dataclass(frozen=True)
class Severity:
    """Ranges sampled uniformly per image. Lengths are in HR pixels."""

    scale: tuple[float, float]  # LR native size / HR native size
    blur: tuple[float, float]  # defocus, Gaussian sigma in HR pixels
    shift: float  # max misalignment, HR pixels
    zoom: float  # max relative scale misalignment
    rotate: float  # max misalignment rotation, degrees
    noise: tuple[float, float]  # sensor noise sigma, [0,1] units at LR size
    gain: tuple[float, float]  # exposure multiplier
    contrast: tuple[float, float]  # contrast around the mean
    jpeg: tuple[int, int]  # JPEG quality of the stored LR


SEVERITIES = {
    # calibrated with `python bench/data.py quality` (see the module docstring)
    "easy": Severity(scale=(0.45, 0.6), blur=(0.3, 0.8), shift=0.4, zoom=0.01, rotate=0.4,
                     noise=(0.005, 0.012), gain=(0.96, 1.04), contrast=(0.93, 1.0), jpeg=(75, 95)),
    "medium": Severity(scale=(0.38, 0.52), blur=(0.7, 1.4), shift=0.7, zoom=0.02, rotate=0.7,
                       noise=(0.01, 0.02), gain=(0.93, 1.07), contrast=(0.88, 1.0), jpeg=(50, 90)),
    "hard": Severity(scale=(0.3, 0.45), blur=(0.9, 1.7), shift=1.0, zoom=0.025, rotate=0.9,
                     noise=(0.012, 0.025), gain=(0.9, 1.1), contrast=(0.85, 1.0), jpeg=(40, 85)),
    # IC15-352-like: other cameras, more noise and worse JPEG than TextZoom (no HR to compare
    # with). Blur and contrast calibrated on the real ICDAR 2015 *training* crops of at most 16
    # pixels high (`python bench/data.py ic15 --real ../shared/data/real/ic15-train
    # --max-height 16`): at the 64x16 input their median sharpness (mean |Laplacian|) is 0.065
    # and contrast (grey std) 0.105; blur 1.2-2.2 and contrast 0.75-1.0 gave 0.045 / 0.084 (and
    # every recognizer read the stand-in 2-7x worse than the real crops), these give 0.063 / 0.098.
    "ic15": Severity(scale=(0.25, 0.4), blur=(0.6, 1.3), shift=0.0, zoom=0.0, rotate=0.0,
                     noise=(0.02, 0.045), gain=(0.75, 1.25), contrast=(0.9, 1.0), jpeg=(25, 70)),
}


def to_jpeg(img: Image.Image, quality: int) -> bytes:
    out = io.BytesIO()
    img.save(out, format="JPEG", quality=int(quality))
    return out.getvalue()


def to_jpeg444(img: Image.Image | np.ndarray, quality: int) -> bytes:
    """High-quality JPEG without chroma subsampling: the clean images keep their colour edges."""
    if isinstance(img, np.ndarray):
        img = Image.fromarray(img, "RGB")
    out = io.BytesIO()
    img.save(out, format="JPEG", quality=int(quality), subsampling=0)
    return out.getvalue()


def to_png(img: Image.Image) -> bytes:
    out = io.BytesIO()
    img.save(out, format="PNG", compress_level=1)  # fast: the stand-ins are large
    return out.getvalue()


def mild_blur(sigma: float) -> ImageFilter.BoxBlur:
    """A blur of standard deviation ``sigma`` (< 1 px) as one 3-tap pass [a, 1-2a, a], a = s^2/2.

    PIL's BoxBlur with a radius r < 1 is exactly that kernel, [r, 1, r] / (1 + 2r), whose
    variance 2r / (1 + 2r) we set to sigma^2. GaussianBlur would run three box passes per axis
    for the same small kernel, three times the cost of this one.
    """
    if not 0 < sigma < 1:
        raise ValueError(f"mild_blur needs 0 < sigma < 1, got {sigma}")
    var = sigma * sigma
    return ImageFilter.BoxBlur(var / (2 * (1 - var)))


def synth(hr: np.ndarray, rng: np.random.Generator) -> Image.Image:
    """(a) mild Gaussian-like blur (sigma 0.3-0.8), then bicubic x2 down; the LR as PIL RGB."""
    h, w = hr.shape[:2]
    img = Image.fromarray(hr, "RGB").filter(mild_blur(float(rng.uniform(0.3, 0.8))))
    return img.resize((max(1, round(w / 2)), max(1, round(h / 2))), Image.BICUBIC)


def _misalign(img: Image.Image, rng: np.random.Generator, sev: Severity) -> Image.Image:
    """Small similarity transform about the centre (the LR shot is not registered to the HR)."""
    if sev.shift == 0 and sev.zoom == 0 and sev.rotate == 0:
        return img
    w, h = img.size
    s = 1 + float(rng.uniform(-sev.zoom, sev.zoom))
    theta = math.radians(float(rng.uniform(-sev.rotate, sev.rotate)))
    tx, ty = rng.uniform(-sev.shift, sev.shift, 2)
    c, sn = math.cos(theta) / s, math.sin(theta) / s
    cx, cy = w / 2, h / 2
    # PIL AFFINE maps output (x, y) to input (a x + b y + c, d x + e y + f)
    coeffs = (c, -sn, cx - c * cx + sn * cy + tx, sn, c, cy - sn * cx - c * cy + ty)
    # edge pixels fill the border, as the real LR shows more of the scene there
    return img.transform(img.size, Image.AFFINE, coeffs, Image.BILINEAR,
                         fillcolor=tuple(int(v) for v in np.asarray(img)[0, 0]))


def camera(hr: np.ndarray, rng: np.random.Generator, severity: str) -> bytes:
    """(b)/(c) the zoom model; returns the LR as JPEG bytes at its native size."""
    if severity not in SEVERITIES:
        raise ValueError(f"unknown severity {severity!r}; known: {', '.join(SEVERITIES)}")
    sev = SEVERITIES[severity]
    h, w = hr.shape[:2]
    img = _misalign(Image.fromarray(hr, "RGB"), rng, sev)
    img = img.filter(ImageFilter.GaussianBlur(float(rng.uniform(*sev.blur))))
    scale = float(rng.uniform(*sev.scale))
    size = (max(4, round(w * scale)), max(3, round(h * scale)))
    # the sensor integrates over each (larger) pixel: area-like reduction
    img = img.resize(size, Image.BILINEAR, reducing_gap=2.0)
    arr = np.asarray(img, np.float32) * (1 / 255)
    mean = float(arr.mean())
    arr = (arr - mean) * float(rng.uniform(*sev.contrast)) + mean
    arr = arr * float(rng.uniform(*sev.gain))
    sigma = float(rng.uniform(*sev.noise))
    # luminance-dominated noise with a little per-channel (chroma) noise, as phone sensors show
    noise = rng.standard_normal((size[1], size[0], 1), dtype=np.float32) * sigma
    noise = noise + rng.standard_normal((size[1], size[0], 3), dtype=np.float32) * (sigma * 0.4)
    arr = np.clip((arr + noise) * 255 + 0.5, 0, 255).astype(np.uint8)
    # 4:4:4: the real crops were compressed as part of a full-resolution photo, where chroma
    # subsampling costs far less than it would on a 16-pixel-high crop
    return to_jpeg444(Image.fromarray(arr, "RGB"), int(rng.integers(sev.jpeg[0], sev.jpeg[1] + 1)))
