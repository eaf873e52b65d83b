"""The STN's thin-plate spline under the precision the GPU trains in (bf16 autocast).

Every GPU step runs under bf16 autocast; the TPS once built its sampling grid in bf16 there and
its identity warp scrambled the image (~9 dB), which fp32 tests never saw. These tests run the
same code under ``torch.autocast("cpu", dtype=torch.bfloat16)``.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from image_bench.metrics import psnr
from image_bench.models.stn import STN, TPS, _control_points, build_stn, stn_mode
from image_bench.models.tsrn import add_text_mask
from tests.helpers import make_batch


def smooth_lr(n: int = 8, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 3, 8, 32, generator=g)
    return F.interpolate(x, size=(16, 64), mode="bicubic", align_corners=False).clamp(0, 1)


def bf16():
    return torch.autocast("cpu", dtype=torch.bfloat16)


def test_identity_tps_maps_an_image_to_itself_under_bf16_autocast():
    x = smooth_lr()
    tps = TPS((16, 64), 20)
    targets = _control_points(20, 0.05, 0.05)[None].repeat(len(x), 1, 1)
    assert psnr(tps(x, targets), x) > 40
    with bf16():
        out = tps(x, targets)
    assert out.dtype == x.dtype
    assert psnr(out, x) > 40


def test_a_real_warp_is_the_same_under_bf16_autocast_as_in_fp32():
    x = smooth_lr()
    g = torch.Generator().manual_seed(1)
    points = _control_points(20, 0.05, 0.05) + 0.03 * torch.randn(len(x), 20, 2, generator=g)
    tps = TPS((16, 64), 20)
    reference = tps(x, points)
    assert psnr(reference, x) < 35  # it does move the image
    with bf16():
        assert psnr(tps(x, points.bfloat16()), reference) > 40  # bf16 points are cast up


@pytest.mark.parametrize("channels", [3, 4])
def test_stn_at_identity_init_maps_an_image_to_itself_under_bf16_autocast(channels):
    torch.manual_seed(0)
    x = smooth_lr()
    if channels == 4:
        x = torch.cat([x, (x.mean(1, keepdim=True) > 0.5).float()], dim=1)
    stn = STN(channels, init="identity").train()
    with bf16():
        out = stn(x)
    assert out.dtype == torch.float32
    assert psnr(out, x) > 40
    # and it learns from there: the last FC's weights get a gradient under autocast
    with bf16():
        loss = (stn(x) - x.flip(-1)).pow(2).mean()
    loss.backward()
    assert stn.fc2.weight.grad.abs().sum() > 0


def test_original_init_is_a_slight_zoom_out_not_the_identity():
    torch.manual_seed(0)
    x = smooth_lr()
    stn = STN(3, init="original").train()
    out = stn(x)
    assert psnr(out, x) < 40  # margin 0.01 against the targets' 0.05
    with bf16():
        assert psnr(stn(x), out) > 40  # same warp in either precision


def test_stn_settings():
    assert [stn_mode(v) for v in ("none", "original", "identity", True, False, None)] == [
        "none", "original", "identity", "original", "none", "none"]
    assert build_stn("none", 3) is None
    assert torch.equal(build_stn("identity", 3).fc2.bias.view(20, 2),
                       _control_points(20, 0.05, 0.05))
    with pytest.raises(ValueError, match="'sideways'"):
        stn_mode("sideways")
    with pytest.raises(ValueError, match="'sideways'"):
        STN(3, init="sideways")


def _tiny_models():
    from image_bench.models.image import IMAGE
    from tests.test_c3stisr import tiny_c3
    from tests.test_tg import tg_with_stroke
    from tests.test_tpgsr import tiny_tpgsr

    yield "tg", tg_with_stroke(stn="identity", channels=16, num_blocks=1)
    yield "tpgsr", tiny_tpgsr(stn="identity")
    yield "c3stisr", tiny_c3(stn="identity")
    yield "image-1", IMAGE(1, stn="identity", channels=8, dim=16, heads=2, mlp_ratio=2.0,
                           vit_depth=1, fuser_depth=1, clue_vit_depth=1,
                           projector_widths=(16, 8, 8))


def test_sr_models_train_on_the_same_inputs_under_bf16_autocast():
    """The precision-trap sweep: each SR model's training forward (STN warping, with a learned-
    looking warp) under bf16 autocast stays close to its fp32 forward. A grid or solve in bf16
    falls to ~10 dB here; bf16 convolutions alone stay above 25 dB."""
    lr = make_batch(4)["lr"]
    for name, model in _tiny_models():
        torch.manual_seed(0)
        model.train()
        stn = model.stn if hasattr(model, "stn") else model.backbone.stn
        with torch.no_grad():
            stn.fc2.weight.normal_(0, 2e-2)  # a real warp, not the identity
        warped = stn(add_text_mask(lr) if stn.convnet[0][0].in_channels == 4 else lr)[:, :3]
        reference = model(lr).sr[:, :3].float()
        with bf16():
            out = model(lr).sr[:, :3].float()
        assert psnr(out, reference) > 25, name
        assert psnr(warped, lr) < 45, name  # the warp did move the input
