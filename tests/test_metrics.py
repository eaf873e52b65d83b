"""PSNR/SSIM against independent references; accuracy/NED normalisation edge cases."""

import math

import numpy as np
import pytest
import torch
from skimage.metrics import structural_similarity

from image_bench.metrics import one_minus_ned, psnr, psnr_per_image, ssim, ssim_per_image
from image_bench.metrics.accuracy import normalized_edit_distance, word_accuracy, word_correct


def _pair(seed=0, n=3, h=32, w=128):
    g = torch.Generator().manual_seed(seed)
    hr = torch.rand(n, 3, h, w, generator=g)
    sr = (hr + 0.1 * torch.randn(n, 3, h, w, generator=g)).clamp(0, 1)
    return sr, hr


def test_psnr_closed_form_constant_offset():
    hr = torch.full((2, 3, 8, 8), 0.5)
    sr = hr + 0.1  # MSE on the 255 scale is 25.5^2
    assert psnr(sr, hr) == pytest.approx(20 * math.log10(255 / 25.5), abs=1e-5)


def test_psnr_uses_batch_mse_not_mean_of_images():
    hr = torch.zeros(2, 3, 4, 4)
    sr = hr.clone()
    sr[0] += 0.1
    sr[1] += 0.3
    mse = ((0.1 * 255) ** 2 + (0.3 * 255) ** 2) / 2
    assert psnr(sr, hr) == pytest.approx(20 * math.log10(255 / math.sqrt(mse)), abs=1e-5)
    per = psnr_per_image(sr, hr)
    assert per[0].item() == pytest.approx(20 * math.log10(255 / 25.5), abs=1e-5)
    assert per.mean().item() != pytest.approx(psnr(sr, hr), abs=1e-3)


def test_psnr_reads_rgb_only_and_checks_shapes():
    sr, hr = _pair()
    sr4 = torch.cat([sr, torch.rand(3, 1, 32, 128)], 1)  # a mask channel is ignored
    assert psnr(sr4, hr) == pytest.approx(psnr(sr, hr))
    with pytest.raises(ValueError):
        psnr(sr[:, :, :16], hr)


def test_ssim_matches_skimage_away_from_borders():
    sr, hr = _pair(seed=1, n=1)
    ours = None
    from image_bench.metrics.image_quality import ssim_map

    ours = ssim_map(sr, hr)[0].numpy()  # (3,H,W)
    _, ref = structural_similarity(
        hr[0].permute(1, 2, 0).double().numpy(), sr[0].permute(1, 2, 0).double().numpy(),
        gaussian_weights=True, sigma=1.5, use_sample_covariance=False, data_range=1,
        channel_axis=2, full=True,
    )
    ref = np.transpose(ref, (2, 0, 1))
    # skimage truncates the Gaussian at 3.5 sigma: window 2*int(3.5*1.5+0.5)+1 = 11, the same
    # size; borders differ (skimage reflects, TextZoom zero-pads), so compare the interior.
    np.testing.assert_allclose(ours[:, 5:-5, 5:-5], ref[:, 5:-5, 5:-5], atol=1e-6)


def test_ssim_identity_and_per_image():
    sr, hr = _pair(seed=2)
    assert ssim(hr, hr) == pytest.approx(1.0, abs=1e-12)
    per = ssim_per_image(sr, hr)
    assert per.shape == (3,)
    assert per.mean().item() == pytest.approx(ssim(sr, hr), abs=1e-12)  # equal-size images
    assert 0 < ssim(sr, hr) < 1


def test_accuracy_normalisation_edge_cases():
    preds = ["cafe2", "HELLO", "", "abc", "a b"]
    labels = ["Café-2!", "hello", "!!", "abd", "ab"]
    assert word_correct(preds, labels) == [False, True, True, False, True]
    # 'Café-2!' normalises to 'caf2' (the accent is dropped, not folded)
    assert word_correct(["caf2"], ["Café-2!"]) == [True]
    assert word_accuracy(preds, labels) == pytest.approx(3 / 5)
    with pytest.raises(ValueError):
        word_accuracy([], [])
    with pytest.raises(ValueError):
        word_correct(["a"], [])


def test_ned_icdar2019_max_length():
    assert normalized_edit_distance("abc", "abd") == pytest.approx(1 / 3)
    assert normalized_edit_distance("ab", "abcd") == pytest.approx(2 / 4)  # max, not len(gt)
    assert normalized_edit_distance("", "") == 0.0
    assert normalized_edit_distance("", "xy") == 1.0
    assert normalized_edit_distance("HeLLo!", "hello") == 0.0
    assert one_minus_ned(["abc", "ab"], ["abd", "abcd"]) == pytest.approx(1 - (1 / 3 + 1 / 2) / 2)
