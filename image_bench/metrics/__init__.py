"""Metrics: word accuracy and NED (``accuracy``), PSNR/SSIM in TextZoom's convention
(``image_quality``), parameters and FLOPs (``cost``, imported on its own: it needs fvcore)."""

from image_bench.metrics.accuracy import one_minus_ned, word_accuracy
from image_bench.metrics.image_quality import psnr, psnr_per_image, ssim, ssim_per_image

__all__ = ["psnr", "ssim", "psnr_per_image", "ssim_per_image", "word_accuracy", "one_minus_ned"]
