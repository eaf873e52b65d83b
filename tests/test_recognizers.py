"""CRNN and SVTR: shapes, parameter targets, gradient flow, overfitting, decoding, SVTR's mask."""

from __future__ import annotations

import pytest
import torch

from baselines.crnn import CRNN
from baselines.svtr import SVTR, local_window_mask
from image_bench import charset
from image_bench.metrics.cost import count_cost
from tests.helpers import make_batch as shared_batch
from tests.helpers import train_losses

WORDS = ["cat", "road", "42", "hello", "sign", "open", "bus7", "exit"]


@pytest.fixture(scope="module")
def svtr_b() -> SVTR:
    torch.manual_seed(0)
    return SVTR().eval()


def make_batch(n: int = 8) -> dict:
    return shared_batch(n, 0, WORDS)


def n_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def small_crnn() -> CRNN:
    return CRNN(channels=(16, 32, 64, 64, 96, 96, 96), hidden=64)


def small_svtr() -> SVTR:
    # Same code path (local + global mixers, both merges), small widths for a fast CPU test.
    return SVTR(dims=(32, 48, 64), depths=(1, 1, 2), heads=(2, 2, 4), num_local=2,
                out_channels=64, drop_path_rate=0.0, last_drop=0.0)


@pytest.mark.parametrize("name,frames", [("crnn", 33), ("svtr", 25)])
def test_output_shape_and_decoding(name, frames, svtr_b):
    model = svtr_b if name == "svtr" else CRNN().eval()
    with torch.no_grad():
        out = model(torch.rand(2, 3, 32, 128))
    assert out.logits.shape == (2, frames, charset.NUM_CLASSES)
    words = out.predictions()
    assert len(words) == 2 and all(set(w) <= set(charset.ALPHABET) for w in words)
    # read() resizes any input to the recognizer's own size first.
    with torch.no_grad():
        assert model.read(torch.rand(1, 3, 16, 64)).logits.shape == (1, frames, 37)


def test_parameter_targets(svtr_b):
    # Paper Table 1: CRNN 8.36 M (with a 95-class head; ours has 37 classes), SVTR 22.70 M.
    assert abs(n_params(CRNN()) - 8.36e6) / 8.36e6 < 0.01
    assert n_params(CRNN(num_classes=95)) == 8_360_927  # PARSeq's hub CRNN, to the digit
    assert abs(n_params(svtr_b) - 22.70e6) / 22.70e6 < 0.01
    assert n_params(svtr_b) == 22_702_501


def test_svtr_cost_matches_paper_and_counts_attention(svtr_b):
    result = count_cost(svtr_b)
    assert result["params"] == 22_702_501
    assert round(result["flops_paper_compatible"] / 1e9, 2) == 1.90  # paper: 1.90 G
    assert abs(result["flops"] - 2.027e9) / 2.027e9 < 0.005  # fvcore counts the attention too
    assert result["uncounted_ops"] == {}


@pytest.mark.parametrize("build", [CRNN, SVTR])
def test_gradient_reaches_every_parameter(build):
    torch.manual_seed(0)
    model = build().train()
    _, losses = model.training_step(make_batch(2))
    sum(losses.values()).backward()
    missing = [n for n, p in model.named_parameters()
               if p.requires_grad and (p.grad is None or not p.grad.abs().sum() > 0)]
    assert not missing


@pytest.mark.parametrize("build", [small_crnn, small_svtr])
def test_ctc_loss_falls_on_overfit(build):
    """8 images, 30 Adam steps. Narrow widths keep it fast on CPU (same code as the full
    models). In 30 steps CTC gets through its first phase (all-blank); reading the words takes
    a few hundred steps, which the GPU runs do."""
    torch.manual_seed(0)
    model = build().train()
    batch = make_batch(8)
    history = train_losses(model, batch, 30, torch.optim.Adam(model.parameters(), lr=3e-3))
    assert sum(history[-3:]) / 3 < 0.5 * sum(history[:3]) / 3


def test_local_mask_is_a_7x11_window():
    mask = local_window_mask(8, 32, (7, 11))
    assert mask.shape == (256, 256)
    allowed = torch.isfinite(mask).view(8, 32, 8, 32)
    centre = allowed[4, 16]  # token (4, 16) sees rows 1..7 and columns 11..21
    assert centre.sum() == 7 * 11
    assert centre[1:8, 11:22].all()
    corner = allowed[0, 0]  # clipped at the border: rows 0..3, columns 0..5
    assert corner.sum() == 4 * 6


def test_svtr_local_mixer_is_local():
    """Changing a far token must not change the output of a Local block at a given token."""
    model = small_svtr().eval()
    block = model.stages[0][0]
    assert block.mixer_type == "Local"
    x = torch.rand(1, 8 * 32, 32)
    y = x.clone()
    y[0, 0] = torch.randn(32)  # token (0, 0) lies outside the window of token (7, 31)
    with torch.no_grad():
        assert torch.allclose(block(x)[0, -1], block(y)[0, -1], atol=1e-6)
        assert (block(x)[0, 1] - block(y)[0, 1]).abs().max() > 1e-4  # inside: it changes


def test_svtr_rejects_bad_input():
    model = small_svtr()
    with pytest.raises(ValueError, match="built for"):
        model(torch.rand(1, 3, 32, 100))
    with pytest.raises(ValueError, match="divisible"):
        SVTR(image_size=(30, 128))


@pytest.mark.parametrize("masked", [False, True])
def test_written_out_attention_equals_sdpa(masked):
    """vit.Attention writes softmax(q k^T / sqrt(d) + mask) v out (49-wide heads); it must equal
    F.scaled_dot_product_attention on the same projections, with SVTR's additive -inf mask too."""
    import torch.nn.functional as F

    from image_bench.models.vit import Attention

    torch.manual_seed(0)
    attn = Attention(196, 4)
    x = torch.randn(3, 32, 196, dtype=torch.float64)
    attn.double()
    mask = local_window_mask(4, 8, (3, 5)).double() if masked else None
    q, k, v = attn.qkv(x).view(3, 32, 3, 4, 49).permute(2, 0, 3, 1, 4)
    ref = attn.proj(F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
                    .transpose(1, 2).reshape(3, 32, 196))
    assert torch.allclose(attn(x, mask), ref, rtol=1e-10, atol=1e-12)


def test_svtr_blocks_compile_once_per_shape_not_per_drop_rate():
    """Each block has its own stochastic-depth rate (linear schedule). Compiled block by block
    (accel/optimize.py), the rate must be a graph input, not a constant: blocks of one shape and
    mixer share one graph, where a float rate cost one compilation per block."""
    from baselines.svtr import MixingBlock
    from image_bench.models.vit import Block  # noqa: F401 - region types import both

    graphs = []

    def counting_backend(gm, example_inputs):
        graphs.append(gm)
        return gm.forward

    torch._dynamo.reset()
    torch.manual_seed(0)
    model = SVTR(dims=(32, 48, 64), depths=(1, 1, 4), heads=(2, 2, 4), num_local=2,
                 out_channels=64, drop_path_rate=0.3).train()
    blocks = [m for m in model.modules() if isinstance(m, MixingBlock)]
    assert len({float(b.drop_path_rate) for b in blocks}) == 6  # six different rates
    for b in blocks:
        b.compile(backend=counting_backend, dynamic=False)
    model(torch.rand(2, 3, 32, 128)).logits.sum().backward()
    # stage 1: Local; stage 2: Local; stage 3: Global (4 blocks, one shape): 3 graphs, not 6
    assert len(graphs) == 3
    torch._dynamo.reset()


def test_svtr_compiles_only_where_the_schedule_repays_it():
    """SVTR's measured break-even (~450k samples, H100): a pretraining of 1,500 x 256 trains it
    eagerly, the quick (2,500 x 256) and paper profiles' compile; IMAGE always compiles."""
    from image_bench.accel.optimize import compile_pays
    from image_bench.models.image import IMAGE
    from image_bench.profiles import get_profile

    quick, paper = get_profile("quick"), get_profile("paper")
    assert not compile_pays(SVTR, 1_500 * 256)
    assert compile_pays(SVTR, quick.pretrain_steps * quick.pretrain_batch)
    assert compile_pays(SVTR, paper.pretrain_steps * paper.pretrain_batch)
    assert compile_pays(IMAGE, quick.finetune_steps * quick.finetune_batch)
