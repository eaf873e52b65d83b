"""The fused clip + AdamW update (accel.fused_update) on the CPU: its arithmetic (the torch
reference the Triton kernels follow) against clip_grad_norm_ + torch.optim.AdamW, its state in
PyTorch's form, and the fallback where it does not apply. The kernels themselves run on the GPU:
``image-bench bench --check``."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from image_bench.accel.fused_update import (
    FusedClipAdamW,
    _storage_flat,
    reference_clip_adamw_,
)
from image_bench.engine.step import StepModule, Stepper, make_optimizer, optim_settings
from image_bench.models import base
from tests.helpers import make_batch


def _params():
    torch.manual_seed(0)
    shapes = [(7, 5), (5,), (4, 3, 3, 3), (1,), (300,)]
    params = [nn.Parameter(torch.randn(s, dtype=torch.float64)) for s in shapes]
    params[2].data = params[2].data.contiguous(memory_format=torch.channels_last)
    return params


def _set_grads(params, step, scale):
    g = torch.Generator().manual_seed(step)
    for i, p in enumerate(params):
        if i == 3:  # a parameter without a gradient: AdamW skips it, its step stays
            p.grad = None
            continue
        p.grad = (scale * torch.randn(p.shape, generator=g, dtype=p.dtype)).contiguous(
            memory_format=torch.channels_last if p.dim() == 4 else torch.contiguous_format)


@pytest.mark.parametrize("max_norm, scale", [(5.0, 10.0), (5.0, 0.01), (0.0, 1.0)])
def test_reference_update_equals_clip_grad_norm_and_adamw(max_norm, scale):
    """float64, three steps: clipping active (norm ~110 > 5), inactive, and off (max_norm 0)."""
    ours, ref = _params(), _params()
    kw = dict(lr=1e-2, betas=(0.8, 0.95), eps=1e-6, weight_decay=0.1)
    opt_ours = torch.optim.AdamW(ours, **kw)
    opt_ref = torch.optim.AdamW(ref, foreach=False, **kw)
    for step in range(3):
        _set_grads(ours, step, scale)
        _set_grads(ref, step, scale)
        norm = reference_clip_adamw_(opt_ours, max_norm)
        if max_norm > 0:
            norm_ref = torch.nn.utils.clip_grad_norm_([p for p in ref if p.grad is not None],
                                                      max_norm)
        else:
            norm_ref = torch.linalg.vector_norm(torch.cat([p.grad.flatten() for p in ref
                                                           if p.grad is not None]))
        opt_ref.step()
        torch.testing.assert_close(norm, norm_ref, rtol=1e-12, atol=0)
        for a, b in zip(ours, ref):
            torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-14)
            assert a.stride() == b.stride()
    if scale == 10.0:
        assert norm_ref > max_norm  # the clipping case did clip
    for a, b in zip(ours, ref):
        if a.grad is None:
            assert a not in opt_ours.state and b not in opt_ref.state
            continue
        for key in ("exp_avg", "exp_avg_sq", "step"):
            torch.testing.assert_close(opt_ours.state[a][key], opt_ref.state[b][key],
                                       rtol=1e-12, atol=1e-16)


def test_state_is_pytorchs_and_resumes_in_either_path():
    """The state the fused path makes loads into a plain AdamW (and back) and the next step
    agrees: a checkpoint does not care which path wrote it."""
    ours = _params()
    opt = torch.optim.AdamW(ours, lr=1e-2)
    _set_grads(ours, 0, 1.0)
    reference_clip_adamw_(opt, 5.0)
    plain = copy.deepcopy(ours)
    opt_plain = torch.optim.AdamW(plain, lr=1e-2, foreach=False)
    opt_plain.load_state_dict(copy.deepcopy(opt.state_dict()))
    _set_grads(ours, 1, 1.0)
    _set_grads(plain, 1, 1.0)
    reference_clip_adamw_(opt, 0.0)
    opt_plain.step()
    for a, b in zip(ours, plain):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-14)
    assert opt.state[ours[0]]["step"].item() == 2


def test_storage_flat_follows_memory_order():
    t = torch.arange(24.0).view(1, 2, 3, 4).contiguous(memory_format=torch.channels_last)
    flat = _storage_flat(t)
    assert flat.tolist() == t.permute(0, 2, 3, 1).flatten().tolist()
    assert flat.data_ptr() == t.data_ptr()


def test_unsupported_on_cpu_and_stepper_falls_back():
    """On the CPU the fused path does not apply: the Stepper asked for it trains with PyTorch's
    clip + AdamW, as without it."""
    torch.manual_seed(0)
    model = base.build("crnn")
    opt, sched = make_optimizer(model, optim_settings(model, 1e-3), torch.device("cpu"))
    assert "CUDA tensor" in FusedClipAdamW.unsupported(opt)
    assert not FusedClipAdamW.supports(opt)
    with pytest.raises(ValueError, match="fused clip"):
        FusedClipAdamW(opt)
    twin = copy.deepcopy(model)
    opt2, sched2 = make_optimizer(twin, optim_settings(twin, 1e-3), torch.device("cpu"))
    batch = make_batch(4)
    kw = dict(grad_clip=5.0, device=torch.device("cpu"))
    fused = Stepper(StepModule(model), opt, sched, fused_update=True, **kw)
    plain = Stepper(StepModule(twin), opt2, sched2, **kw)
    assert fused.fused_update is None
    a, b = fused(batch), plain(batch)
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    for p, q in zip(model.parameters(), twin.parameters()):
        torch.testing.assert_close(p, q, rtol=0, atol=0)
