"""IMAGE (issue 3): output shapes, Eq. 9-11 losses, gradient flow, ablation switches, cost split.

Real widths (C' = 64, D = 196, M = 32) are used for shapes with one block per transformer stack;
the full depths are built on the meta device to check the parameter targets; gradient and
overfitting tests use tiny widths. One intra-op thread: on a shared 2-core box torch's default
threads spin against each other and slow these small ops twenty-fold.
"""

from __future__ import annotations

import pytest
import torch

from image_bench import charset
from image_bench.losses import ctc_loss, tsrn_image_loss
from image_bench.models.base import ModelOutput
from image_bench.models.image import IMAGE, IMAGE1, IMAGE2, IMAGE3
from image_bench.models.image_parts import ConvDecoder, Projector
from tests.helpers import make_batch, train_losses

TINY = dict(channels=8, dim=16, heads=2, mlp_ratio=2.0, vit_depth=1, fuser_depth=1,
            clue_vit_depth=1, projector_widths=(16, 8, 8), stn="original")
SHALLOW = dict(vit_depth=1, fuser_depth=1, clue_vit_depth=1)  # real widths, one block per stack


def names_under(model, prefixes) -> set[str]:
    return {n for n, _ in model.named_parameters()
            if any(n == p or n.startswith(p + ".") for p in prefixes)}


def grads_after(model, loss) -> dict[str, torch.Tensor | None]:
    model.zero_grad(set_to_none=True)
    loss.backward()
    return {n: p.grad for n, p in model.named_parameters()}


def nonzero(grad) -> bool:
    return grad is not None and bool(grad.abs().sum() > 0)


# ---- sizes ------------------------------------------------------------------------------------

@pytest.mark.parametrize("cls,paper", [(IMAGE1, 31.84e6), (IMAGE2, 56.22e6), (IMAGE3, 80.6e6)])
def test_parameters_match_the_paper(cls, paper):
    with torch.device("meta"):  # shapes only: no memory, no init cost
        model = cls(stn=False)  # the STN is training-only and counted apart
    params = sum(p.numel() for p in model.parameters())
    assert abs(params - paper) / paper < 0.05, params


@pytest.mark.parametrize("iterations", [1, 2, 3])
def test_every_output_has_its_shape(iterations):
    torch.manual_seed(0)
    model = IMAGE(iterations, **SHALLOW)
    lr = torch.rand(2, 3, 16, 64)
    for training in (False, True):  # train mode also runs the STN
        model.train(training)
        with torch.no_grad():
            out = model(lr)
        assert out.sr.shape == (2, 3, 32, 128)
        assert out.logits.shape == (2, 32, charset.NUM_CLASSES)
        assert len(out.sr_steps) == len(out.logits_steps) == iterations
        assert len(out.clue_logits_steps) == iterations
        assert all(s.shape == (2, 3, 32, 128) for s in out.sr_steps)
        assert all(p.shape == (2, 32, 37) for p in out.logits_steps + out.clue_logits_steps)
        assert len(out.predictions()) == 2


def test_ablation_without_guidance_has_no_clue_outputs():
    model = IMAGE(2, guidance=False, **TINY).eval()
    out = model(torch.rand(1, 3, 16, 64))
    assert len(out.sr_steps) == len(out.logits_steps) == 2 and out.clue_logits_steps == []
    assert not any(".pj." in n or ".vt." in n or ".ct2." in n for n, _ in model.named_parameters())


def test_bad_input_is_refused():
    model = IMAGE(1, **TINY)
    with pytest.raises(ValueError, match="LR images"):
        model(torch.rand(1, 3, 32, 128))
    with pytest.raises(ValueError, match="at least one iteration"):
        IMAGE(0)
    with pytest.raises(TypeError, match="fixes iterations"):
        IMAGE2(iterations=3)
    batch = make_batch(2)
    del batch["hr"]
    with pytest.raises(ValueError, match="no 'hr'"):
        model.loss(model(torch.rand(2, 3, 16, 64)), batch)


def test_cost_groups_and_parts_partition_the_inference_parameters():
    model = IMAGE(3, **TINY)
    inference = {n for n, _ in model.named_parameters() if not n.startswith("stn.")}
    groups = model.cost_groups()
    assert list(groups) == ["initial features", "iteration 1", "iteration 2", "iteration 3",
                            "final decoding"]
    for split in (groups, model.model_parts()):
        seen = [names_under(model, prefixes) for prefixes in split.values()]
        assert set().union(*seen) == inference
        assert sum(map(len, seen)) == len(inference)  # no parameter counted twice


# ---- losses and gradients ---------------------------------------------------------------------

def test_loss_terms_are_eq_9_to_11():
    torch.manual_seed(0)
    model = IMAGE(2, **TINY).eval()
    batch = make_batch(2)
    out = model(batch["lr"])
    terms = model.loss(out, batch)
    assert set(terms) == {"sr", "rec", "clue"}
    t, n = batch["targets"], batch["target_lengths"]
    srs = out.sr_steps + [out.sr]
    ps = out.logits_steps + [out.logits]
    torch.testing.assert_close(terms["sr"], sum(2.0 ** (i + 1) * tsrn_image_loss(s, batch["hr"])
                                                for i, s in enumerate(srs)))
    torch.testing.assert_close(terms["rec"], sum(2.0 ** (i + 1) * ctc_loss(p, t, n)
                                                 for i, p in enumerate(ps)))
    torch.testing.assert_close(terms["clue"], sum(2.0 ** (i + 1) * ctc_loss(p, t, n)
                                                  for i, p in enumerate(out.clue_logits_steps)))


def test_full_loss_reaches_every_parameter():
    torch.manual_seed(0)
    model = IMAGE(2, **TINY).train()
    # The STN's last FC starts at zero weights (identity warp), which zeroes the gradient of every
    # STN layer before it at step 0; nudge it so the check sees the STN's whole path.
    with torch.no_grad():
        model.stn.fc2.weight.normal_(0, 1e-3)
    batch = make_batch(4)
    _, terms = model.training_step(batch)
    grads = grads_after(model, sum(terms.values()))
    dead = [n for n, g in grads.items() if not nonzero(g)]
    assert dead == []


@pytest.mark.parametrize("guidance", [True, False])
def test_each_loss_trains_only_its_own_model(guidance):
    """'Optimized separately': L_SR never reaches the recognizer side, L_Rec never the SR side."""
    torch.manual_seed(0)
    model = IMAGE(2, guidance=guidance, **TINY).train()
    with torch.no_grad():
        model.stn.fc2.weight.normal_(0, 1e-3)
    batch = make_batch(4)
    sides = {k: names_under(model, v) for k, v in model.loss_sides().items()}
    assert sides["sr"] | sides["rec"] == {n for n, _ in model.named_parameters()}
    assert not sides["sr"] & sides["rec"]
    for loss_names, own, other in ((("sr",), "sr", "rec"), (("rec", "clue"), "rec", "sr")):
        terms = model.loss(model(batch["lr"]), batch)
        grads = grads_after(model, sum(terms[k] for k in loss_names if k in terms))
        assert all(not nonzero(grads[n]) for n in sides[other]), loss_names
        assert all(nonzero(grads[n]) for n in sides[own]), loss_names


def test_without_guidance_no_information_crosses():
    torch.manual_seed(0)
    model = IMAGE(2, guidance=False, **TINY).eval()
    lr = torch.rand(2, 3, 16, 64)
    before = model(lr)
    sides = {k: names_under(model, v) for k, v in model.loss_sides().items()}
    params = dict(model.named_parameters())
    with torch.no_grad():  # perturb the whole SR model
        for n in sides["sr"]:
            params[n].add_(0.5)
    after = model(lr)
    torch.testing.assert_close(after.logits, before.logits)
    assert not torch.allclose(after.sr, before.sr)


def test_with_guidance_the_pixel_clue_reaches_the_recognizer():
    torch.manual_seed(0)
    model = IMAGE(1, **TINY).eval()
    lr = torch.rand(2, 3, 16, 64)
    before = model(lr).logits
    with torch.no_grad():
        model.pixel_encoder[0].weight.add_(0.5)
    assert not torch.allclose(model(lr).logits, before)


def test_detach_clues_off_lets_the_recognition_loss_reach_the_sr_model():
    torch.manual_seed(0)
    model = IMAGE(1, detach_clues=False, **TINY).train()
    batch = make_batch(4)
    terms = model.loss(model(batch["lr"]), batch)
    grads = grads_after(model, terms["rec"] + terms["clue"])
    assert nonzero(grads["pixel_encoder.0.weight"])


def test_decoder_returns_h_hat_detached_only_when_asked():
    torch.manual_seed(0)
    decoder = ConvDecoder(8).double().train()
    feature = torch.randn(2, 8, 4, 6, dtype=torch.float64)
    h_hat, sr = decoder(feature)
    h_hat_off, sr_off = decoder(feature, map_grad=False)
    assert h_hat.requires_grad and not h_hat_off.requires_grad
    torch.testing.assert_close(h_hat_off, h_hat, rtol=0, atol=0)
    torch.testing.assert_close(sr_off, sr, rtol=0, atol=0)
    weight = decoder.upsample[0].weight
    (g_on,) = torch.autograd.grad(sr.sum(), weight)
    (g_off,) = torch.autograd.grad(sr_off.sum(), weight)
    torch.testing.assert_close(g_off, g_on, rtol=0, atol=0)


def test_without_clue_losses_only_the_final_outputs_are_supervised():
    torch.manual_seed(0)
    model = IMAGE(2, clue_losses=False, **TINY).eval()
    batch = make_batch(2)
    out = model(batch["lr"])
    terms = model.loss(out, batch)
    assert set(terms) == {"sr", "rec"}
    torch.testing.assert_close(terms["sr"], 8.0 * tsrn_image_loss(out.sr, batch["hr"]))
    torch.testing.assert_close(terms["rec"], 8.0 * ctc_loss(out.logits, batch["targets"],
                                                            batch["target_lengths"]))
    garbage = ModelOutput(sr=out.sr, logits=out.logits,
                          sr_steps=[torch.rand_like(s) for s in out.sr_steps],
                          logits_steps=[torch.randn_like(p) for p in out.logits_steps],
                          clue_logits_steps=[torch.randn_like(p) for p in out.clue_logits_steps])
    again = model.loss(garbage, batch)
    assert all(torch.equal(terms[k], again[k]) for k in terms)


@pytest.mark.slow  # 50 steps: ~5 s on an idle 2-core machine, ~30 s when eight jobs share it
def test_loss_falls_when_overfitting_eight_images():
    torch.manual_seed(0)
    # No STN here: its convolutions are most of a tiny model's step; the gradient tests cover it.
    model = IMAGE(1, **{**TINY, "stn": "none"}).train()
    batch = make_batch(8, seed=1)
    losses = train_losses(model, batch, 50, torch.optim.AdamW(model.parameters(), lr=3e-3))
    assert sum(losses[-5:]) / 5 < 0.5 * sum(losses[:5]) / 5, losses


def test_projector_row_interpolation_equals_the_2d_bilinear_one():
    """q_PJ interpolates its one-row map along the width and repeats the row (the fast path):
    the same values and gradients as 2-D bilinear interpolation to H x W."""
    torch.manual_seed(0)
    proj = Projector(charset.NUM_CLASSES, 8, (16, 64), (16, 8, 8)).double().eval()
    probs = torch.rand(2, 32, charset.NUM_CLASSES, dtype=torch.float64)
    out = proj(probs)
    row_map = proj.layers(probs.transpose(1, 2).unsqueeze(2))
    expected = torch.nn.functional.interpolate(row_map, size=(16, 64), mode="bilinear",
                                               align_corners=True)
    assert out.shape == (2, 8, 16, 64)
    torch.testing.assert_close(out, expected, rtol=1e-12, atol=1e-12)
    weights = torch.randn_like(out)
    grad = torch.autograd.grad((out * weights).sum(), proj.layers[0].weight)[0]
    grad_expected = torch.autograd.grad((expected * weights).sum(), proj.layers[0].weight)[0]
    torch.testing.assert_close(grad, grad_expected, rtol=1e-10, atol=1e-12)
