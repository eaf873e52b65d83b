"""The pieces that let a training step run as a CUDA graph, checked on the CPU: the sync-free
CTC recursion against PyTorch's CTC, the capturable optimiser settings, device-side lengths.
(The capture itself needs a GPU: ``image-bench bench`` runs it on the device.)"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from image_bench import charset
from image_bench.accel import decisions
from image_bench.accel.branch_streams import StreamedIMAGE, training_streams
from image_bench.accel.graphed import GraphedStepper
from image_bench.accel.optimize import training_layout
from image_bench.engine.data import ResidentSet
from image_bench.engine.step import (
    StepModule,
    Stepper,
    make_optimizer,
    match_state_layout,
    set_capturable,
)
from image_bench.losses import ctc_loss, ctc_nll, sync_free_ctc_losses
from image_bench.models import base
from tests.helpers import make_batch


def _targets():
    # repeats (3,3,3 needs blanks between), a target of one symbol, an empty one, a full one
    targets = torch.tensor([[3, 3, 3, 4, 4], [9, 0, 0, 0, 0], [5, 6, 7, 0, 0],
                            [7, 7, 7, 7, 7], [2, 8, 0, 0, 0], [0, 0, 0, 0, 0]])
    lengths = torch.tensor([5, 1, 3, 5, 2, 0])
    return targets, lengths


@pytest.mark.parametrize("frames", [12, 6, 1])
def test_ctc_recursion_matches_pytorch(frames):
    """Values and gradients in float64, including targets that cannot be spelt in the frames
    (zeroed, as zero_infinity) and an empty target."""
    torch.manual_seed(frames)
    targets, lengths = _targets()
    logits = torch.randn(6, frames, charset.NUM_CLASSES, dtype=torch.float64, requires_grad=True)
    log_probs = F.log_softmax(logits, dim=-1).transpose(0, 1)
    ref = F.ctc_loss(log_probs, targets, torch.full((6,), frames), lengths, reduction="none",
                     zero_infinity=True)
    ours = ctc_nll(log_probs, targets, lengths)
    torch.testing.assert_close(ours, ref, rtol=1e-10, atol=1e-10)
    g_ref, = torch.autograd.grad(ref.sum(), logits, retain_graph=True)
    g_ours, = torch.autograd.grad(ours.sum(), logits)
    assert torch.isfinite(g_ours).all()
    torch.testing.assert_close(g_ours, g_ref, rtol=1e-9, atol=1e-9)
    if frames == 6:  # [7,7,7,7,7] needs 9 frames: infinite, zeroed
        assert ref[3] == 0 and ours[3] == 0


def test_sync_free_losses_equal_pytorch_mean_reduction():
    torch.manual_seed(0)
    targets, lengths = _targets()
    logits = [torch.randn(6, 16, charset.NUM_CLASSES) for _ in range(3)]
    ours = sync_free_ctc_losses(logits, targets, lengths)
    ref = [ctc_loss(p, targets, lengths) for p in logits]
    assert len(ours) == 3
    for a, b in zip(ours, ref):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


def test_capturable_settings_stay_plain_on_cpu():
    model = torch.nn.Linear(3, 2)
    settings = {"lr": 2e-4, "beta1": 0.9, "beta2": 0.999, "weight_decay": 0.0, "eps": 1e-8,
                "warmup_steps": 4}
    optimizer, scheduler = make_optimizer(model, settings, torch.device("cpu"), capturable=True)
    group = optimizer.param_groups[0]
    assert group["capturable"] is False and isinstance(group["lr"], float)
    assert group["lr"] == pytest.approx(0.5e-4)  # warm-up step 1 of 4
    # a saved state with a tensor lr (from a graphed run) comes back plain
    group["lr"] = torch.tensor(3e-4)
    set_capturable(optimizer, False, torch.device("cpu"))
    assert group["lr"] == pytest.approx(3e-4) and isinstance(group["lr"], float)
    with pytest.raises(ValueError, match="CUDA"):
        GraphedStepper(Stepper(StepModule(model), optimizer, scheduler, grad_clip=1.0,
                               device=torch.device("cpu")))


def test_optimizer_state_takes_its_parameters_layout():
    """A run that trains in channels_last (IMAGE on CUDA) resumes from a state saved in either
    layout: the moments are re-laid like their parameters, values unchanged."""
    conv = torch.nn.Conv2d(3, 4, 3)
    settings = {"lr": 1e-3, "beta1": 0.9, "beta2": 0.999, "weight_decay": 0.0, "eps": 1e-8,
                "warmup_steps": 0}
    optimizer, _ = make_optimizer(conv, settings, torch.device("cpu"))
    conv(torch.randn(2, 3, 8, 8)).sum().backward()
    optimizer.step()
    saved = optimizer.state_dict()
    conv.to(memory_format=torch.channels_last)  # what training_layout does on CUDA
    optimizer.load_state_dict(saved)
    moment = optimizer.state[conv.weight]["exp_avg"]
    assert moment.stride() != conv.weight.stride()  # loaded as saved
    before = moment.clone()
    match_state_layout(optimizer)
    relaid = optimizer.state[conv.weight]["exp_avg"]
    assert relaid.stride() == conv.weight.stride()
    assert relaid.is_contiguous(memory_format=torch.channels_last)
    assert torch.equal(relaid, before)
    assert optimizer.state[conv.bias]["exp_avg"].stride() == conv.bias.stride()


def test_training_layout_is_for_cuda_and_models_that_measured_it():
    image = base.build("image-1", vit_depth=1, fuser_depth=1, clue_vit_depth=1)
    assert decisions.train_channels_last(image)
    assert not decisions.train_channels_last(base.build("crnn"))
    assert training_layout(image, torch.device("cpu")) is False
    assert all(p.is_contiguous() for p in image.parameters())


def test_branch_streams_are_for_cuda_and_leave_the_cpu_forward_as_it_was():
    torch.manual_seed(0)
    image = base.build("image-1", vit_depth=1, fuser_depth=1, clue_vit_depth=1).train()
    assert training_streams(image, torch.device("cpu")) is False
    assert not isinstance(image, StreamedIMAGE)
    assert training_streams(base.build("crnn"), torch.device("cuda")) is False  # one model
    batch = make_batch(4)
    torch.manual_seed(1)
    one = image(batch["lr"])
    assert training_streams(image, torch.device("cuda")) is True
    assert isinstance(image, StreamedIMAGE) and type(image).__name__ == "StreamedIMAGE[IMAGE1]"
    assert isinstance(image.guidance_modules[0].cd, torch.nn.Module)
    torch.manual_seed(1)
    two = image(batch["lr"])  # a CPU tensor: the switch cannot apply, the forward is unchanged
    assert torch.equal(one.sr, two.sr) and torch.equal(one.logits, two.logits)
    assert all(torch.equal(a, b) for a, b in zip(one.sr_steps, two.sr_steps))
    assert all(torch.equal(a, b) for a, b in zip(one.clue_logits_steps, two.clue_logits_steps))


def test_resident_set_gives_lengths_on_either_side():
    batch = make_batch(8)

    class Set:
        lr = (batch["lr"] * 255).to(torch.uint8)
        hr = (batch["hr"] * 255).to(torch.uint8)
        labels = batch["labels"]

    rs = ResidentSet.from_tensorset(Set, "cpu")
    index = torch.tensor([5, 0, 3])
    host = rs.batch(index)["target_lengths"]
    device = rs.batch(index, lengths_on_device=True)["target_lengths"]
    assert host.tolist() == device.tolist() == [len(batch["labels"][i]) for i in (5, 0, 3)]


def test_models_that_read_label_strings_are_not_graphed():
    assert base.model_class("tg").graph_safe is False
    assert base.model_class("tg-stroke").graph_safe is False
    for name in ("image-2", "crnn", "svtr", "tpgsr", "c3stisr", "bcn"):
        assert base.model_class(name).graph_safe is True


def test_a_graphed_run_reads_the_cosine_rate_from_its_lr_tensor():
    """A CUDA graph replays the AdamW step with the learning rate as one device tensor: the
    schedule must write each new rate into that same tensor (a new float or tensor would
    leave the graph on the first rate). Checked on the CPU with the tensor put in by hand."""
    import math

    model = torch.nn.Linear(3, 2)
    settings = {"lr": 1e-3, "beta1": 0.9, "beta2": 0.999, "weight_decay": 0.0, "eps": 1e-8,
                "warmup_steps": 0}
    optimizer, scheduler = make_optimizer(model, settings, torch.device("cpu"),
                                          schedule="cosine", total_steps=10)
    lr = torch.tensor(float(optimizer.param_groups[0]["lr"]))
    optimizer.param_groups[0]["lr"] = lr  # what set_capturable does on CUDA
    for k in range(1, 10):
        optimizer.step()
        scheduler.step()
        assert optimizer.param_groups[0]["lr"] is lr
        assert lr.item() == pytest.approx(1e-3 * (1 + math.cos(math.pi * k / 10)) / 2, rel=1e-6)
