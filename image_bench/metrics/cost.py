"""Parameters and FLOPs of a model, counted two ways (RECOGNIZERS.md Part 4).

1. **fvcore** (the primary count). ``FlopCountAnalysis`` traces the model with torch.jit and counts
   per aten op, one multiply-add = one FLOP (i.e. MACs). Out of the box it counts recurrent layers
   and ``F.scaled_dot_product_attention`` as zero, so handlers are added for ``aten::gru``,
   ``aten::lstm`` and ``aten::scaled_dot_product_attention`` (and ``aten::upsample_bicubic2d``, in
   fvcore's own convention for bilinear: one per output element). Ops that remain unsupported are
   reported: element-wise / no-multiply ops (add, GELU, softmax, max-pool, ...) are zero by the
   MAC convention; any other one is listed under ``uncounted_ops`` and printed.
2. **paper-compatible** (hooks). A module-hook MAC counter that counts what ptflops' pytorch
   backend counts (rules below): Conv / ConvTranspose / Linear / norms / ReLU-family / pooling /
   upsampling and RNN/GRU/LSTM (gate products + biases + Hadamard terms per step). Functional
   products (``@``, ``F.scaled_dot_product_attention``) are invisible to it, as to ptflops, which
   is how the IMAGE paper's Table 1 figures come out (CRNN 0.907 -> 0.91 G, SVTR-B 1.898 -> 1.90 G).

Both count in eval mode, batch 1, at the model's own input size (``model.example_input(1)``), so
training-only parts (the STN) never run; their parameters are counted apart.
"""

from __future__ import annotations

import inspect
import json
import logging
import math
import sys
from collections import Counter
from typing import Any, Iterable

import click
import torch
from torch import nn

from image_bench.models.base import ModelOutput
from image_bench.models.vit import PatchEmbed
from image_bench.usage import UsageError

# ---------------------------------------------------------------------------------------------
# fvcore handlers


def _shape(value) -> list[int]:
    from fvcore.nn.jit_handles import get_shape

    shape = get_shape(value)
    if shape is None:
        raise ValueError("fvcore handler: a traced tensor has no known shape")
    return shape


def _constant(value) -> Any:
    return value.toIValue()


def rnn_macs(gates: int, input_size: int, hidden: int, num_layers: int, directions: int,
             batch: int, steps: int) -> int:
    """MACs of a multi-layer (bi)RNN's gate products: D*N*T*(G*H*I_l + G*H*H) summed over layers,
    with I_0 = input_size and I_l = D*H above the first layer. Biases and the element-wise gate
    arithmetic are not multiply-adds of two operands and are left out (fvcore's convention)."""
    total = 0
    layer_input = input_size
    for _ in range(num_layers):
        total += directions * batch * steps * (gates * hidden * layer_input
                                               + gates * hidden * hidden)
        layer_input = directions * hidden
    return total


def _rnn_handle(gates: int):
    """Handler for ``aten::gru(input, hx, params, has_biases, num_layers, dropout, train,
    bidirectional, batch_first)`` (G = 3) and ``aten::lstm(input, hx[], params, ...)`` (G = 4)."""

    def handle(inputs, outputs) -> int:
        in_shape = _shape(inputs[0])
        num_layers = int(_constant(inputs[4]))
        directions = 2 if _constant(inputs[7]) else 1
        batch_first = bool(_constant(inputs[8]))
        if len(in_shape) == 2:  # unbatched (T, I)
            steps, batch, features = in_shape[0], 1, in_shape[1]
        elif batch_first:
            batch, steps, features = in_shape
        else:
            steps, batch, features = in_shape
        out_features = _shape(outputs[0])[-1]
        hidden = out_features // directions
        # LSTM with proj_size would make the output narrower than the gates: not used in the suite.
        params = list(inputs[2].node().inputs())
        if params:
            rows = _shape(params[0])[0]
            if rows != gates * hidden:
                raise ValueError(f"recurrent layer with {rows} gate rows but hidden {hidden}: "
                                 "projected LSTMs are not supported by this handler")
        return rnn_macs(gates, features, hidden, num_layers, directions, batch, steps)

    return handle


gru_flop_jit = _rnn_handle(3)
lstm_flop_jit = _rnn_handle(4)


def sdpa_macs(query_shape: list[int], key_shape: list[int], value_shape: list[int]) -> int:
    """MACs of softmax(q k^T) v: q k^T is B*Nq*Nk*d, attn v is B*Nq*Nk*dv (B = all batch and head
    dimensions). The mask add, scaling and softmax are element-wise and not counted."""
    batch = math.prod(query_shape[:-2])
    nq, d = query_shape[-2:]
    nk = key_shape[-2]
    dv = value_shape[-1]
    return batch * nq * nk * d + batch * nq * nk * dv


def sdpa_flop_jit(inputs, outputs) -> int:
    return sdpa_macs(_shape(inputs[0]), _shape(inputs[1]), _shape(inputs[2]))


def upsample_flop_jit(inputs, outputs) -> int:
    """One per output element, fvcore's own convention for bilinear and nearest upsampling."""
    return math.prod(_shape(outputs[0]))


EXTRA_HANDLES = {
    "aten::gru": gru_flop_jit,
    "aten::lstm": lstm_flop_jit,
    "aten::scaled_dot_product_attention": sdpa_flop_jit,
    "aten::upsample_bicubic2d": upsample_flop_jit,
}

# Ops with no multiply-accumulate of two operands (element-wise arithmetic, activations,
# normalising exponentials, max/avg pooling, comparisons, indexing and reshuffles). They are zero
# under the MAC convention and fine to leave uncounted; anything unsupported outside this set is
# reported as uncounted. ``_weight_norm`` re-parametrises a weight from (g, v): it depends on the
# parameters only (foldable at inference) and costs one pass over the weight.
NO_MAC_OPS = frozenset(
    "aten::" + name for name in (
        "add add_ sub sub_ rsub mul mul_ div div_ neg abs pow sqrt rsqrt exp log clamp_min "
        "gelu relu relu_ leaky_relu prelu elu silu mish hardswish hardsigmoid sigmoid tanh "
        "softmax log_softmax softplus max_pool1d max_pool2d avg_pool1d avg_pool2d "
        "adaptive_max_pool2d pixel_shuffle pixel_unshuffle mean sum cumsum amax argmax where "
        "minimum maximum masked_fill_ fill_ zero_ repeat repeat_interleave tile flip lt le ne "
        "ones_like eye meshgrid linspace rand rand_like bernoulli_ dropout_ feature_dropout "
        "alpha_dropout hardtanh sign round numpy_T mT contiguous expand_as view_as pad unflatten "
        "scatter scatter_ index_select one_hot _weight_norm"
    ).split()
)


def _flat_tensors(output) -> tuple[torch.Tensor, ...]:
    """Every tensor a ModelOutput (or tensor / tuple / dict) carries, for torch.jit tracing."""
    if isinstance(output, torch.Tensor):
        return (output,)
    if isinstance(output, ModelOutput):
        parts = [output.sr, output.logits, *output.sr_steps, *output.logits_steps,
                 *output.clue_logits_steps, *output.extras.values()]
        return tuple(t for t in parts if isinstance(t, torch.Tensor))
    if isinstance(output, dict):
        output = list(output.values())
    if isinstance(output, (list, tuple)):
        return tuple(t for item in output for t in _flat_tensors(item))
    return ()


class _Traceable(nn.Module):
    """Wraps a model so that its forward returns a flat tuple of tensors (torch.jit cannot trace
    a dataclass). fvcore's module names get the prefix ``model.``."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return _flat_tensors(self.model(x))


def fvcore_analysis(model: nn.Module, inputs: torch.Tensor):
    """A FlopCountAnalysis of ``model`` on ``inputs`` with the suite's extra handlers."""
    from fvcore.nn import FlopCountAnalysis

    analysis = FlopCountAnalysis(_Traceable(model), (inputs,))
    for op, handle in EXTRA_HANDLES.items():
        analysis.set_op_handle(op, handle)
    analysis.unsupported_ops_warnings(False)
    analysis.uncalled_modules_warnings(False)
    return analysis


# ---------------------------------------------------------------------------------------------
# The paper-compatible hook counter (ptflops pytorch-backend style)
#
# What ptflops (0.7, backend 'pytorch') effectively counts, rebuilt here as module hooks:
# - Conv and ConvTranspose: per *output* position, k*k*Cin*Cout/groups (+ Cout per position for a
#   bias). For a transposed conv that is stride^2 times the true MACs; kept, for compatibility.
# - Linear: in.numel() * out_features, plus the bias once per feature (not per token).
# - BatchNorm / InstanceNorm / GroupNorm: numel, x2 when affine; LayerNorm: numel (ptflops checks
#   an ``affine`` attribute, which LayerNorm does not have).
# - ReLU / PReLU / ELU / GELU and pooling: numel twice, since ptflops' module hook counts them and
#   so does its patched functional (F.relu, F.gelu, F.max_pool2d, ...) that the module calls.
#   LeakyReLU and ReLU6 call unpatched functionals: once.
# - RNN / GRU / LSTM: per step and direction, both gate products, both biases, Hadamard terms.
# - Upsample: output numel.
# Not counted, as by ptflops: ``@``, F.scaled_dot_product_attention, element-wise tensor
# arithmetic, Hardswish, Mish, Sigmoid/Tanh modules, and functional calls made outside modules.


def _conv_macs(module: nn.modules.conv._ConvNd, inputs, output) -> int:
    return _conv_macs_at(module, output.shape[0] * math.prod(output.shape[2:]))


def _patch_embed_macs(module: PatchEmbed, inputs, output) -> int:
    """PatchEmbed computes its strided convolution as a product (its proj module is not called):
    counted as that convolution, one output position per token."""
    return _conv_macs_at(module.proj, output.shape[0] * output.shape[1])


def _conv_macs_at(module: nn.modules.conv._ConvNd, positions: int) -> int:
    per_position = (math.prod(module.kernel_size) * module.in_channels
                    * (module.out_channels // module.groups))
    bias = module.out_channels * positions if module.bias is not None else 0
    return per_position * positions + bias


def _linear_macs(module: nn.Linear, inputs, output) -> int:
    return inputs[0].numel() * module.out_features + (module.out_features if module.bias is not
                                                       None else 0)


def _norm_macs(module: nn.Module, inputs, output) -> int:
    return inputs[0].numel() * (2 if getattr(module, "affine", False) else 1)


def _rnn_step_macs(module: nn.RNNBase, layer: int) -> int:
    """Per step, per direction: both gate products, both biases and the gates' Hadamard terms."""
    w_ih = getattr(module, f"weight_ih_l{layer}")
    w_hh = getattr(module, f"weight_hh_l{layer}")
    h = module.hidden_size
    macs = w_ih.numel() + w_hh.numel()
    if isinstance(module, nn.GRU):
        macs += h + 3 * h + 3 * h  # r*(W h), the state sums, z*h + (1-z)*n
    elif isinstance(module, nn.LSTM):
        macs += 4 * h + 3 * h + 3 * h  # gate sums, c = f*c + i*g, h = o*tanh(c)
    else:
        macs += h
    if module.bias:
        macs += 2 * w_ih.shape[0]
    return macs


def _rnn_macs(module: nn.RNNBase, inputs, output) -> int:
    x = inputs[0]
    frames = x.shape[0] if x.dim() == 2 else x.shape[0] * x.shape[1]  # batch x steps
    directions = 2 if module.bidirectional else 1
    per_step = sum(_rnn_step_macs(module, layer) for layer in range(module.num_layers))
    return per_step * frames * directions


def _output_numel(module, inputs, output) -> int:
    return output.numel()


def _output_numel_twice(module, inputs, output) -> int:
    return 2 * output.numel()


def _input_numel_twice(module, inputs, output) -> int:
    return 2 * inputs[0].numel()


# Exact types, as ptflops matches them (a subclass of nn.Conv2d is not counted by its rule).
_HOOK_RULES: dict[type, Any] = {
    **dict.fromkeys((nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose1d, nn.ConvTranspose2d,
                     nn.ConvTranspose3d), _conv_macs),
    nn.Linear: _linear_macs,
    **dict.fromkeys((nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.LayerNorm, nn.GroupNorm,
                     nn.InstanceNorm1d, nn.InstanceNorm2d, nn.InstanceNorm3d), _norm_macs),
    **dict.fromkeys((nn.GRU, nn.LSTM, nn.RNN), _rnn_macs),
    **dict.fromkeys((nn.ReLU, nn.PReLU, nn.ELU, nn.GELU), _output_numel_twice),
    **dict.fromkeys((nn.LeakyReLU, nn.ReLU6), _output_numel),
    **dict.fromkeys((nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d, nn.AvgPool1d, nn.AvgPool2d,
                     nn.AvgPool3d, nn.AdaptiveMaxPool1d, nn.AdaptiveMaxPool2d,
                     nn.AdaptiveMaxPool3d, nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d,
                     nn.AdaptiveAvgPool3d), _input_numel_twice),
    nn.Upsample: _output_numel,
    PatchEmbed: _patch_embed_macs,
}


def _first_tensor(output):
    return output[0] if isinstance(output, (tuple, list)) else output


def hook_macs(model: nn.Module, inputs: torch.Tensor) -> dict[str, int]:
    """Run ``model`` once with counting hooks; return MACs per counted module name."""
    counts: Counter[str] = Counter()
    handles = []
    for name, module in model.named_modules():
        rule = _HOOK_RULES.get(type(module))
        if rule is None:
            continue

        def hook(mod, args, out, name=name, rule=rule):
            counts[name] += int(rule(mod, args, _first_tensor(out)))

        handles.append(module.register_forward_hook(hook))
    try:
        with torch.no_grad():
            model(inputs)
    finally:
        for handle in handles:
            handle.remove()
    return dict(counts)


# ---------------------------------------------------------------------------------------------
# The count


def _is_under(name: str, prefixes: Iterable[str]) -> bool:
    return any(name == p or name.startswith(p + ".") for p in prefixes)


def _group_sum(per_module: dict[str, int], prefixes: Iterable[str], leaf_only: bool) -> int:
    prefixes = list(prefixes)
    if leaf_only:  # per-leaf counts: add every module under a prefix
        return sum(v for k, v in per_module.items() if _is_under(k, prefixes))
    return sum(per_module[p] for p in prefixes)  # fvcore's by_module already sums a subtree


def count_params(model: nn.Module, training_only: Iterable[str] | None = None) -> tuple[int, int]:
    """(parameters used at inference, parameters of the training-only submodules), where
    training-only means a name under a prefix of ``training_only`` (default
    ``model.training_only``). Shared parameters are counted once."""
    prefixes = tuple(getattr(model, "training_only", ()) if training_only is None
                     else training_only)
    params = params_training_only = 0
    for name, p in model.named_parameters():
        if _is_under(name, prefixes):
            params_training_only += p.numel()
        else:
            params += p.numel()
    return params, params_training_only


def count_cost(model: nn.Module, inputs: torch.Tensor | None = None,
               training_only: Iterable[str] | None = None) -> dict[str, Any]:
    """Parameters and MACs of ``model`` at batch 1 in eval mode.

    Returns ``params`` (used at inference), ``params_training_only`` (submodules whose names start
    with a prefix of ``model.training_only``), ``flops`` (fvcore MACs with the suite's handlers),
    ``flops_paper_compatible`` (the hook count), ``uncounted_ops`` (unsupported ops that are not
    element-wise, with counts: should be empty), ``elementwise_ops`` (zero by convention), the
    ``input`` shape and, when the model has ``cost_groups()``, ``groups`` and
    ``groups_paper_compatible`` (MACs per part) with ``groups_residual`` (total minus the parts).
    """
    params, params_training_only = count_params(model, training_only)
    if inputs is None:
        inputs = model.example_input(1)
    if inputs.shape[0] != 1:
        raise ValueError(f"count at batch 1, got an input of batch {inputs.shape[0]}")
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            analysis = fvcore_analysis(model, inputs)
            total = int(analysis.total())
            by_module = {k[len("model."):] if k.startswith("model.") else "": int(v)
                         for k, v in analysis.by_module().items() if k != ""}
            unsupported = dict(analysis.unsupported_ops())
        per_hook = hook_macs(model, inputs)
    finally:
        model.train(was_training)

    result: dict[str, Any] = {
        "input": list(inputs.shape),
        "params": params,
        "params_training_only": params_training_only,
        "flops": total,
        "flops_paper_compatible": sum(per_hook.values()),
        "uncounted_ops": {k: v for k, v in sorted(unsupported.items()) if k not in NO_MAC_OPS},
        "elementwise_ops": {k: v for k, v in sorted(unsupported.items()) if k in NO_MAC_OPS},
    }
    if hasattr(model, "cost_groups"):
        groups = {part: [p] if isinstance(p, str) else list(p)
                  for part, p in model.cost_groups().items()}
        for part, parts in groups.items():
            missing = [p for p in parts if p not in by_module]
            if missing:
                raise KeyError(f"cost group {part!r} names no module {missing}")
        result["groups"] = {part: _group_sum(by_module, p, False) for part, p in groups.items()}
        result["groups_paper_compatible"] = {part: _group_sum(per_hook, p, True)
                                             for part, p in groups.items()}
        result["groups_residual"] = total - sum(result["groups"].values())
    return result


# ---------------------------------------------------------------------------------------------
# The command


def _parse_size(text: str) -> tuple[int, int]:
    try:
        h, w = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise UsageError(f"--input {text!r}: expected HxW such as 32x128") from None
    return h, w


def _fmt_g(value: int) -> str:
    return f"{value / 1e9:.3f} G"


def _print_table(name: str, result: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"cost of {name} at input {'x'.join(map(str, result['input']))} "
                        "(batch 1, eval; FLOPs = MACs)")
    table.add_column("quantity")
    table.add_column("value", justify="right")
    table.add_row("params (inference)", f"{result['params']:,} ({result['params'] / 1e6:.2f} M)")
    table.add_row("params (training only)", f"{result['params_training_only']:,}")
    table.add_row("GFLOPs, fvcore (+GRU/LSTM/SDPA handlers)", _fmt_g(result["flops"]))
    table.add_row("GFLOPs, paper-compatible (module hooks, no @/SDPA)",
                  _fmt_g(result["flops_paper_compatible"]))
    for part, macs in result.get("groups", {}).items():
        paper = result["groups_paper_compatible"][part]
        table.add_row(f"  part: {part}", f"{_fmt_g(macs)}  (hooks {_fmt_g(paper)})")
    if "groups_residual" in result:
        table.add_row("  outside the parts", _fmt_g(result["groups_residual"]))
    uncounted = ", ".join(f"{k} x{v}" for k, v in result["uncounted_ops"].items()) or "none"
    table.add_row("uncounted ops (not element-wise)", uncounted)
    table.add_row("element-wise ops (zero by convention)",
                  ", ".join(k.removeprefix("aten::") for k in result["elementwise_ops"]) or "none")
    Console().print(table)


@click.command("cost")
@click.argument("model_name", metavar="MODEL")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object on stdout.")
@click.option("--input", "input_size", default=None, metavar="HxW",
              help="Count at this input size instead of the model's own.")
@click.option("--set", "settings", multiple=True, metavar="KEY=VALUE",
              help="Model constructor argument (repeatable), e.g. --set num_layers=2.")
def cost(model_name: str, as_json: bool, input_size: str | None, settings: tuple[str, ...]):
    """Parameters and FLOPs (MACs) of MODEL at batch 1 in eval mode.

    FLOPs are fvcore MACs with handlers for GRU, LSTM and attention; the paper-compatible column
    is a ptflops-style hook count (no attention products), which is how the IMAGE paper's
    Table 1 figures come out. The STN and other training-only parts are counted apart.
    """
    from image_bench.engine.cli_checks import parse_sets
    from image_bench.models.base import build, model_class

    logging.basicConfig(stream=sys.stderr, level=logging.WARNING)
    fields, kwargs = parse_sets(model_name, settings)  # unknown model or key: exit 2
    if fields:
        raise UsageError(f"--set {', '.join(fields)}: a training setting; cost takes the model's "
                         "constructor arguments only")
    size = _parse_size(input_size) if input_size else None
    factory = model_class(model_name)
    if size is not None and "image_size" in inspect.signature(factory).parameters:
        kwargs.setdefault("image_size", size)  # models with size-dependent parts build for it
    try:
        model = build(model_name, **kwargs)
    except (TypeError, ValueError) as err:
        raise UsageError(f"{model_name} cannot be built with {kwargs}: {err}") from None
    inputs = None
    if size is not None:
        inputs = torch.rand(1, getattr(model, "in_channels", 3), *size)
    try:
        result = count_cost(model, inputs)
    except (RuntimeError, ValueError) as err:
        raise click.ClickException(f"counting {model_name!r} failed: {err}") from None
    result = {"model": model_name, **result}
    if as_json:
        click.echo(json.dumps(result))
    else:
        _print_table(model_name, result)
    if result["uncounted_ops"]:
        click.echo(f"warning: ops left uncounted: {result['uncounted_ops']}", err=True)


__all__ = ["count_cost", "count_params", "hook_macs", "fvcore_analysis", "rnn_macs", "sdpa_macs",
           "cost", "EXTRA_HANDLES", "NO_MAC_OPS"]
