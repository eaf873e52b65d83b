"""Loss functions shared by the models of the suite."""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F

from image_bench import charset


def ctc_loss(logits: torch.Tensor, targets: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """CTC loss of logits (B, T, 37) against padded targets (B, S) with lengths (B,).

    Computed in float32 (CTC's log-space recursions are not safe in bf16); averaged over the batch
    after dividing each sample by its target length (PyTorch's 'mean' reduction). Infinite
    losses (a target longer than the frames can spell) are zeroed rather than poisoning the batch.

    Where the lengths live picks the implementation. On the host: ``F.ctc_loss`` (one fused
    kernel on CUDA); it reads lengths on the host, and lengths on the GPU would cost one
    device-to-host sync per call. On the same GPU as the logits: :func:`ctc_nll`, a recursion of
    plain tensor ops that never syncs, so a whole training step can be captured as a CUDA graph
    (``accel.graphed``).
    """
    return ctc_losses([logits], targets, lengths)[0]


def ctc_losses(logits: list[torch.Tensor], targets: torch.Tensor,
               lengths: torch.Tensor) -> list[torch.Tensor]:
    """:func:`ctc_loss` of several logits against the same targets (IMAGE's p_1..p_{L+1}).

    On the sync-free path the logits are stacked along the batch and run through one recursion
    (one set of T small kernels instead of one per logits tensor)."""
    if lengths.device.type == "cpu":
        frames = torch.full((logits[0].shape[0],), logits[0].shape[1], dtype=torch.long)
        return [F.ctc_loss(F.log_softmax(p.float(), dim=-1).transpose(0, 1), targets, frames,
                           lengths, blank=charset.BLANK, reduction="mean", zero_infinity=True)
                for p in logits]
    return sync_free_ctc_losses(logits, targets, lengths)


def sync_free_ctc_losses(logits: list[torch.Tensor], targets: torch.Tensor,
                         lengths: torch.Tensor) -> list[torch.Tensor]:
    """The 'mean' CTC losses of :func:`ctc_losses` through :func:`ctc_nll`, on any device."""
    k, batch = len(logits), logits[0].shape[0]
    log_probs = F.log_softmax(torch.cat(logits).float(), dim=-1).transpose(0, 1)
    lengths = lengths.repeat(k)
    nll = ctc_nll(log_probs, targets.repeat(k, 1), lengths)
    return list((nll / lengths.clamp(min=1)).view(k, batch).mean(dim=1).unbind())


# A finite stand-in for log(0): -inf would give NaN gradients (exp(-inf - -inf)) at unreachable
# states of the recursion; exp(_LOG_ZERO - x) is exactly 0 in float32 all the same.
_LOG_ZERO = -1e30


def ctc_nll(log_probs: torch.Tensor, targets: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """Per-sample CTC negative log-likelihood by the forward (alpha) recursion of Graves et al.
    2006, in log space, with fixed shapes and no host reads: (T, B, C) log-probabilities, (B, S)
    padded targets, (B,) lengths on the same device -> (B,), zero where the target cannot be
    spelt in T frames (``zero_infinity``).

    Extended label l' = (blank, l_1, blank, l_2, ..., l_S, blank), 2S+1 states. alpha_t(s) =
    [alpha_{t-1}(s) + alpha_{t-1}(s-1) + alpha_{t-1}(s-2) if l'_s != blank and l'_s != l'_{s-2}]
    * y_t(l'_s); the likelihood P is alpha_{T-1}(2n) + alpha_{T-1}(2n-1) for a target of length
    n. The gradient is Graves' alpha-beta form (:class:`_CTCFromEmissions`), not autograd through
    the T steps: on CUDA both directions are one Triton kernel each where the acceleration layer
    installed them (``accel.kernels.ctc``, :func:`use_ctc_kernels`).
    """
    frames, batch, _ = log_probs.shape
    states = 2 * targets.shape[1] + 1
    ext = targets.new_full((batch, states), charset.BLANK)
    ext[:, 1::2] = targets
    emit = log_probs.gather(2, ext.unsqueeze(0).expand(frames, -1, -1))  # (T, B, 2S+1)
    # the skip s-2 -> s is allowed into a label state that differs from the label two back
    skip = log_probs.new_zeros(batch, states)
    can_skip = (ext[:, 2:] != charset.BLANK) & (ext[:, 2:] != ext[:, :-2])
    skip[:, 2:] = torch.where(can_skip, 0.0, _LOG_ZERO)
    # log P's states: 2n, and 2n - 1 unless the target is empty
    s = torch.arange(states, device=lengths.device)
    final = (s == 2 * lengths[:, None]) | ((s == 2 * lengths[:, None] - 1) & (lengths[:, None] > 0))
    final = torch.where(final, 0.0, _LOG_ZERO).to(log_probs.dtype)
    return _CTCFromEmissions.apply(emit, skip, final)


class _CTCFromEmissions(torch.autograd.Function):
    """nll = -log P from the emissions y_t(l'_s) (T, B, S'), with the skips and final states of
    :func:`ctc_nll`; zeroed where P = 0. Backward (Graves et al. 2006, Eq. 16): with beta_t(s)
    the log-probability of finishing from (t, s), emission included, the paths through (t, s)
    have log-probability alpha_t(s) + beta_t(s) - y_t(l'_s), so

        d nll / d log y_t(l'_s) = -exp(alpha_t(s) + beta_t(s) - log y_t(l'_s) - log P).
    """

    @staticmethod
    def forward(ctx, emit, skip, final):
        kernels = _ctc_kernels(emit)
        if kernels is not None:
            emit, skip, final = (t.float().contiguous() for t in (emit, skip, final))
            alpha = kernels.alphas(emit, skip, _LOG_ZERO)
        else:
            alpha = _alphas(emit, skip)
        nll = -torch.logsumexp(alpha[-1] + final, dim=1)
        ctx.save_for_backward(emit, skip, final, alpha, nll)
        return torch.where(nll < -_LOG_ZERO / 2, nll, torch.zeros_like(nll))

    @staticmethod
    def backward(ctx, grad):
        emit, skip, final, alpha, nll = ctx.saved_tensors
        # an infeasible target (zeroed loss) takes no gradient
        weight = torch.where(nll < -_LOG_ZERO / 2, grad, torch.zeros_like(grad))
        kernels = _ctc_kernels(emit)
        if kernels is not None:
            grad_emit = kernels.emit_grad(emit, skip, final, alpha, weight.float().contiguous(),
                                          nll, _LOG_ZERO)
            return grad_emit, None, None
        return _emit_grad(emit, skip, final, alpha, weight, nll), None, None


_ctc_kernel_loader = None  # set by use_ctc_kernels (the acceleration layer)


def use_ctc_kernels(loader) -> None:
    """Run :func:`ctc_nll`'s recursions through ``loader()`` (a module with ``alphas`` and
    ``emit_grad``, or None) on CUDA; None turns it off. The losses sit below the acceleration
    layer and do not import it: ``image_bench.accel`` installs its Triton kernels here."""
    global _ctc_kernel_loader
    _ctc_kernel_loader = loader


def _ctc_kernels(emit: torch.Tensor):
    """The installed kernels for float32/bf16/fp16 emissions on CUDA; None elsewhere (the CPU,
    float64, which the tests check the torch form in, and where none are installed)."""
    if _ctc_kernel_loader is None or not emit.is_cuda or emit.dtype == torch.float64:
        return None
    return _ctc_kernel_loader()


def _alphas(emit: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
    """alpha_t for t = 0..T-1 (T, B, S'), in log space."""
    states = emit.shape[2]
    alpha = F.pad(emit[0, :, :2], (0, states - 2), value=_LOG_ZERO)  # alpha_0: only s = 0, 1
    out = [alpha]
    for t in range(1, emit.shape[0]):
        one_back = F.pad(alpha[:, :-1], (1, 0), value=_LOG_ZERO)
        two_back = F.pad(alpha[:, :-2], (2, 0), value=_LOG_ZERO) + skip
        alpha = torch.logaddexp(torch.logaddexp(alpha, one_back), two_back) + emit[t]
        out.append(alpha)
    return torch.stack(out)


def _emit_grad(emit, skip, final, alpha, weight, nll) -> torch.Tensor:
    """d (weight . nll) / d emit by the beta recursion (see :class:`_CTCFromEmissions`)."""
    beta = final + emit[-1]
    out = [beta]
    skip_from = F.pad(skip[:, 2:], (0, 2), value=_LOG_ZERO)  # s -> s + 2 allowed into s + 2
    for t in range(emit.shape[0] - 2, -1, -1):
        one_on = F.pad(beta[:, 1:], (0, 1), value=_LOG_ZERO)
        two_on = F.pad(beta[:, 2:], (0, 2), value=_LOG_ZERO) + skip_from
        beta = torch.logaddexp(torch.logaddexp(beta, one_on), two_on) + emit[t]
        out.append(beta)
    beta = torch.stack(out[::-1])
    feasible = (weight != 0)[None, :, None]
    arg = torch.where(feasible, alpha + beta - emit + nll[None, :, None], _LOG_ZERO)
    return -weight[None, :, None] * torch.exp(arg)


def gradient_magnitude(images: torch.Tensor) -> torch.Tensor:
    """sqrt(((x[r]-x[l])/2)^2 + ((x[b]-x[t])/2)^2 + 1e-6), zero-padded central differences
    (the gradient map of TSRN's gradient prior loss, ORIGINALS.md §3.1)."""
    padded = F.pad(images, (1, 1, 1, 1))
    dx = (padded[..., 1:-1, 2:] - padded[..., 1:-1, :-2]) / 2
    dy = (padded[..., 2:, 1:-1] - padded[..., :-2, 1:-1]) / 2
    return torch.sqrt(dx * dx + dy * dy + 1e-6)


def gradient_prior_loss(sr: torch.Tensor, hr: torch.Tensor) -> torch.Tensor:
    """L1 between the gradient-magnitude maps of SR and HR, on the RGB channels."""
    return F.l1_loss(gradient_magnitude(sr[:, :3].float()), gradient_magnitude(hr[:, :3].float()))


def _tsrn_image_loss(sr: torch.Tensor, hr: torch.Tensor) -> torch.Tensor:
    return 100.0 * (F.mse_loss(sr.float(), hr.float()) + 1e-4 * gradient_prior_loss(sr, hr))


_image_loss_compiled = False  # set by compile_image_loss


@functools.cache
def _compiled_image_loss():
    return torch.compile(_tsrn_image_loss, dynamic=False)  # built on the first CUDA call


def compile_image_loss(enabled: bool = True) -> None:
    """Compute :func:`tsrn_image_loss` of CUDA tensors through ``torch.compile`` (process-wide;
    the CPU keeps the eager form). Eagerly each call is ~25 passes over HR-sized fp32 images
    (casts, the pad, the slices and differences of the gradient map, its square root, the L1
    and their backward); compiled, a few fused kernels each way. IMAGE-2's training step, three
    SR outputs at batch 256, H100 (``scripts/gpu_explore.py`` ``eagerloss`` against ``base``, one
    call): 4,824 -> 4,950 and 4,977 samples/s.
    ``accel.optimize.compile_regions`` turns it on with the SR parts."""
    global _image_loss_compiled
    _image_loss_compiled = enabled


def tsrn_image_loss(sr: torch.Tensor, hr: torch.Tensor) -> torch.Tensor:
    """TSRN's ImageLoss as the originals train with it: 100 * (MSE + 1e-4 * gradient prior).

    MSE runs over every channel given (RGB, plus the mask channel where a model uses one)."""
    if _image_loss_compiled and sr.is_cuda:
        return _compiled_image_loss()(sr, hr)
    return _tsrn_image_loss(sr, hr)
