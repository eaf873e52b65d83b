"""CPU tests of the GRU dispatcher and of the math the fused CUDA GRU uses.

The Triton kernels themselves run on the GPU (``image-bench bench --check``, in the SRBs).
Here: the CPU fallback, the parameter packing the kernels read, and the split
forward/backward (input projection + recurrence + weight-gradient matmuls) with the torch
reference recurrence, which mirrors the kernels line for line, against nn.GRU in float64.
"""

from __future__ import annotations

import os

import pytest
import torch
from torch import nn

from image_bench.accel import gru as dispatch
from image_bench.accel.kernels import bigru
from image_bench.models.srb import SRB


def _pair(inp, hidden, dtype=torch.float64, seed=0):
    torch.manual_seed(seed)
    return nn.GRU(inp, hidden, bidirectional=True, batch_first=True).to(dtype)


def _grads(out, x, gru, grad_out):
    return torch.autograd.grad(out, [x, *gru.parameters()], grad_out)


def _rel(a, b):
    a, b = a.double(), b.double()
    scale = b.norm()
    return ((a - b).norm() / scale).item() if scale > 0 else (a - b).abs().max().item()


def test_cpu_fallback_is_nn_gru_and_never_calls_the_fused_path():
    calls = []
    saved = (dispatch._fused, dispatch._supports, dispatch._import_tried)
    dispatch.register_fused_gru(lambda g, x: calls.append(1))
    try:
        gru = _pair(64, 32, torch.float32)
        x = torch.randn(6, 9, 64)
        for enabled in (True, False):
            dispatch.set_fused_gru(enabled)
            torch.testing.assert_close(dispatch.run_bigru(gru, x), gru(x)[0], rtol=0, atol=0)
    finally:
        dispatch.set_fused_gru(True)
        dispatch._fused, dispatch._supports, dispatch._import_tried = saved
    assert calls == []


def test_srb_on_cpu_runs_the_reference_gru():
    torch.manual_seed(0)
    block = SRB(64).eval()
    x = torch.randn(2, 64, 4, 8)
    with torch.no_grad():
        expected = block.gru2.gru(x.permute(0, 2, 3, 1).reshape(8, 8, 64))[0]
        got = dispatch.run_bigru(block.gru2.gru, x.permute(0, 2, 3, 1).reshape(8, 8, 64))
    torch.testing.assert_close(got, expected, rtol=0, atol=0)


def test_packing_round_trips_to_the_state_dict():
    gru = _pair(24, 20)
    packed = bigru.pack_params(gru)
    assert packed.w_ih.shape == (120, 24) and packed.b_ih.shape == (120,)
    assert packed.w_hh.shape == (2, 60, 20) and packed.b_hh.shape == (2, 60)
    unpacked = bigru.unpack_params(packed)
    state = gru.state_dict()
    assert set(unpacked) == set(state)
    for name, value in state.items():
        assert torch.equal(unpacked[name], value), name
    other = _pair(24, 20, seed=1)
    other.load_state_dict({k: v.clone() for k, v in unpacked.items()})
    x = torch.randn(3, 4, 24, dtype=torch.float64)
    torch.testing.assert_close(other(x)[0], gru(x)[0], rtol=0, atol=0)


def test_reference_recurrence_with_the_packing_matches_nn_gru():
    gru = _pair(24, 20)
    x = torch.randn(5, 7, 24, dtype=torch.float64, requires_grad=True)
    ref = gru(x)[0]
    out = bigru.reference_bigru(bigru.pack_params(gru), x)
    grad_out = torch.randn_like(ref)
    torch.testing.assert_close(out, ref, rtol=1e-12, atol=1e-12)
    for a, b in zip(_grads(out, x, gru, grad_out), _grads(ref, x, gru, grad_out)):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("n_seq, steps, inp, hidden", [
    (4, 9, 64, 32),  # the SRB's sizes (few sequences)
    (1, 1, 64, 32),  # length 1, batch 1: W_hh gets no gradient
    (3, 2, 24, 20),  # sizes that are not powers of two
    (5, 5, 8, 16),
])
def test_split_backward_matches_autograd_of_nn_gru_in_float64(n_seq, steps, inp, hidden):
    gru = _pair(inp, hidden)
    x = torch.randn(n_seq, steps, inp, dtype=torch.float64, requires_grad=True)
    ref = gru(x)[0]
    out = bigru.split_bigru(gru, x)
    grad_out = torch.randn_like(ref)
    torch.testing.assert_close(out, ref, rtol=1e-12, atol=1e-12)
    names = ["input"] + [name for name, _ in gru.named_parameters()]
    for name, a, b in zip(names, _grads(out, x, gru, grad_out), _grads(ref, x, gru, grad_out)):
        assert _rel(a, b) < 1e-10, name


def test_split_float32_and_bf16_autocast_within_tolerance():
    gru64 = _pair(64, 32)
    gru32 = _pair(64, 32, torch.float32)
    gru32.load_state_dict({k: v.float() for k, v in gru64.state_dict().items()})
    x64 = torch.randn(4, 5, 64, dtype=torch.float64, requires_grad=True)
    x32 = x64.detach().float().requires_grad_()
    ref = gru64(x64)[0]
    grad_out = torch.randn_like(ref)
    ref_grads = _grads(ref, x64, gru64, grad_out)

    out = bigru.split_bigru(gru32, x32)
    assert out.dtype == torch.float32
    assert _rel(out, ref) < 1e-5
    for a, b in zip(_grads(out, x32, gru32, grad_out.float()), ref_grads):
        assert _rel(a, b) < 1e-5

    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = bigru.split_bigru(gru32, x32)
    assert out.dtype == torch.bfloat16  # as nn.GRU under autocast
    assert _rel(out, ref) < 1e-2
    grads = _grads(out, x32, gru32, grad_out.to(out.dtype))
    assert grads[0].dtype == torch.float32 and grads[1].dtype == torch.float32
    for a, b in zip(grads, ref_grads):
        assert _rel(a, b) < 1e-2


def test_previous_states_shift_each_direction_its_own_way():
    hs = torch.arange(2 * 3 * 4, dtype=torch.float64).view(2, 3, 4)  # H = 2 per direction
    prev = bigru.previous_states(hs)
    assert torch.equal(prev[:, 0, :2], torch.zeros(2, 2))
    assert torch.equal(prev[:, 1:, :2], hs[:, :-1, :2])
    assert torch.equal(prev[:, -1, 2:], torch.zeros(2, 2))
    assert torch.equal(prev[:, :-1, 2:], hs[:, 1:, 2:])


def test_bad_modules_and_inputs_are_rejected():
    with pytest.raises(ValueError, match="bidirectional=False"):
        bigru.pack_params(nn.GRU(8, 4, batch_first=True))
    with pytest.raises(ValueError, match="num_layers=2"):
        bigru.pack_params(nn.GRU(8, 4, num_layers=2, bidirectional=True, batch_first=True))
    with pytest.raises(ValueError, match="batch_first=False"):
        bigru.pack_params(nn.GRU(8, 4, bidirectional=True))
    with pytest.raises(TypeError):
        bigru.pack_params(nn.LSTM(8, 4, bidirectional=True, batch_first=True))
    gru = nn.GRU(8, 4, bidirectional=True, batch_first=True)
    with pytest.raises(ValueError, match="expected input"):
        bigru.split_bigru(gru, torch.randn(2, 3, 5))
    with pytest.raises(ValueError, match="empty"):
        bigru.split_bigru(gru, torch.randn(0, 3, 8))


@pytest.mark.skipif(os.environ.get("IMAGE_BENCH_TRITON_INTERPRET") != "1",
                    reason="opt-in: needs triton installed; runs the kernels in its interpreter")
def test_triton_kernels_in_the_interpreter():
    os.environ["TRITON_INTERPRET"] = "1"  # read when the kernels are decorated
    fused = pytest.importorskip("image_bench.accel.kernels.fused_gru")
    fused.POISON = True
    gru = _pair(24, 20)
    gru32 = _pair(24, 20, torch.float32)
    gru32.load_state_dict({k: v.float() for k, v in gru.state_dict().items()})
    for n_seq, steps in [(1, 1), (17, 3)]:
        x = torch.randn(n_seq, steps, 24, dtype=torch.float64, requires_grad=True)
        x32 = x.detach().float().requires_grad_()
        ref = gru(x)[0]
        out = bigru.split_bigru(gru32, x32, fused.TritonSplitBiGRU)
        grad_out = torch.randn_like(ref)
        assert _rel(out, ref) < 1e-5
        pairs = zip(_grads(out, x32, gru32, grad_out.float()), _grads(ref, x, gru, grad_out))
        for a, b in pairs:
            assert _rel(a, b) < 1e-5


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU-only error")
def test_gru_bench_needs_cuda():
    from image_bench.accel.kernels.gru_bench import bench_bigru

    with pytest.raises(RuntimeError, match="CUDA"):
        bench_bigru(8, 4)
