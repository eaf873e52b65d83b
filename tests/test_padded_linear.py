"""The padded linear layer (issue 7): its own backward gives autograd's gradients, in the
parameters' shapes. float64 on the CPU, where the backward is the torch path
(``weight_grad_reference``); the Triton weight gradient is checked on the GPU
(scripts/gpu_wgrad.py)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from image_bench.models.padded_linear import (
    pad_side,
    padded_linear,
    padded_size,
    unpad_side,
    weight_grad_reference,
)


def test_pad_and_unpad_a_grouped_side():
    t = torch.arange(12.0).view(2, 6)  # columns: 2 groups of 3
    padded = pad_side(t, 1, (3, 5))
    assert padded.shape == (2, 10) and padded_size(6, (3, 5)) == 10
    assert padded[0].tolist() == [0, 1, 2, 0, 0, 3, 4, 5, 0, 0]
    assert torch.equal(unpad_side(padded, 1, (3, 5)), t)
    rows = pad_side(t, 0, (1, 2))  # each row followed by a zero row
    assert rows.shape == (4, 6) and rows[1].abs().sum() == 0 and torch.equal(rows[2], t[1])
    assert pad_side(t, 1, (6, 6)) is t  # nothing to pad


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("rows,cols", [((7, 8), (5, 8)),     # qkv-like: grouped rows
                                       ((10, 16), (3, 4)),   # proj-like: grouped columns
                                       ((12, 12), (10, 16))])  # fc1-like: rows aligned already
def test_padded_linear_gives_autograds_gradients(rows, cols, bias):
    torch.manual_seed(0)
    out_features, in_features = 3 * rows[0], 2 * cols[0]
    weight = torch.randn(out_features, in_features, dtype=torch.float64, requires_grad=True)
    b = torch.randn(out_features, dtype=torch.float64, requires_grad=True) if bias else None
    # the padded input's pad columns hold values too: the layer must ignore them
    x = torch.randn(4, 3, padded_size(in_features, cols), dtype=torch.float64,
                    requires_grad=True)
    probe = torch.randn(4, 3, padded_size(out_features, rows), dtype=torch.float64)

    out = padded_linear(x, weight, b, rows, cols)
    (out * probe).sum().backward()
    grads = [weight.grad, b.grad if bias else None, x.grad]
    for t in (weight, b, x):
        if t is not None:
            t.grad = None
    w_pad = pad_side(pad_side(weight, 0, rows), 1, cols)  # the same through autograd
    expected = F.linear(x, w_pad, pad_side(b, 0, rows) if bias else None)
    (expected * probe).sum().backward()

    torch.testing.assert_close(out, expected, rtol=1e-12, atol=1e-12)
    assert grads[0].shape == weight.shape
    torch.testing.assert_close(grads[0], weight.grad, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(grads[2], x.grad, rtol=1e-12, atol=1e-12)
    if bias:
        torch.testing.assert_close(grads[1], b.grad, rtol=1e-12, atol=1e-12)
    # the real output columns are the unpadded layer's where the input's pads are zero
    real_x = unpad_side(x.detach(), -1, cols)
    torch.testing.assert_close(
        unpad_side(padded_linear(pad_side(real_x, -1, cols), weight, b, rows, cols), -1, rows),
        F.linear(real_x, weight, b), rtol=1e-12, atol=1e-12)


def test_weight_grad_reference_in_the_parameters_layout():
    dy = torch.tensor([[1.0, 2.0, 9.0, 3.0, 4.0, 9.0]])  # rows: 2 groups of 2 real + 1 pad
    x = torch.tensor([[10.0, 20.0]])
    dw, db = weight_grad_reference(dy, x, (2, 3), (2, 2), bias=True)
    assert dw.tolist() == [[10, 20], [20, 40], [30, 60], [40, 80]]
    assert db.tolist() == [1, 2, 3, 4]
    assert weight_grad_reference(dy, x, (2, 3), (2, 2), bias=False)[1] is None


def test_frozen_input_and_autocast():
    torch.manual_seed(0)
    weight = torch.randn(6, 4, requires_grad=True)
    x = torch.randn(5, 8)  # no gradient wanted for x
    out = padded_linear(x, weight, None, (6, 8), (4, 8))
    out.sum().backward()
    assert x.grad is None and weight.grad.shape == (6, 4)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        low = padded_linear(x, weight, None, (6, 8), (4, 8))
    assert low.dtype == torch.bfloat16  # x cast as F.linear's autocast would
    torch.testing.assert_close(low.float(), out.detach(), rtol=2e-2, atol=2e-2)
