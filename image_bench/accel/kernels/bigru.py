"""A bidirectional single-layer GRU split into its parallel and its sequential parts.

PyTorch's GRU (gate order r, z, n), for one direction with state h and input x_t:

    r_t = sigmoid(W_ir x_t + b_ir + W_hr h_{t-1} + b_hr)                 (G1)
    z_t = sigmoid(W_iz x_t + b_iz + W_hz h_{t-1} + b_hz)                 (G2)
    n_t = tanh(W_in x_t + b_in + r_t * (W_hn h_{t-1} + b_hn))            (G3)
    h_t = (1 - z_t) * n_t + z_t * h_{t-1}                                (G4)

The input projections W_i* x_t do not depend on h: one matmul covers every step of both
directions (``project_inputs``). Only the recurrence (the h-dependent part) is sequential; it is
done by a *recurrence backend*: ``TorchRecurrence`` here (reference and CPU tests) or the Triton
kernels of ``image_bench.accel.kernels.fused_gru``. Backward mirrors this: the backend runs the
reverse-time recurrence for dh and writes the pre-activation gradients; the weight, bias and
input gradients are matmuls and sums over all steps, done here.

Packing (what a backend sees; built with cat/stack, so autograd hands gradients back to the
original ``nn.GRU`` parameters and one state_dict serves both paths):

    w_ih (6H, I) = [weight_ih_l0; weight_ih_l0_reverse]      rows: dir 0 r,z,n, dir 1 r,z,n
    b_ih (6H,)   = [bias_ih_l0; bias_ih_l0_reverse]
    w_hh (2, 3H, H) = stack(weight_hh_l0, weight_hh_l0_reverse)
    b_hh (2, 3H)    = stack(bias_hh_l0, bias_hh_l0_reverse)

Tensors a backend exchanges (N sequences, T steps, batch first):
    gi   (N, T, 6H)  W_ih x_t without bias, in the compute dtype
    out  (N, T, 2H)  [h_fwd, h_bwd] as nn.GRU returns it, in the compute dtype
    hs   (N, T, 2H)  the same states in float32 (kept for backward when out is low precision)
    dgi  (N, T, 6H)  gradient of the gate pre-activations [da_r, da_z, da_n] per direction
and the recurrent parameters' gradients d_w_hh (2, 3H, H), d_b_ih (6H,), d_b_hh (2, 3H) in
float32 (float64 for float64 inputs): they are sums over all steps that the Triton backward
accumulates on chip while it walks back in time. dx and dW_ih are matmuls with dgi, done here.
"""

from __future__ import annotations

from typing import Callable, NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

LOWP_DTYPES = (torch.float16, torch.bfloat16)


class PackedBiGRU(NamedTuple):
    w_ih: torch.Tensor  # (6H, I)
    b_ih: torch.Tensor  # (6H,)
    w_hh: torch.Tensor  # (2, 3H, H)
    b_hh: torch.Tensor  # (2, 3H)


def check_bigru(gru: nn.GRU) -> None:
    """Raise if ``gru`` is not what the split GRU implements."""
    if not isinstance(gru, nn.GRU):
        raise TypeError(f"expected nn.GRU, got {type(gru).__name__}")
    problems = []
    if not gru.bidirectional:
        problems.append("bidirectional=False")
    if gru.num_layers != 1:
        problems.append(f"num_layers={gru.num_layers}")
    if not gru.batch_first:
        problems.append("batch_first=False")
    if not gru.bias:
        problems.append("bias=False")
    if problems:
        raise ValueError("the split BiGRU needs a 1-layer, bidirectional, batch-first GRU with "
                         "biases; got " + ", ".join(problems))


def pack_params(gru: nn.GRU) -> PackedBiGRU:
    """The four packed tensors of the module docstring, differentiable w.r.t. the parameters."""
    check_bigru(gru)
    return PackedBiGRU(
        w_ih=torch.cat([gru.weight_ih_l0, gru.weight_ih_l0_reverse], 0),
        b_ih=torch.cat([gru.bias_ih_l0, gru.bias_ih_l0_reverse], 0),
        w_hh=torch.stack([gru.weight_hh_l0, gru.weight_hh_l0_reverse], 0),
        b_hh=torch.stack([gru.bias_hh_l0, gru.bias_hh_l0_reverse], 0),
    )


def unpack_params(packed: PackedBiGRU) -> dict[str, torch.Tensor]:
    """Inverse of ``pack_params``: the nn.GRU state_dict names -> tensors."""
    three_h = packed.w_hh.shape[1]
    return {
        "weight_ih_l0": packed.w_ih[:three_h], "weight_ih_l0_reverse": packed.w_ih[three_h:],
        "weight_hh_l0": packed.w_hh[0], "weight_hh_l0_reverse": packed.w_hh[1],
        "bias_ih_l0": packed.b_ih[:three_h], "bias_ih_l0_reverse": packed.b_ih[three_h:],
        "bias_hh_l0": packed.b_hh[0], "bias_hh_l0_reverse": packed.b_hh[1],
    }


def step_index(s: int, d: int, steps: int) -> int:
    """Time index of processing step ``s`` of direction ``d`` (the reverse one walks T-1..0)."""
    return s if d == 0 else steps - 1 - s


class Recurrence(NamedTuple):
    """A backend: forward(gi, b_ih, w_hh, b_hh, out_dtype, keep_hs) -> (out, hs or None);
    backward(grad_out, gi, hs, b_ih, w_hh, b_hh, grad_dtype) -> (dgi, d_w_hh, d_b_ih, d_b_hh)."""

    forward: Callable
    backward: Callable


# ---------------------------------------------------------------------------------------------
# Reference backend: the recurrence step by step in torch. It computes in float32 (float64 when
# given float64), like the kernels, which accumulate in float32 whatever the storage dtype.


def _acc_dtype(t: torch.Tensor) -> torch.dtype:
    return torch.float64 if t.dtype == torch.float64 else torch.float32


def _gates(gi_t, h_prev, b_ih_d, w_hh_d, b_hh_d):
    """(G1)-(G3) for one direction and step; returns r, z, n and W_hn h + b_hn."""
    hidden = h_prev.shape[-1]
    gh = h_prev @ w_hh_d.t() + b_hh_d
    a = gi_t + b_ih_d
    r = torch.sigmoid(a[:, :hidden] + gh[:, :hidden])
    z = torch.sigmoid(a[:, hidden:2 * hidden] + gh[:, hidden:2 * hidden])
    hn = gh[:, 2 * hidden:]
    n = torch.tanh(a[:, 2 * hidden:] + r * hn)
    return r, z, n, hn


def torch_forward(gi, b_ih, w_hh, b_hh, out_dtype, keep_hs):
    n_seq, steps, six_h = gi.shape
    hidden = six_h // 6
    acc = _acc_dtype(gi)
    hs = gi.new_empty(n_seq, steps, 2 * hidden, dtype=acc)
    for d in range(2):
        cols = slice(3 * hidden * d, 3 * hidden * (d + 1))
        w, bh, bi = w_hh[d].to(acc), b_hh[d].to(acc), b_ih[cols].to(acc)
        h = gi.new_zeros(n_seq, hidden, dtype=acc)
        for s in range(steps):
            t = step_index(s, d, steps)
            r, z, n, _ = _gates(gi[:, t, cols].to(acc), h, bi, w, bh)
            h = n + z * (h - n)  # (G4), written as one fused multiply-add
            hs[:, t, hidden * d:hidden * (d + 1)] = h
    out = hs.to(out_dtype)
    keep = keep_hs and out_dtype != acc
    return out, (hs if keep else None)


def torch_backward(grad_out, gi, hs, b_ih, w_hh, b_hh, grad_dtype):
    """Reverse-time recurrence: the mirror of the Triton backward kernel, which sums the
    parameter gradients on chip where this one collects dghn and sums afterwards."""
    n_seq, steps, six_h = gi.shape
    hidden = six_h // 6
    acc = _acc_dtype(gi)
    dgi = gi.new_empty(n_seq, steps, six_h, dtype=grad_dtype)
    dghn = gi.new_empty(n_seq, steps, 2 * hidden, dtype=grad_dtype)
    for d in range(2):
        cols = slice(3 * hidden * d, 3 * hidden * (d + 1))
        hcols = slice(hidden * d, hidden * (d + 1))
        w, bh, bi = w_hh[d].to(acc), b_hh[d].to(acc), b_ih[cols].to(acc)
        dh = gi.new_zeros(n_seq, hidden, dtype=acc)
        for s in reversed(range(steps)):
            t = step_index(s, d, steps)
            if s > 0:
                h_prev = hs[:, step_index(s - 1, d, steps), hcols].to(acc)
            else:
                h_prev = gi.new_zeros(n_seq, hidden, dtype=acc)
            r, z, n, hn = _gates(gi[:, t, cols].to(acc), h_prev, bi, w, bh)
            dh = dh + grad_out[:, t, hcols].to(acc)
            da_n = dh * (1 - z) * (1 - n * n)  # through (G4) then tanh of (G3)
            da_z = dh * (h_prev - n) * z * (1 - z)  # through (G4) then sigmoid of (G2)
            da_r = da_n * hn * r * (1 - r)  # through r * (W_hn h + b_hn) of (G3), sigmoid (G1)
            d_hn = da_n * r
            dgi[:, t, cols] = torch.cat([da_r, da_z, da_n], 1).to(grad_dtype)
            dghn[:, t, hcols] = d_hn.to(grad_dtype)
            # dh_{t-1}: directly through z * h_{t-1} of (G4), and through W_h* h_{t-1}
            dh = dh * z + torch.cat([da_r, da_z, d_hn], 1) @ w
    return (dgi, *recurrent_param_grads(dgi, dghn, hs))


TORCH_RECURRENCE = Recurrence(torch_forward, torch_backward)


# ---------------------------------------------------------------------------------------------
# The parallel parts, shared by every backend.


def previous_states(hs: torch.Tensor) -> torch.Tensor:
    """h_{t-1} of each direction at each time index t (zeros where the direction starts)."""
    hidden = hs.shape[-1] // 2
    zeros = hs.new_zeros(hs.shape[0], 1, hidden)
    fwd = torch.cat([zeros, hs[:, :-1, :hidden]], 1)  # the forward direction came from t-1
    bwd = torch.cat([hs[:, 1:, hidden:], zeros], 1)  # the reverse one came from t+1
    return torch.cat([fwd, bwd], 2)


def recurrent_param_grads(dgi, dghn, hs):
    """dW_hh, db_ih, db_hh: sums over N and T of the pre-activation gradients (times h_{t-1})."""
    n_seq, steps, six_h = dgi.shape
    hidden = six_h // 6
    rows = n_seq * steps
    acc = _acc_dtype(hs)
    dgi2 = dgi.reshape(rows, six_h)
    d_b_ih = dgi2.sum(0, dtype=acc)
    # The hidden-side pre-activations of r and z equal the input-side ones; n's is dghn.
    h_prev = previous_states(hs).reshape(rows, 2 * hidden)
    dghn2 = dghn.reshape(rows, 2 * hidden)
    d_w_hh, d_b_hh = [], []
    for d in range(2):
        dgh = torch.cat([dgi2[:, 3 * hidden * d:3 * hidden * d + 2 * hidden],
                         dghn2[:, hidden * d:hidden * (d + 1)]], 1).to(acc)
        d_w_hh.append(dgh.t() @ h_prev[:, hidden * d:hidden * (d + 1)])
        d_b_hh.append(dgh.sum(0))
    return torch.stack(d_w_hh), d_b_ih, torch.stack(d_b_hh)


PARAM_NAMES = ("weight_ih_l0", "weight_hh_l0", "bias_ih_l0", "bias_hh_l0",
               "weight_ih_l0_reverse", "weight_hh_l0_reverse", "bias_ih_l0_reverse",
               "bias_hh_l0_reverse")  # nn.GRU's own parameter order


def make_bigru_function(recurrence: Recurrence) -> type[torch.autograd.Function]:
    """An autograd Function running the split BiGRU with ``recurrence`` for the sequential part.

    Inputs: x (N, T, I) already in the compute dtype, then the eight nn.GRU parameters in
    ``PARAM_NAMES`` order (any float dtype, float32 for a trained model). Packing happens inside,
    outside autograd's view (fewer autograd nodes per call: the eager path is host-bound).
    Output: (N, T, 2H) in x's dtype.
    """

    class SplitBiGRU(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x, *params):
            w_ih_f, w_hh_f, b_ih_f, b_hh_f, w_ih_r, w_hh_r, b_ih_r, b_hh_r = params
            w_ih = torch.cat([w_ih_f, w_ih_r])
            b_ih = torch.cat([b_ih_f, b_ih_r])
            w_hh = torch.stack([w_hh_f, w_hh_r])
            b_hh = torch.stack([b_hh_f, b_hh_r])
            compute = x.dtype
            n_seq, steps, _ = x.shape
            needs_grad = any(ctx.needs_input_grad)
            # One matmul for every step and both directions (cuBLAS, fp32 accumulation).
            gi = (x.reshape(n_seq * steps, -1) @ w_ih.to(compute).t()).view(n_seq, steps, -1)
            out, hs = recurrence.forward(gi, b_ih, w_hh, b_hh, compute, needs_grad)
            if needs_grad:
                ctx.save_for_backward(x, w_ih, b_ih, w_hh, b_hh, gi, out if hs is None else hs)
                ctx.param_dtypes = [p.dtype for p in params]
            return out

        @staticmethod
        def backward(ctx, grad_out):
            x, w_ih, b_ih, w_hh, b_hh, gi, hs = ctx.saved_tensors
            compute = x.dtype
            dgi, d_w_hh, d_b_ih, d_b_hh = recurrence.backward(
                grad_out.contiguous(), gi, hs, b_ih, w_hh, b_hh, compute)
            n_seq, steps, six_h = dgi.shape
            three_h = six_h // 2
            dgi2 = dgi.reshape(n_seq * steps, six_h)
            dx = None
            if ctx.needs_input_grad[0]:
                dx = (dgi2 @ w_ih.to(compute)).view_as(x)
            # cuBLAS accumulates in float32 over all N*T rows; only the result is rounded.
            d_w_ih = dgi2.t() @ x.reshape(n_seq * steps, -1)
            grads = (d_w_ih[:three_h], d_w_hh[0], d_b_ih[:three_h], d_b_hh[0],
                     d_w_ih[three_h:], d_w_hh[1], d_b_ih[three_h:], d_b_hh[1])
            return (dx, *(g.to(dtype) for g, dtype in zip(grads, ctx.param_dtypes)))

    SplitBiGRU.__name__ = SplitBiGRU.__qualname__ = "SplitBiGRU"
    return SplitBiGRU


TorchSplitBiGRU = make_bigru_function(TORCH_RECURRENCE)


def compute_dtype_for(x: torch.Tensor) -> torch.dtype:
    """The dtype nn.GRU (or a linear layer, a convolution) would compute x in: the autocast dtype
    when autocast is on for x's device, else x's own."""
    if torch.is_autocast_enabled(x.device.type):
        return torch.get_autocast_dtype(x.device.type)
    return x.dtype


def split_bigru(gru: nn.GRU, x: torch.Tensor,
                function: type[torch.autograd.Function] = TorchSplitBiGRU) -> torch.Tensor:
    """Run ``gru`` (1-layer, bidirectional, batch-first) over x (N, T, I) -> (N, T, 2H).

    Same result as ``gru(x)[0]``, also under autocast (computes in the autocast dtype and
    returns it, as nn.GRU does).
    """
    if x.dim() != 3 or x.shape[-1] != gru.input_size:
        raise ValueError(f"expected input (N, T, {gru.input_size}), got {tuple(x.shape)}")
    if x.shape[0] == 0 or x.shape[1] == 0:
        raise ValueError(f"empty input {tuple(x.shape)}")
    check_bigru(gru)
    compute = compute_dtype_for(x)
    with torch.autocast(x.device.type, enabled=False):
        return function.apply(x.to(compute), *(getattr(gru, name) for name in PARAM_NAMES))


def reference_bigru(packed: PackedBiGRU, x: torch.Tensor) -> torch.Tensor:
    """Plain autograd-through-the-loop version with the same packing (no custom backward)."""
    n_seq, steps, _ = x.shape
    hidden = packed.w_hh.shape[-1]
    gi = F.linear(x, packed.w_ih).view(n_seq, steps, 6 * hidden)
    outs = [[None] * steps for _ in range(2)]
    for d in range(2):
        cols = slice(3 * hidden * d, 3 * hidden * (d + 1))
        h = x.new_zeros(n_seq, hidden)
        for s in range(steps):
            t = step_index(s, d, steps)
            r, z, n, _ = _gates(gi[:, t, cols], h, packed.b_ih[cols], packed.w_hh[d],
                                packed.b_hh[d])
            h = n + z * (h - n)
            outs[d][t] = h
    return torch.cat([torch.stack(outs[0], 1), torch.stack(outs[1], 1)], 2)
