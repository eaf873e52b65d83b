"""``image-bench bench --check``: the accelerated models against the plain ones, on a device.

The CPU tests (tests/test_accel.py) hold the two together on the torch reference paths in
float64; this runs the GPU's own paths (Triton GRU, split tails and heads, Triton attention,
aligned blocks, two streams, three-launch inference blocks, CTC and clip + AdamW kernels) and
compares each against the plain torch form. One line per check, PASS or FAIL; the command fails
when any check does.

Criteria. fp32 (TF32 off): relative error ||fast - plain|| / ||plain|| at most ``FP32_TOL``.
16-bit: the fast model under bf16 and the plain model under bf16 both against the plain model in
fp32; the fast one may be at most twice as far off as the plain one, plus ``FP32_TOL`` (bf16
rounding alone separates them, and a wrong kernel is orders of magnitude further off).
"""

from __future__ import annotations

import copy
from collections.abc import Callable

import torch

from image_bench import accel
from image_bench.accel.branch_streams import training_streams
from image_bench.accel.fused_block import fuse_blocks_for_inference
from image_bench.accel.optimize import align_blocks
from image_bench.engine.bench import build_bench_model, pipeline, synthetic_batch

FP32_TOL = 1e-3
BATCH = 64  # from 32 the tails run split; the SRBs' GRUs then run 64 x 16 sequences


def relative(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.double(), b.double()
    return float((a - b).norm() / b.norm().clamp(min=1e-30))


def _training_pass(model, batch: dict, seed: int, amp: bool) -> dict[str, torch.Tensor]:
    """Loss terms, outputs and parameter gradients of one training-mode pass."""
    model.zero_grad(set_to_none=True)
    torch.manual_seed(seed)  # the same dropout masks and STN draws in both models
    device = batch["lr"].device
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
        out, terms = model.training_step(batch)
    loss = sum(terms.values())
    loss.backward()
    got = {"loss": loss.detach().float()}
    for name in ("sr", "logits"):
        if getattr(out, name) is not None:
            got[name] = getattr(out, name).detach().float()
    grads = [p.grad.flatten().float() for p in model.parameters() if p.grad is not None]
    got["gradients"] = torch.cat(grads) if grads else torch.zeros(1, device=device)
    return got


def _fast_training_copy(model, device: torch.device):
    fast = copy.deepcopy(model)
    accel.fast_modules(fast)
    align_blocks(fast)
    training_streams(fast, device)
    return fast


def _compare(fast: dict, plain: dict, plain16: dict | None = None, fast32: dict | None = None):
    """(worst error, limit, detail) over the shared keys."""
    rows = []
    for key in plain:
        if plain16 is None:
            err, limit = relative(fast[key], plain[key]), FP32_TOL
        else:
            err = relative(fast[key], plain[key])
            limit = 2 * relative(plain16[key], plain[key]) + FP32_TOL
        rows.append((err / limit, key, err, limit))
    ratio, key, err, limit = max(rows)
    return ratio <= 1, f"worst {key}: {err:.2e} (limit {limit:.2e})"


def check_training(name: str, device: torch.device) -> list[tuple[str, bool, str]]:
    """One training pass (train mode, loss, backward) of the fast model against the plain one,
    fp32 and bf16 autocast."""
    torch.manual_seed(0)
    plain = build_bench_model(name, None, device).train()
    fast = _fast_training_copy(plain, device)
    batch = synthetic_batch(plain, BATCH, device)
    batch["target_lengths"] = batch["target_lengths"].to(device)  # the sync-free CTC path
    accel.fast_losses(True)
    rows = []
    ref = _training_pass(plain, batch, 1, amp=False)
    ok, detail = _compare(_training_pass(fast, batch, 1, amp=False), ref)
    rows.append((f"{name}: training pass, fp32", ok, detail))
    if device.type == "cuda":
        plain16 = _training_pass(plain, batch, 1, amp=True)
        ok, detail = _compare(_training_pass(fast, batch, 1, amp=True), ref, plain16)
        rows.append((f"{name}: training pass, bf16 autocast", ok, detail))
    return rows


def check_inference(name: str, device: torch.device) -> list[tuple[str, bool, str]]:
    """Eval-mode outputs at batch 1 and ``BATCH``: the fast modules (and, with bf16 weights on
    CUDA, the three-launch blocks) against the plain model."""
    torch.manual_seed(0)
    plain = build_bench_model(name, None, device).eval()
    if plain.kind == "aux":
        return []
    rows = []
    for batch in (1, BATCH):
        x = plain.example_input(batch).to(device)
        with torch.no_grad():
            ref = pipeline(plain, None)(x).float()
            fast = accel.fast_modules(copy.deepcopy(plain))
            ok, detail = _compare({"out": pipeline(fast, None)(x).float()}, {"out": ref})
            rows.append((f"{name}: inference b{batch}, fp32", ok, detail))
            if device.type != "cuda":
                continue
            plain16 = copy.deepcopy(plain).to(torch.bfloat16)
            fast16 = copy.deepcopy(fast).to(torch.bfloat16)
            fuse_blocks_for_inference(fast16)
            with torch.autocast("cuda", dtype=torch.bfloat16):
                got16 = {"out": pipeline(fast16, None)(x).float()}
                ref16 = {"out": pipeline(plain16, None)(x).float()}
            ok, detail = _compare(got16, {"out": ref}, ref16)
            rows.append((f"{name}: inference b{batch}, bf16 weights + Triton blocks", ok, detail))
    return rows


def check_ctc(device: torch.device) -> list[tuple[str, bool, str]]:
    """The CTC kernels (float32) against the torch recursion in float64: IMAGE-2's five terms
    of batch 256 stacked, 32 frames, targets up to 25."""
    from image_bench.losses import sync_free_ctc_losses

    accel.fast_losses(True)
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(5 * 256, 32, 37, generator=g).to(device)
    lengths = torch.randint(0, 26, (256,), generator=g).to(device)
    targets = torch.randint(1, 37, (256, 25), generator=g).to(device)
    got = {}
    for dtype in (torch.float32, torch.float64):
        x = logits.detach().to(dtype, copy=True).requires_grad_(True)
        loss = sum(sync_free_ctc_losses(list(x.chunk(5)), targets, lengths))
        loss.backward()
        got[dtype] = {"loss": loss.detach(), "gradient": x.grad}
    ok, detail = _compare(got[torch.float32], got[torch.float64])
    return [("ctc: Triton recursion vs torch float64", ok, detail)]


def check_fused_update(name: str, device: torch.device) -> list[tuple[str, bool, str]]:
    """Three clip + AdamW steps of the fused kernels against the same update in float64."""
    if device.type != "cuda":
        return []
    from image_bench.accel.fused_update import FusedClipAdamW, reference_clip_adamw_
    from image_bench.engine.step import make_optimizer, optim_settings

    torch.manual_seed(0)
    model = build_bench_model(name, None, device)
    ref_model = copy.deepcopy(model).double()
    settings = optim_settings(model, 1e-3)
    opt, _ = make_optimizer(model, settings, device, capturable=True)
    ref_opt, _ = make_optimizer(ref_model, settings, torch.device("cpu"))
    if not FusedClipAdamW.supports(opt):
        return [(f"{name}: fused clip + AdamW", False, FusedClipAdamW.unsupported(opt) or "")]
    fused = FusedClipAdamW(opt)
    params, ref_params = list(model.parameters()), list(ref_model.parameters())
    for step in range(3):
        g = torch.Generator(device=device).manual_seed(step)
        for p, q in zip(params, ref_params):
            p.grad = torch.randn(p.shape, generator=g, device=device) * (10.0 if step else 0.01)
            q.grad = p.grad.double()
        fused.step(settings["grad_clip"])
        reference_clip_adamw_(ref_opt, settings["grad_clip"])
    flat = torch.cat([p.detach().flatten() for p in params])
    ref = torch.cat([q.detach().flatten() for q in ref_params])
    ok, detail = _compare({"parameters": flat}, {"parameters": ref})
    return [(f"{name}: fused clip + AdamW, 3 steps", ok, detail)]


def run_checks(models: list[str], device: torch.device,
               echo: Callable[[str], None] = print) -> bool:
    """Every check for ``models`` on ``device``; prints one line each, returns whether all
    passed."""
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cudnn.deterministic = True  # cuDNN's choice must not differ between copies
    checks: list[tuple[str, Callable[[], list]]] = [("ctc", lambda: check_ctc(device))]
    for name in models:
        checks += [(f"{name}: training pass", lambda n=name: check_training(n, device)),
                   (f"{name}: inference", lambda n=name: check_inference(n, device)),
                   (f"{name}: fused clip + AdamW", lambda n=name: check_fused_update(n, device))]
    passed = True
    for label, check in checks:
        try:
            rows = check()
        except Exception as exc:  # noqa: BLE001 - a crashing check is a failed one; go on
            rows = [(label, False, f"raised {type(exc).__name__}: {exc}"[:300])]
        for label, ok, detail in rows:
            echo(f"{'PASS' if ok else 'FAIL'}  {label}: {detail}")
            passed &= ok
    echo(f"{'all checks passed' if passed else 'some checks FAILED'} on {device}")
    return passed


__all__ = ["run_checks"]
