"""TPGSR: shapes, prior dropout, gradients, overfitting, parameter counts (CPU, tiny models)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from baselines.crnn import CRNN
from baselines.tpgsr import TPGSR
from image_bench import charset
from image_bench.models.base import ModelOutput
from image_bench.models.clues import InfoGen, prior_dropout, text_prior_loss
from image_bench.models.recognizer import Recognizer
from tests.helpers import make_batch as shared_batch
from tests.helpers import train_losses, without_gradient_after_one_update

# Two shared cores: one thread avoids the oversubscription that makes small GRUs crawl.


class TinyRecognizer(Recognizer):
    """A 2-layer stand-in for the CRNN TPG: 32x128 RGB -> 16 frames of 37 logits."""

    def __init__(self, frames: int = 16, width: int = 16):
        super().__init__()
        self.frames = frames
        self.conv = nn.Conv2d(3, width, 3, stride=4, padding=1)
        self.head = nn.Linear(width, charset.NUM_CLASSES)

    def forward(self, images):
        feat = F.adaptive_avg_pool2d(torch.relu(self.conv(images)), (1, self.frames))
        return ModelOutput(logits=self.head(feat.squeeze(2).transpose(1, 2)))


def tiny_tpgsr(stn: str | bool = True) -> TPGSR:
    return TPGSR(recognizer=TinyRecognizer(), clue_channels=8, channels=16, num_blocks=2,
                 info_widths=(32, 16, 16), stn=stn)


def make_batch(n: int, seed: int = 0) -> dict:
    return shared_batch(n, seed, ["text", "prior", "guided", "sr", "zoom", "crnn", "tsrn", "word"])


def inference_params(model) -> int:
    return sum(p.numel() for name, p in model.named_parameters()
               if not name.startswith(model.training_only))


def test_shapes_train_and_eval():
    model = tiny_tpgsr()
    batch = make_batch(4)
    out, losses = model.training_step(batch)
    assert out.sr.shape == (4, 3, 32, 128) and out.extras["mask"].shape == (4, 1, 32, 128)
    assert out.extras["tp"].shape == (4, 16, charset.NUM_CLASSES)
    assert set(losses) == {"image", "text_prior"} and all(v.isfinite() for v in losses.values())
    model.eval()
    with torch.no_grad():
        out = model(batch["lr"])
    assert out.sr.shape == (4, 3, 32, 128) and out.logits is None
    assert out.sr.abs().max() <= 1.0  # tanh output


def test_infogen_layout_matches_original():
    # TPGSR's InfoGen on T frames gives 1 x (8T - 5) before the resize ([B,32,1,203] for T=26).
    info = InfoGen()
    assert sum(p.numel() for p in info.parameters()) == 853_952
    assert info.net(torch.rand(1, 37, 1, 26)).shape == (1, 32, 1, 203)
    assert InfoGen(c3_padding=True).net(torch.rand(1, 37, 1, 26)).shape == (1, 32, 25, 213)
    assert info(torch.rand(2, 33, 37).softmax(-1)).shape == (2, 32, 16, 64)
    with pytest.raises(ValueError):
        info(torch.rand(2, 37, 1, 33))


@pytest.mark.parametrize("batch_size", [8, 5, 3])
def test_prior_dropout_zeroes_a_quarter_in_training_only(batch_size):
    model = tiny_tpgsr(stn=False)
    seen = []
    model.info_gen.register_forward_hook(lambda mod, inp, out: seen.append(inp[0].detach()))
    lr = make_batch(8)["lr"][:batch_size]
    model.train()
    model(lr)
    zero = (seen[-1].abs().sum(dim=(1, 2)) == 0).tolist()
    assert zero == [i < batch_size // 4 for i in range(batch_size)]
    model.eval()
    with torch.no_grad():
        model(lr)
    assert (seen[-1].abs().sum(dim=(1, 2)) > 0).all()
    # The function itself, on any shape.
    p = torch.ones(8, 3, 5)
    assert prior_dropout(p, True)[:2].sum() == 0 and prior_dropout(p, True)[2:].eq(1).all()
    assert prior_dropout(p, False).eq(1).all()


def test_gradient_reaches_every_trainable_parameter():
    torch.manual_seed(0)
    model = tiny_tpgsr(stn=True)
    missing = without_gradient_after_one_update(model, make_batch(2))
    assert not missing, missing
    assert all(p.grad is None and not p.requires_grad for p in model.teacher.parameters())
    # The TP is not detached: the SR loss alone reaches the TPG.
    model.zero_grad()
    out, losses = model.training_step(make_batch(4))
    losses["image"].backward()
    assert model.tpg.conv.weight.grad.abs().sum() > 0


def test_text_prior_loss_is_zero_for_equal_priors_and_positive_otherwise():
    p = torch.rand(2, 7, 37).softmax(-1)
    assert text_prior_loss(p, p).item() == pytest.approx(0.0, abs=1e-5)
    assert text_prior_loss(torch.rand(2, 7, 37).softmax(-1), p) > 0


def test_loss_falls_on_an_8_image_overfit():
    torch.manual_seed(0)
    model = tiny_tpgsr(stn=False)
    batch = make_batch(8)
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=2e-3,
                           betas=(0.5, 0.999))
    totals = train_losses(model, batch, 8, opt, grad_clip=0.25)
    assert min(totals[-3:]) < 0.6 * totals[0], totals


def test_attach_copies_weights_and_freezes_the_teacher():
    model = tiny_tpgsr(stn=False)
    pretrained = TinyRecognizer()
    model.attach("recognizer", pretrained)
    for ours, theirs in zip(model.tpg.parameters(), pretrained.parameters()):
        assert torch.equal(ours, theirs) and ours is not theirs and ours.requires_grad
    for ours, theirs in zip(model.teacher.parameters(), pretrained.parameters()):
        assert torch.equal(ours, theirs) and not ours.requires_grad
    model.train()
    assert model.tpg.training and not model.teacher.training
    assert model.recognizer is model.teacher  # what the engine's validation reads SR with
    with pytest.raises(ValueError):
        model.attach("recognizer", TinyRecognizer(width=8))  # not the TPG's architecture
    with pytest.raises(KeyError):
        model.attach("language_model", pretrained)


def test_full_size_parameter_counts():
    model = TPGSR(stn="original")  # the official count, with its STN
    assert TPGSR.requires == {"recognizer": "crnn"} and isinstance(model.tpg, CRNN)
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    sr_branch = count(model.info_gen) + count(model.backbone) - count(model.backbone.stn)
    assert sr_branch == 1_690_821  # the official TSRN_TL without STN, exactly
    # Inference: SR branch + the fine-tuned TPG; the STN and the frozen teacher are excluded.
    assert inference_params(model) == 1_690_821 + 8_331_173
    assert count(model) == inference_params(model) + 1_855_048 + 8_331_173
