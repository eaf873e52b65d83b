"""Gradient clipping + AdamW as three launches on CUDA (issue 7; kernels in ``kernels.adamw``).

The update is PyTorch's: the optimiser stays a ``torch.optim.AdamW`` and keeps its state in
PyTorch's own form (per parameter ``step``, ``exp_avg``, ``exp_avg_sq``), so checkpoints, resume
and ``set_capturable`` work as before and a run can switch between this path and
``clip_grad_norm_`` + ``optimizer.step()`` at any step. Only where the arithmetic runs changes:

- the Triton kernels reach every parameter, gradient and moment where it lies, through a table
  of addresses: built from the parameters and their state once (again whenever the state
  tensors change, e.g. after ``load_state_dict``), its gradient column filled per step (in a
  CUDA graph capture: recorded as a copy from a pinned host table that stays with the graph);
- they update in place, in chunks spread over the whole GPU: three launches in all. (A first
  version concatenated the gradients into one buffer: ``torch.cat`` of 1,462 tensors took 2.0
  ms on the H100, more than the whole PyTorch update.)

It needs what the graphed step needs anyway (``accel.graphed``): CUDA, fp32 parameters and a
capturable optimiser (the learning rate a device tensor). ``FusedClipAdamW.supports`` says
whether a given optimiser qualifies; :func:`reference_clip_adamw_` is the same update in torch
ops, the CPU tests' check of the arithmetic.
"""

from __future__ import annotations

import torch

from image_bench.accel.kernels import triton_module

# values of one parameter per program, and warps per program (H100, IMAGE-2's 1,462 tensors,
# scripts/gpu_adamw.py --sweep: 2048/8 0.70 ms, 4096/8 0.99, 8192/8 1.14, 16384/8 1.28)
CHUNK = 2048
NUM_WARPS = 8


def _storage_flat(t: torch.Tensor) -> torch.Tensor:
    """``t``'s values as a 1-D view in memory order (``t`` dense: contiguous or channels_last)."""
    return t.as_strided((t.numel(),), (1,), t.storage_offset())


def _dense(t: torch.Tensor) -> bool:
    return t.is_contiguous() or (t.dim() == 4
                                 and t.is_contiguous(memory_format=torch.channels_last))


def params_with_grads(optimizer: torch.optim.Optimizer) -> list[list[torch.Tensor]]:
    """Per group, the parameters that have a gradient (PyTorch's AdamW skips the others)."""
    return [[p for p in g["params"] if p.grad is not None] for g in optimizer.param_groups]


def init_state(optimizer: torch.optim.Optimizer, params: list[torch.Tensor]) -> None:
    """PyTorch's lazy AdamW state, in its fused/capturable form, made on the first step."""
    for p in params:
        state = optimizer.state[p]
        if not state:
            state["step"] = torch.zeros((), dtype=torch.float32, device=p.device)
            state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
            state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)


def reference_clip_adamw_(optimizer: torch.optim.AdamW, max_norm: float) -> torch.Tensor:
    """The fused update in torch ops, in the kernels' order (any device; the CPU tests' check of
    the arithmetic against ``clip_grad_norm_`` + ``torch.optim.AdamW``). Returns the norm."""
    per_group = params_with_grads(optimizer)
    params = [p for ps in per_group for p in ps]
    init_state(optimizer, params)
    flat_grad = torch.cat([_storage_flat(p.grad) for p in params])
    norm = flat_grad.square().sum().sqrt()
    clip = (max_norm / (norm + 1e-6)).clamp(max=1.0) if max_norm > 0 else torch.ones_like(norm)
    for group, ps in zip(optimizer.param_groups, per_group):
        beta1, beta2 = group["betas"]
        lr = group["lr"]
        for p in ps:
            state = optimizer.state[p]
            m, v, step = state["exp_avg"], state["exp_avg_sq"], state["step"]
            step += 1
            g = p.grad * clip
            p.data.mul_(1 - lr * group["weight_decay"])
            m.mul_(beta1).add_((1 - beta1) * g)
            v.mul_(beta2).add_((1 - beta2) * g * g)
            t = step.double()  # the count is float32; PyTorch's reference powers in double
            bias1 = 1 - beta1 ** t
            bias2_sqrt = (1 - beta2 ** t).sqrt()
            p.data.sub_((lr / bias1) * m / (v.sqrt() / bias2_sqrt + group["eps"]))
    return norm


class FusedClipAdamW:
    """``step(max_norm)`` = ``clip_grad_norm_(params, max_norm)`` then ``optimizer.step()``;
    returns the gradient norm before clipping (a 0-dim device tensor)."""

    def __init__(self, optimizer: torch.optim.AdamW):
        reason = self.unsupported(optimizer)
        if reason:
            raise ValueError(f"fused clip + AdamW: {reason}")
        self.optimizer = optimizer
        self._key: tuple | None = None
        self._static: dict | None = None
        self._spare: torch.Tensor | None = None  # pinned table for the next capture
        self._captured: list[torch.Tensor] = []  # pinned tables that captured graphs copy

    @staticmethod
    def unsupported(optimizer: torch.optim.Optimizer) -> str | None:
        """Why this optimiser cannot take the fused update (None: it can)."""
        if type(optimizer) is not torch.optim.AdamW:
            return f"needs torch.optim.AdamW, got {type(optimizer).__name__}"
        for group in optimizer.param_groups:
            if group.get("amsgrad") or group.get("maximize"):
                return "amsgrad and maximize are not implemented"
            if not (torch.is_tensor(group["lr"]) and group["lr"].is_cuda):
                return "the learning rate must be a CUDA tensor (set_capturable)"
            for p in group["params"]:
                if not p.is_cuda or p.dtype != torch.float32 or not _dense(p):
                    return "parameters must be dense fp32 CUDA tensors"
        return None

    @staticmethod
    def supports(optimizer: torch.optim.Optimizer) -> bool:
        return FusedClipAdamW.unsupported(optimizer) is None and triton_module("adamw") is not None

    def _state_tensors(self, p: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        state = self.optimizer.state[p]
        m, v, step = state["exp_avg"], state["exp_avg_sq"], state["step"]
        if m.stride() != p.stride() or v.stride() != p.stride():
            raise ValueError("AdamW moments in another layout than their parameter: call "
                             "engine.step.match_state_layout after loading a state")
        if not (step.device == p.device and step.dtype == torch.float32):
            # a state saved by a plain (CPU-step) AdamW: PyTorch's fused form, as its
            # load_state_dict makes for fused optimisers
            step = state["step"] = step.to(device=p.device, dtype=torch.float32)
        return m, v, step

    def _static_key(self, per_group) -> tuple:
        """What the tables depend on besides the gradients: which parameters, where their state
        lives, the groups' settings."""
        return tuple((tuple(g["betas"]), g["weight_decay"], g["eps"], g["lr"].data_ptr(),
                      tuple((p.data_ptr(), *(t.data_ptr() for t in self._state_tensors(p)))
                            for p in params))
                     for g, params in zip(self.optimizer.param_groups, per_group))

    def _build(self, per_group: list[list[torch.Tensor]], device: torch.device) -> dict:
        """The per-parameter table (host; its gradient column is filled per step), the chunk
        tables and the groups' settings (device)."""
        base = torch.empty(4, device=device)
        origin = base.data_ptr()
        rows, chunk_param, chunk_start, hyper, aligned = [], [], [], [], True
        for gi, (group, params) in enumerate(zip(self.optimizer.param_groups, per_group)):
            # fp32 values, held in float64 for the kernels' bias corrections
            hyper.append(torch.tensor([*group["betas"], group["weight_decay"], group["eps"]],
                                      dtype=torch.float32).tolist())
            for p in params:
                m, v, step = self._state_tensors(p)
                aligned &= all(t.data_ptr() % 16 == 0 for t in (p, m, v))
                for start in range(0, p.numel(), CHUNK):
                    chunk_param.append(len(rows))
                    chunk_start.append(start)
                # offsets in fp32 elements from ``base`` (kernels.adamw.COLUMNS); the
                # gradient's (column 1) is set per step
                rows.append([(t.data_ptr() - origin) // 4 for t in (p, p, m, v, step, group["lr"])]
                            + [p.numel(), gi])
        as_device = lambda xs: torch.tensor(xs, dtype=torch.int64, device=device)  # noqa: E731
        return {"base": base, "rows": torch.tensor(rows, dtype=torch.int64), "aligned": aligned,
                "hyper": torch.tensor(hyper, dtype=torch.float64, device=device),
                "chunk_param": as_device(chunk_param), "chunk_start": as_device(chunk_start),
                "partials": torch.empty(len(chunk_param), device=device), "chunk": CHUNK}

    def _device_table(self, grads: list[torch.Tensor]) -> tuple[torch.Tensor, bool]:
        """The table with this step's gradient offsets, on the device, and whether every
        address is 16-byte aligned. In a CUDA graph capture the copy is recorded from a pinned
        host table that stays alive and unchanged with the graph: each replay copies the
        capture's gradient addresses again, which are the replay's (the graph's memory pool)."""
        static = self._static
        origin = static["base"].data_ptr()
        rows = static["rows"]
        rows[:, 1] = torch.tensor([(g.data_ptr() - origin) // 4 for g in grads])
        aligned = static["aligned"] and all(g.data_ptr() % 16 == 0 for g in grads)
        device = static["base"].device
        if not torch.cuda.is_current_stream_capturing():
            # a pinned buffer for a later capture, allocated here: not during one
            if self._spare is None or self._spare.shape != rows.shape:
                self._spare = torch.empty(rows.shape, dtype=torch.int64, pin_memory=True)
            return rows.to(device), aligned
        if self._spare is None or self._spare.shape != rows.shape:
            raise RuntimeError("fused AdamW: no pinned table ready for this capture; an eager "
                               "step must come first (accel.graphed.WARMUP_STEPS)")
        pinned, self._spare = self._spare, None
        pinned.copy_(rows)
        self._captured.append(pinned)
        return pinned.to(device, non_blocking=True), aligned

    def step(self, max_norm: float) -> torch.Tensor:
        per_group = params_with_grads(self.optimizer)
        params = [p for ps in per_group for p in ps]
        if not params:
            raise RuntimeError("no parameter has a gradient: nothing to update")
        init_state(self.optimizer, params)
        key = self._static_key(per_group)
        if key != self._key:
            if torch.cuda.is_current_stream_capturing():
                raise RuntimeError("fused AdamW: parameters or state changed during a CUDA "
                                   "graph capture; an eager step must come first")
            self._static, self._key = self._build(per_group, params[0].device), key
        for p in params:
            if p.grad.stride() != p.stride():  # the kernels walk both in the parameter's order
                p.grad = torch.empty_like(p).copy_(p.grad)
        grads = [p.grad for p in params]
        table, aligned = self._device_table(grads)
        static = self._static
        norm_clip = torch.empty(2, device=table.device)
        triton_module("adamw").clip_adamw_(
            static["base"], table, static["hyper"], static["chunk_param"], static["chunk_start"],
            static["partials"], norm_clip, max_norm, aligned, static["chunk"], NUM_WARPS)
        return norm_clip[0]
