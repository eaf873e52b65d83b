"""TG (Text Gestalt): stroke decomposition, stroke-level recognizer, Stroke Focus Loss."""

from __future__ import annotations

import pytest
import torch

from baselines.tg import (
    IGNORE,
    STROKE_CODES,
    STROKE_END,
    TG,
    StrokeTransformer,
    encode_strokes,
    stroke_sequence,
)
from image_bench import charset
from image_bench.models import base
from tests.helpers import make_batch as shared_batch
from tests.helpers import train_losses

LABELS = ["hello", "world", "42", "Text", "zoom", "gestalt", "stroke", "b9"]


def make_batch(n: int = 8, seed: int = 0) -> dict:
    return shared_batch(n, seed, LABELS)


def tiny_stroke(seed: int = 0) -> StrokeTransformer:
    torch.manual_seed(seed)
    return StrokeTransformer(width=4, heads=4, blocks=(1, 1, 1, 1))





def tg_with_stroke(seed: int = 0, **kwargs) -> TG:
    torch.manual_seed(seed)
    model = TG(**{"stn": "original", **kwargs})  # the originals' STN, so tests see it
    model.attach("stroke", tiny_stroke(seed + 1))
    return model


# ----------------------------------------------------------------------------- decomposition

def test_decomposition_covers_alphabet_with_codes_1_to_9():
    assert set(STROKE_CODES) == set(charset.ALPHABET)
    assert all(set(codes) <= set("123456789") and codes for codes in STROKE_CODES.values())
    # facts of the original's english_decomposition.txt
    assert STROKE_CODES["w"] == "2342" and STROKE_CODES["8"] == "8989" and STROKE_CODES["l"] == "2"


def test_stroke_sequence_normalises_and_ends_with_end_code():
    assert stroke_sequence("a1") == [6, 8, 2, STROKE_END]
    assert stroke_sequence("A-1!") == stroke_sequence("a1")  # case and punctuation drop out
    assert stroke_sequence("!!") == [STROKE_END]


def test_encode_strokes_shifts_targets_behind_start_code():
    inputs, targets, lengths = encode_strokes(["ab", "l"])
    assert lengths.tolist() == [5, 2]
    assert targets[0].tolist() == [6, 8, 2, 8, 0]
    assert inputs[0].tolist() == [0, 6, 8, 2, 8]
    assert targets[1].tolist() == [2, 0, IGNORE, IGNORE, IGNORE]
    assert inputs[1].tolist() == [0, 2, 0, 0, 0]
    with pytest.raises(ValueError):
        encode_strokes([])


# ----------------------------------------------------------------------------- stroke recognizer

def test_stroke_recognizer_full_size_matches_original():
    model = StrokeTransformer()
    # original 62,273,452 holds two unused Linear(16, 1) (34 params) that this one omits
    assert sum(p.numel() for p in model.parameters()) == 62_273_418
    model.eval()
    with torch.no_grad():
        assert model.encoder(torch.rand(1, 1, 32, 128)).shape == (1, 1024, 8, 32)


def test_stroke_recognizer_shapes_teacher_forced_and_greedy():
    model = tiny_stroke().eval()
    batch = make_batch(2)
    tokens, _, _ = encode_strokes(batch["labels"])
    with torch.no_grad():
        out = model(batch["hr"], tokens)
        assert out.extras["stroke_logits"].shape == (2, tokens.shape[1], 10)
        assert out.extras["attention"].shape == (2, 4, tokens.shape[1], 8 * 32)
        maps = out.extras["attention"]
        assert torch.allclose(maps.sum(-1), torch.ones_like(maps.sum(-1)), atol=1e-5)
        greedy = model(batch["hr"][:, :1])  # grey input is accepted too
        assert greedy.extras["strokes"].shape[0] == 2
    with pytest.raises(ValueError):
        model(torch.rand(1, 3, 16, 64), tokens[:1])


def test_stroke_recognizer_training_step_overfits():
    model = tiny_stroke().train()
    batch = make_batch(8)
    steps: list[dict] = []
    losses = train_losses(model, batch, 15, torch.optim.Adam(model.parameters(), lr=3e-3),
                          terms=steps)
    assert set(steps[-1]) == {"stroke_ce"}
    # below a third: past what stroke frequencies alone give (their entropy is ~2.1 nats)
    assert losses[-1] < 0.35 * losses[0], losses


# ----------------------------------------------------------------------------- TG

def test_tg_shapes_and_stn_only_in_training():
    model = tg_with_stroke()
    lr = make_batch(2)["lr"]
    model.eval()
    with torch.no_grad():
        out = model(lr)
    assert out.sr.shape == (2, 3, 32, 128) and out.logits is None
    assert float(out.sr.abs().max()) <= 1.0  # tanh output
    calls = []
    handle = model.backbone.stn.register_forward_hook(lambda *a: calls.append(1))
    with torch.no_grad():
        model(lr)
        model.train()
        model(lr)
    handle.remove()
    assert len(calls) == 1  # the STN ran in the training-mode pass only
    with pytest.raises(ValueError):
        model(torch.rand(2, 4, 16, 64))


def test_tg_gradients_reach_sr_params_but_not_stroke_recognizer():
    model = tg_with_stroke().train()
    batch = make_batch(2)
    _, terms = model.training_step(batch)
    assert set(terms) == {"mse", "stroke_focus"}
    assert all(torch.isfinite(v) for v in terms.values())
    sum(terms.values()).backward()
    for name, p in model.named_parameters():
        if name.startswith("stroke."):
            assert not p.requires_grad and p.grad is None, name
        elif name.startswith("backbone.stn.") and not name.startswith("backbone.stn.fc2"):
            # the STN's last FC starts at zero weights (identity warp), so the layers before it
            # get exactly zero gradient at step 0 -- but they are on the graph
            assert p.grad is not None, name
        else:
            assert p.grad is not None and p.grad.abs().sum() > 0, name
    assert model.stroke.training is False  # train() keeps the frozen teacher in eval mode


def test_stroke_focus_term_alone_reaches_sr():
    model = tg_with_stroke().train()
    batch = make_batch(2)
    out = model(batch["lr"])
    sr = out.sr.detach().requires_grad_(True)
    out.sr = sr
    model.loss(out, batch)["stroke_focus"].backward()
    assert sr.grad is not None and sr.grad.abs().sum() > 0


def test_tg_loss_falls_on_eight_image_overfit():
    # a slim TSRN (16 channels, 1 SRB, STN kept) so the CPU steps stay within seconds
    model = tg_with_stroke(channels=16, num_blocks=1).train()
    batch = make_batch(8)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.Adam(params, lr=2e-3, betas=(0.5, 0.999))
    losses = train_losses(model, batch, 10, opt, grad_clip=0.25)
    assert min(losses[-3:]) < 0.5 * losses[0], losses


def test_inference_params_exclude_stn_and_stroke_recognizer():
    model = tg_with_stroke()
    prefixes = tuple(prefix + "." for prefix in TG.training_only)
    inference = sum(p.numel() for n, p in model.named_parameters() if not n.startswith(prefixes))
    assert inference == 816_260  # official TSRN, 3 channels, without STN (ORIGINALS.md §4)
    assert abs(inference - 826_000) / 826_000 < 0.05
    stroke = sum(p.numel() for p in model.stroke.parameters())
    stn = sum(p.numel() for p in model.backbone.stn.parameters())
    assert sum(p.numel() for p in model.parameters()) == inference + stroke + stn


def test_tg_attach_and_loss_errors():
    model = TG()
    batch = make_batch(2)
    with pytest.raises(RuntimeError, match="tg-stroke"):
        model.loss(model(batch["lr"]), batch)
    with pytest.raises(KeyError):
        model.attach("recognizer", tiny_stroke())
    with pytest.raises(TypeError):
        model.attach("stroke", torch.nn.Linear(2, 2))
    assert TG.requires == {"stroke": "tg-stroke"}
    # TSRN's rate (the original TG's 1e-4 learns too slowly at the quick schedule), its clip
    assert TG.optim_overrides["lr"] == 1e-3 and TG.optim_overrides["grad_clip"] == 0.25


def test_both_names_are_registered():
    assert base._REGISTRY["tg"] is TG
    assert base._REGISTRY["tg-stroke"] is StrokeTransformer
    assert TG.kind == "sr" and StrokeTransformer.kind == "aux"
