"""The cost counter: fvcore handlers against analytic counts, training-only parameters, the
paper-compatible hook count, cost groups and the ``image-bench cost`` command."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F
from click.testing import CliRunner
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from image_bench.metrics.cost import cost, count_cost, count_params, fvcore_analysis, hook_macs
from image_bench.models.base import BenchModel, ModelOutput


def fvcore_total(module: nn.Module, x: torch.Tensor) -> int:
    with torch.no_grad():
        analysis = fvcore_analysis(module.eval(), x)
        total = int(analysis.total())
        assert not analysis.unsupported_ops().get("aten::gru")
        assert not analysis.unsupported_ops().get("aten::lstm")
        return total


class RNNOut(nn.Module):
    def __init__(self, rnn: nn.Module):
        super().__init__()
        self.rnn = rnn

    def forward(self, x):
        return self.rnn(x)[0]


@pytest.mark.parametrize("layers,bidirectional,batch_first", [(1, True, True), (2, True, False),
                                                               (1, False, True)])
def test_gru_handler_matches_analytic_and_flop_counter(layers, bidirectional, batch_first):
    i, h, n, t = 10, 6, 3, 7
    gru = nn.GRU(i, h, num_layers=layers, bidirectional=bidirectional, batch_first=batch_first)
    x = torch.rand(n, t, i) if batch_first else torch.rand(t, n, i)
    d = 2 if bidirectional else 1
    # 3*H*(I+H) per step per direction; layers above the first read D*H features.
    analytic = sum(d * n * t * 3 * h * ((i if layer == 0 else d * h) + h)
                   for layer in range(layers))
    assert fvcore_total(RNNOut(gru), x) == analytic
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        gru(x)
    assert counter.get_total_flops() == 2 * analytic  # dispatch-level FLOPs = 2 x MACs on CPU


@pytest.mark.parametrize("layers,bidirectional", [(1, True), (2, False)])
def test_lstm_handler_matches_analytic(layers, bidirectional):
    i, h, n, t = 12, 5, 2, 9
    lstm = nn.LSTM(i, h, num_layers=layers, bidirectional=bidirectional)  # sequence-first
    d = 2 if bidirectional else 1
    analytic = sum(d * n * t * 4 * h * ((i if layer == 0 else d * h) + h)
                   for layer in range(layers))
    assert fvcore_total(RNNOut(lstm), torch.rand(t, n, i)) == analytic


class SDPA(nn.Module):
    def forward(self, q):
        k = q[:, :, :9].repeat(1, 1, 2, 1)  # Nk = 18 keys
        v = torch.cat([k, k[..., :2]], dim=-1)  # dv = 6 != d = 4
        return F.scaled_dot_product_attention(q, k, v)


def test_sdpa_handler_matches_analytic_and_flop_counter():
    q = torch.rand(2, 3, 11, 4)
    b, heads, nq, d, nk, dv = 2, 3, 11, 4, 18, 6
    analytic = b * heads * nq * nk * d + b * heads * nq * nk * dv  # q k^T, then attn v
    analysis = fvcore_analysis(SDPA(), q)
    assert analysis.by_operator()["scaled_dot_product_attention"] == analytic
    with FlopCounterMode(display=False) as counter:
        SDPA()(q)
    assert counter.get_total_flops() == 2 * analytic


class TinySR(BenchModel):
    """A TSRN backbone with its training-only STN, behind the common interface."""

    training_only = ("tsrn.stn",)

    def __init__(self, **tsrn_kwargs):
        super().__init__()
        from image_bench.models.tsrn import TSRNBackbone

        self.tsrn = TSRNBackbone(mask=True, stn="original", **tsrn_kwargs)

    def forward(self, lr):
        return ModelOutput(sr=self.tsrn(lr))

    def cost_groups(self):
        return {"head": ["tsrn.block1"], "blocks": ["tsrn.blocks"],
                "tail": ["tsrn.block7", "tsrn.upsample", "tsrn.tail"]}


def test_params_exclude_training_only():
    model = TinySR()
    stn_params = sum(p.numel() for p in model.tsrn.stn.parameters())
    params, training_only = count_params(model)
    assert params == 826_629  # the official TSRN with mask, STN excluded
    assert training_only == stn_params > 0
    assert count_params(model, training_only=()) == (826_629 + stn_params, 0)


def test_count_cost_on_sr_net_groups_add_up():
    model = TinySR(channels=16, num_blocks=2)  # small, for CPU time; same code path
    result = count_cost(model)
    assert (result["params"], result["params_training_only"]) == count_params(model)
    assert result["input"] == [1, 3, 16, 64]
    # The STN runs in training only; the GRUs are counted, nothing is silently zero.
    assert result["uncounted_ops"] == {}
    # 4 GRU blocks x 2 directions x (16 x 64) positions x 3*H*(I+H) with I = 16, H = 8.
    analytic_grus = 4 * 2 * 16 * 64 * 3 * 8 * (16 + 8)
    assert result["flops"] > analytic_grus
    assert sum(result["groups"].values()) + result["groups_residual"] == result["flops"]
    assert result["groups_residual"] == 0
    assert result["groups"]["blocks"] > analytic_grus
    assert set(result["groups_paper_compatible"]) == {"head", "blocks", "tail"}
    assert model.training  # count_cost restores the mode it found


def test_hook_counter_on_a_hand_counted_net():
    net = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(),
                        nn.Flatten(), nn.Linear(4 * 5 * 6, 7))
    counts = hook_macs(net, torch.rand(1, 3, 5, 6))
    positions = 5 * 6
    assert counts["0"] == positions * 4 * 3 * 9 + 4 * positions  # conv + per-position bias
    assert counts["1"] == 2 * 4 * positions  # affine batch norm
    assert counts["2"] == 2 * 4 * positions  # ReLU, counted twice as ptflops does
    assert counts["4"] == 120 * 7 + 7  # bias once per feature, as ptflops does


def test_paper_compatible_count_reproduces_table1_crnn():
    from baselines.crnn import CRNN

    result = count_cost(CRNN(num_classes=95))  # the paper's figure has PARSeq's 95-class head
    assert result["params"] == 8_360_927
    assert round(result["flops_paper_compatible"] / 1e9, 2) == 0.91
    assert result["uncounted_ops"] == {}
    # fvcore misses the LSTMs without the handler: 0.817 G; with it ~0.904 G.
    assert 0.90e9 < result["flops"] < 0.91e9


@pytest.fixture
def registry(monkeypatch):
    """The registry with just the recognizers loaded (the others may not exist yet)."""
    import baselines.crnn  # noqa: F401  (registers 'crnn')
    from image_bench.models import base

    monkeypatch.setattr(base, "_loaded", True)


def test_cost_command_json_parses(registry):
    result = CliRunner().invoke(cost, ["crnn", "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert isinstance(data["params"], int) and data["params"] == 8_331_173
    assert isinstance(data["flops"], int) and data["flops"] > 0
    assert data["model"] == "crnn" and data["uncounted_ops"] == {}


def test_cost_command_table_and_settings(registry):
    result = CliRunner().invoke(cost, ["crnn", "--set", "num_classes=95"])
    assert result.exit_code == 0, result.output
    assert "8,360,927" in result.stdout and "paper-compatible" in result.stdout


def test_cost_command_unknown_model_lists_known(registry):
    result = CliRunner().invoke(cost, ["nope", "--json"])
    assert result.exit_code == 2
    assert "unknown model 'nope'" in result.output and "crnn" in result.output


def test_cost_command_rejects_bad_input_size(registry):
    result = CliRunner().invoke(cost, ["crnn", "--input", "32by128"])
    assert result.exit_code == 2 and "--input '32by128': expected HxW" in result.output


def test_cost_command_checks_its_settings_like_train(registry):
    for item, says in (("num_classes=lots", 'num_classes="lots": expected int'),
                       ("steps=3", "--set steps: a training setting"),
                       ("depth=3", "unknown --set key 'depth' for crnn")):
        result = CliRunner().invoke(cost, ["crnn", "--set", item])
        assert result.exit_code == 2 and says in result.output, (item, result.output)
