"""The acceleration layer holds the plain models and the fast ones together (CPU, float64).

For every registered model: the model after ``accel``'s swaps (the training set: fast modules,
aligned blocks, IMAGE's streamed forward; the inference set: fast modules, three-launch blocks)
computes the plain model's outputs, losses and parameter gradients on the CPU reference paths,
and keeps every state_dict key, so one checkpoint loads into both. The GPU paths are checked by
``image-bench bench --check`` (image_bench/engine/accel_check.py).
"""

from __future__ import annotations

import copy
import inspect

import pytest
import torch

from image_bench import accel
from image_bench.accel.aligned_block import AlignedBlock
from image_bench.accel.branch_streams import StreamedIMAGE, StreamedMutualGuidance
from image_bench.accel.fused_block import InferenceBlock, fuse_blocks_for_inference
from image_bench.accel.optimize import align_blocks
from image_bench.accel.swap import swap_class
from image_bench.engine.bench import build_bench_model
from image_bench.models import base
from image_bench.models.image import IMAGE
from tests.helpers import make_batch

# The suite's own models (tests register stand-ins of their own elsewhere).
MODELS = [n for n in base.available()
          if base.model_class(n).__module__.startswith(("image_bench.models", "baselines"))]
# IMAGE with one block per stack: D = 196 still needs the aligned blocks
SMALL = {"vit_depth": 1, "fuser_depth": 1, "clue_vit_depth": 1}


@pytest.fixture(autouse=True)
def float64():
    """Everything in float64, the tensors the models make themselves too (BCN's, TG's)."""
    before = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(before)


def build(name: str):
    torch.manual_seed(0)
    cls = base.model_class(name)
    kwargs = dict(SMALL) if issubclass(cls, IMAGE) else {}
    if "stn" in inspect.signature(cls).parameters:
        # the STN computes its control points in float32 by design, and accel leaves it as it is
        kwargs["stn"] = "none"
    return build_bench_model(name, kwargs).double()


def for_training(model):
    """Every training-time swap that a CPU run can take (streams: the class, one stream)."""
    accel.fast_modules(model)
    align_blocks(model)
    if isinstance(model, IMAGE):
        swap_class(model, StreamedIMAGE)
        for u in model.guidance_modules:
            swap_class(u, StreamedMutualGuidance)
    return model


def for_inference(model):
    accel.fast_modules(model)
    fuse_blocks_for_inference(model)
    return model


def training_pass(model, batch: dict) -> tuple[dict, dict]:
    model.zero_grad(set_to_none=True)
    torch.manual_seed(1)  # the same dropout masks in both
    out, terms = model.training_step(batch)
    sum(terms.values()).backward()
    values = {f"loss {k}": v.detach() for k, v in terms.items()}
    for key in ("sr", "logits"):
        if getattr(out, key) is not None:
            values[key] = getattr(out, key).detach()
    grads = {n: p.grad for n, p in model.named_parameters() if p.grad is not None}
    return values, grads


def double_batch(n: int = 2) -> dict:
    batch = make_batch(n)
    return {k: v.double() if torch.is_tensor(v) and v.is_floating_point() else v
            for k, v in batch.items()}


def assert_same(got: dict, expected: dict) -> None:
    assert got.keys() == expected.keys()
    for key in expected:
        torch.testing.assert_close(got[key], expected[key], rtol=1e-9, atol=1e-11, msg=key)


@pytest.mark.parametrize("name", MODELS)
def test_training_swaps_compute_the_plain_outputs_and_gradients(name):
    plain = build(name).train()
    keys = list(plain.state_dict())
    fast = for_training(copy.deepcopy(plain))
    assert list(fast.state_dict()) == keys  # no key renamed, added or lost
    swapped = {type(m).__name__ for m in fast.modules()} - {type(m).__name__
                                                              for m in plain.modules()}
    batch = double_batch()
    ref_values, ref_grads = training_pass(plain, batch)
    values, grads = training_pass(fast, batch)
    assert_same(values, ref_values)
    assert_same(grads, ref_grads)
    if isinstance(plain, IMAGE):  # the swaps that matter for IMAGE took place
        assert {"AlignedBlock", "FusedGruBlock", "HeadConv2d", "TailConv2d", "ShuffledConv2d",
                "FastAttention", "AlignedPatchEmbed"} <= swapped
        assert any(isinstance(m, AlignedBlock) for m in fast.modules())


@pytest.mark.parametrize("name", MODELS)
def test_inference_swaps_compute_the_plain_outputs(name):
    plain = build(name).eval()
    if plain.kind == "aux":
        pytest.skip("a helper network: no inference row")
    fast = for_inference(copy.deepcopy(plain))
    assert list(fast.state_dict()) == list(plain.state_dict())
    x = plain.example_input(3).double()
    with torch.no_grad():
        ref, got = plain(x), fast(x)
    for key in ("sr", "logits"):
        if getattr(ref, key) is not None:
            torch.testing.assert_close(getattr(got, key), getattr(ref, key), rtol=1e-9,
                                       atol=1e-11)
    if isinstance(plain, IMAGE):
        assert any(isinstance(m, InferenceBlock) for m in fast.modules())


def test_a_checkpoint_loads_into_the_plain_and_the_fast_model_alike():
    plain = build("image-1").float()
    fast = for_training(build("image-1").float())
    torch.manual_seed(5)
    trained = build("image-1").float()
    state = trained.state_dict()
    plain.load_state_dict(state, strict=True)
    fast.load_state_dict(state, strict=True)
    plain.load_state_dict(fast.state_dict(), strict=True)  # and back
    x = plain.example_input(2).float()
    with torch.no_grad():
        torch.testing.assert_close(fast.eval()(x).sr, trained.eval()(x).sr)


def test_swaps_keep_the_parameters_themselves_and_are_idempotent():
    model = build("tpgsr")
    params = [id(p) for p in model.parameters()]
    for _ in range(2):
        accel.fast_modules(model)
    assert [id(p) for p in model.parameters()] == params  # an optimiser made before still holds
    names = [type(m).__name__ for m in model.modules()]
    assert "TailConv2d" in names and "TailConv2d[TailConv2d]" not in names


def test_the_plain_flag_leaves_the_model_alone(monkeypatch):
    monkeypatch.setenv(accel.PLAIN_ENV, "1")
    model = build("image-1")
    before = [type(m) for m in model.modules()]
    assert accel.for_training(model, torch.device("cpu"), samples=10) == {"plain": True}
    assert accel.for_inference(model) is model
    assert [type(m) for m in model.modules()] == before
    monkeypatch.setenv(accel.PLAIN_ENV, "0")
    assert not accel.plain_requested()


def test_models_do_not_import_the_acceleration_layer():
    """The dependency direction: models/ and baselines/ hold plain torch; accel imports them."""
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    for folder in ("image_bench/models", "baselines"):
        for path in (root / folder).glob("*.py"):
            imports = [line.strip() for line in path.read_text().splitlines()
                       if line.strip().startswith(("import ", "from "))]
            for line in imports:
                assert not any(w in line for w in ("image_bench.accel", "triton", "kernels")), (
                    f"{path.name}: {line}")
