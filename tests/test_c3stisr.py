"""C3-STISR and BCN: shapes, every clue reaching the output, gradients, overfitting, glyph
rendering, BCN pretraining and parameter counts (CPU, tiny models)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from baselines.c3stisr import BCN, C3STISR
from image_bench import charset
from image_bench.models.base import ModelOutput
from image_bench.models.clues import DeformableDepthwiseConv, GlyphRenderer
from image_bench.models.recognizer import Recognizer
from tests.helpers import make_batch as shared_batch
from tests.helpers import train_losses, without_gradient_after_one_update

FRAMES = 16


class TinyRecognizer(Recognizer):
    """A 2-layer stand-in for the CRNN TPG: 32x128 RGB -> FRAMES frames of 37 logits."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 16, 3, stride=4, padding=1)
        self.head = nn.Linear(16, charset.NUM_CLASSES)

    def forward(self, images):
        feat = F.adaptive_avg_pool2d(torch.relu(self.conv(images)), (1, FRAMES))
        return ModelOutput(logits=self.head(feat.squeeze(2).transpose(1, 2)))


def tiny_bcn() -> BCN:
    return BCN(d_model=32, heads=2, ffn=64, layers=2, max_length=FRAMES, dropout=0.0)


def tiny_c3(stn: str | bool = False) -> C3STISR:
    return C3STISR(recognizer=TinyRecognizer(), language_model=tiny_bcn(), clue_channels=16,
                   channels=16, num_blocks=2, info_widths=(32, 16, 16), fuser_width=8, stn=stn)


def make_batch(n: int, seed: int = 0) -> dict:
    return shared_batch(n, seed, ["triple", "clues", "glyph", "cloze", "gated", "fusion", "text",
                                  "zoom"])


def spell(words: list[str], frames: int = FRAMES) -> torch.Tensor:
    """Confident probability sequences spelling ``words`` in CTC frames."""
    targets, lengths = charset.encode(words)
    clean = BCN(d_model=8, heads=1, ffn=8, layers=1, max_length=frames).spell_frames(
        targets, lengths)
    return (F.one_hot(clean, charset.NUM_CLASSES).float() * 20).softmax(-1)


def test_shapes_and_losses():
    model = tiny_c3()
    out, losses = model.training_step(make_batch(4))
    assert out.sr.shape == (4, 3, 32, 128) and out.extras["mask"].shape == (4, 1, 32, 128)
    assert out.extras["glyph"].shape == (4, 1, 32, 128)
    assert set(losses) == {"image", "text_prior", "language"}
    assert all(v.isfinite() for v in losses.values())
    # Prior dropout: the first floor(B/4) samples draw nothing, the others something.
    ink = out.extras["glyph"].sum(dim=(1, 2, 3))
    assert ink[0] == 0
    model.eval()
    with torch.no_grad():
        out = model(make_batch(2)["lr"])
    assert out.sr.shape == (2, 3, 32, 128) and out.logits is None


def test_each_clue_changes_the_sr_output():
    torch.manual_seed(0)
    # Training mode, so that batch norms normalise with batch statistics: with a fresh model's
    # running statistics (mean 0, variance 1) the InfoGen maps of a probability sequence are
    # near zero at eval. super_resolve itself is deterministic (no STN here, no dropout in it).
    model = tiny_c3().train()
    lr = make_batch(2)["lr"]
    rec = spell(["house", "river"])
    ling = spell(["horse", "rover"])
    glyph = GlyphRenderer()(rec)
    with torch.no_grad():
        base = model.super_resolve(lr, rec, glyph, ling)
        other = spell(["plane", "cloud"])
        changed = {
            "recognition": model.super_resolve(lr, other, glyph, ling),
            "visual": model.super_resolve(lr, rec, GlyphRenderer()(other), ling),
            "linguistic": model.super_resolve(lr, rec, glyph, other),
        }
    for name, out in changed.items():
        assert (out - base).abs().max() > 1e-5, f"the {name} clue does not reach the output"


def test_gradient_reaches_every_trainable_parameter():
    torch.manual_seed(0)
    model = tiny_c3(stn=True)
    missing = without_gradient_after_one_update(model, make_batch(2))
    assert not missing, missing
    assert all(p.grad is None and not p.requires_grad for p in model.teacher.parameters())


def test_loss_falls_on_an_8_image_overfit():
    torch.manual_seed(0)
    model = tiny_c3()
    batch = make_batch(8)
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=2e-3,
                           betas=(0.5, 0.999))
    totals = train_losses(model, batch, 6, opt, grad_clip=0.25)
    assert min(totals[-3:]) < 0.6 * totals[0], totals


def test_glyph_renderer_draws_the_greedy_text():
    renderer = GlyphRenderer()
    probs = spell(["hell", "a", "hell"])
    probs[2] = 0  # a dropped prior
    ink = renderer(probs)
    assert ink.shape == (3, 1, 32, 128) and 0 <= ink.min() and ink.max() <= 1
    assert ink[0].sum() > 0 and ink[1].sum() > 0 and ink[2].sum() == 0
    # 'hell' has four glyph slots of 32 columns: the two 'l' slots are the same drawing, the
    # 'h' and 'e' slots are not.
    slots = ink[0, 0].split(32, dim=1)
    assert torch.equal(slots[2], slots[3])
    assert not torch.equal(slots[0], slots[2]) and not torch.equal(slots[1], slots[2])
    # Merged repeats and blanks follow greedy CTC: 'aa' frames without a blank draw one 'a'.
    one = torch.zeros(1, 4, 37)
    one[0, :, 11] = 1
    assert torch.equal(renderer(one), renderer(spell(["a"], frames=4)))


def test_deformable_conv_with_zero_offsets_is_a_depthwise_conv():
    dcn = DeformableDepthwiseConv(4, 8, 3)
    x = torch.rand(2, 4, 5, 7)
    offset = torch.zeros(2, 2 * 4 * 9, 5, 7)
    mask = torch.ones(2, 4 * 9, 5, 7)
    expected = F.conv2d(x, dcn.weight, dcn.bias, padding=1, groups=4)
    assert torch.allclose(dcn(x, offset, mask), expected, atol=1e-5)
    # A whole-pixel offset reads the neighbouring pixel.
    offset[:, 1::2] = 1.0  # dx = +1 for every tap
    shifted = F.conv2d(F.pad(x, (0, 2, 1, 1)), dcn.weight, dcn.bias, groups=4)  # taps j..j+2
    assert torch.allclose(dcn(x, offset, mask), shifted, atol=1e-5)


def test_bcn_spelling_round_trips_and_pretraining_reduces_its_loss():
    torch.manual_seed(0)
    words = ["language", "model", "cloze", "book", "a", "abcdefghijklmnopqrstuvwxy"]
    targets, lengths = charset.encode(words)
    bcn = BCN(d_model=32, heads=2, ffn=64, layers=2, max_length=33, dropout=0.0)
    frames = bcn.spell_frames(targets, lengths)
    assert [charset.decode_indices(row) for row in frames.tolist()] == words
    batch = {"targets": targets, "target_lengths": lengths, "lr": torch.zeros(6, 3, 16, 64)}
    opt = torch.optim.Adam(bcn.parameters(), lr=3e-3)
    totals = []
    for _ in range(25):
        out, losses = bcn.training_step(batch)
        opt.zero_grad()
        losses["ctc"].backward()
        opt.step()
        totals.append(losses["ctc"].item())
    assert out.logits.shape == (6, 33, 37) and BCN.kind == "aux"
    assert sum(totals[-5:]) / 5 < 0.5 * totals[0], totals
    with pytest.raises(ValueError):
        bcn(torch.rand(2, 40, 37))


def test_bcn_is_a_cloze_model():
    # The location mask hides token t from query t: output t does not depend on input t.
    torch.manual_seed(0)
    bcn = tiny_bcn().eval()
    probs = torch.rand(1, FRAMES, 37).softmax(-1)
    changed = probs.clone()
    changed[0, 3] = torch.rand(37).softmax(-1)
    with torch.no_grad():
        delta = (bcn(changed).logits - bcn(probs).logits).abs().amax(dim=-1)[0]
    assert delta[3] < 1e-5 and delta.max() > 1e-4


def test_full_size_parameter_counts():
    model = C3STISR(stn="original")  # the release, with its STN
    assert C3STISR.requires == {"recognizer": "crnn", "language_model": "bcn"}
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    assert count(model.language_model) == 12_647_461  # ABINet's BCN, as in the release
    assert count(model.vis_fuser) == 334_096 and count(model.attn_rec) == 35_848
    inference = sum(p.numel() for n, p in model.named_parameters()
                    if not n.startswith(model.training_only))
    sr_side = inference - count(model.tpg) - count(model.language_model)
    assert sr_side == 3_870_341
    assert inference == 24_848_975  # SR side + BCN + TPG CRNN; no STN, no teacher
    assert count(model) == inference + 1_855_048 + count(model.teacher)
