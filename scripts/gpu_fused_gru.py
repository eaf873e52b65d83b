"""GPU check and benchmark of the fused Triton BiGRU (issue 7, items 1, 2 and the GRU part of 4).

Run on the device machine from the repository root:

    PYTHONPATH=. python3 scripts/gpu_fused_gru.py            # everything, results under $OUT
    PYTHONPATH=. python3 scripts/gpu_fused_gru.py --only check,bench

Parts (``--only`` picks some): ``check`` (fused vs nn.GRU in float64 on the CPU: outputs and
every gradient, SRB shapes and odd ones, fp32/bf16/fp16), ``sweep`` (kernel launch configs),
``bench`` (fused vs cuDNN, forward+backward, median of triton.testing.do_bench), ``srb`` (one
SRB forward+backward at batch 256 with and without the fused path, top-10 profiler kernels,
torch._dynamo.explain, a CUDA-graph replay at batch 1).

``--smoke`` runs the same code on the CPU through the Triton interpreter with tiny shapes
(slow; catches script errors without a GPU): TRITON_INTERPRET=1 must be set by the caller.
"""

from __future__ import annotations

import argparse
import csv
import os
import statistics
import sys
import time
from contextlib import nullcontext
from functools import partial
from pathlib import Path

import torch
from torch import nn

from image_bench.accel import gru as dispatch
from image_bench.accel.kernels import bigru
from image_bench.accel.kernels import fused_gru as fg
from image_bench.models.srb import SRB

OUT = Path(os.environ.get("OUT", "gpu_out"))
FP32_TOL, LOWP_TOL = 1e-4, 1e-2
MODES = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}
LOG_LINES: list[str] = []


def log(line: str = "") -> None:
    print(line, flush=True)
    LOG_LINES.append(line)


def write_csv(name: str, rows: list[dict]) -> None:
    if not rows:
        return
    keys = list(dict.fromkeys(k for row in rows for k in row))
    with open(OUT / name, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=keys)
        writer.writeheader()
        writer.writerows(rows)


def bench(fn, smoke: bool) -> float:
    """Median milliseconds of fn (device events through do_bench on the GPU)."""
    if smoke:
        times = []
        for _ in range(3):
            start = time.perf_counter()
            fn()
            times.append((time.perf_counter() - start) * 1e3)
        return statistics.median(times)
    import triton.testing

    return triton.testing.do_bench(fn, warmup=50, rep=300, return_mode="median")


def amp_ctx(device, amp):
    """Autocast to ``amp`` (bf16/fp16), or nothing for float32."""
    return torch.autocast(device.type, dtype=amp) if amp is not None else nullcontext()


def make_gru(inp, hidden, seed):
    torch.manual_seed(seed)
    return nn.GRU(inp, hidden, bidirectional=True, batch_first=True)


def rel_errors(a: torch.Tensor, b: torch.Tensor) -> tuple[float, float]:
    """(||a-b|| / ||b||, max|a-b| / max|b|), absolute when b is all zeros; NaN stays NaN."""
    a, b = a.detach().double().cpu(), b.detach().double().cpu()
    diff = a - b
    norm, peak = b.norm().item(), b.abs().max().item()
    if not torch.isfinite(a).all():
        return float("nan"), float("nan")
    return ((diff.norm().item() / norm) if norm > 0 else diff.norm().item(),
            (diff.abs().max().item() / peak) if peak > 0 else diff.abs().max().item())


# ------------------------------------------------------------------------------------ check


def check(device, smoke: bool) -> bool:
    """Outputs and all gradients against nn.GRU in float64 (on the CPU)."""
    fg.POISON = True  # every output starts as NaN: an unwritten element fails the check
    if smoke:
        cases = [(1, 1, 24, 20), (5, 3, 24, 20), (17, 2, 16, 16)]
    else:
        cases = [(4096, 64, 64, 32), (16384, 16, 64, 32),  # the SRB's two shapes at batch 256
                 (1, 1, 64, 32), (1, 64, 64, 32), (37, 1, 64, 32), (1000, 13, 64, 32),
                 (33, 5, 24, 20), (50, 9, 64, 64), (19, 7, 16, 16), (300, 40, 96, 48)]
    rows, ok = [], True
    names = ["out", "x"]
    for case_index, (n_seq, steps, inp, hidden) in enumerate(cases):
        gru = make_gru(inp, hidden, case_index).to(device)
        ref_gru = make_gru(inp, hidden, case_index).double()
        ref_gru.load_state_dict({k: v.double().cpu() for k, v in gru.state_dict().items()})
        torch.manual_seed(100 + case_index)
        x64 = torch.randn(n_seq, steps, inp, dtype=torch.float64, requires_grad=True)
        ref = ref_gru(x64)[0]
        grad_out = torch.randn_like(ref)
        ref_grads = torch.autograd.grad(ref, [x64, *ref_gru.parameters()], grad_out)
        param_names = [name for name, _ in gru.named_parameters()]
        for mode, amp in MODES.items():
            if smoke and mode == "fp16":
                continue
            x = x64.detach().float().to(device).requires_grad_()
            results = []
            for _ in range(2):  # twice: the same inputs must give the same bits (no races)
                with amp_ctx(device, amp):
                    out = fg.fused_bigru(gru, x)
                grads = torch.autograd.grad(out, [x, *gru.parameters()],
                                            grad_out.to(device=device, dtype=out.dtype))
                results.append((out, *grads))
            repeatable = all(torch.equal(a, b) for a, b in zip(*results))
            tol = FP32_TOL if mode == "fp32" else LOWP_TOL
            row = {"N": n_seq, "T": steps, "I": inp, "H": hidden, "mode": mode,
                   "out_dtype": str(results[0][0].dtype).replace("torch.", ""),
                   "repeatable": repeatable}
            worst = 0.0
            for name, got, want in zip(names[:1] + names[1:] + param_names, results[0],
                                       (ref, *ref_grads)):
                norm_err, max_err = rel_errors(got, want)
                row[name] = norm_err
                row[name + "_max"] = max_err
                worst = max(worst, norm_err) if norm_err == norm_err else float("inf")
            row["worst"] = worst
            row["pass"] = worst < tol and repeatable
            ok &= row["pass"]
            rows.append(row)
            log(f"check N={n_seq:5d} T={steps:2d} I={inp:2d} H={hidden:2d} {mode}: worst rel "
                f"{worst:.2e} (tol {tol:g}) repeatable={repeatable} "
                f"{'PASS' if row['pass'] else 'FAIL'}")
        if not smoke and (n_seq, steps) in ((4096, 64), (16384, 16)):
            # context: cuDNN's own error under bf16 autocast against the same reference
            x = x64.detach().float().to(device).requires_grad_()
            with torch.autocast("cuda", dtype=torch.bfloat16):
                out = gru(x)[0]
            grads = torch.autograd.grad(out, [x, *gru.parameters()],
                                        grad_out.to(device=device, dtype=out.dtype))
            errs = [rel_errors(g, w)[0] for g, w in zip((out, *grads), (ref, *ref_grads))]
            log(f"  cuDNN bf16 autocast, same reference: worst rel {max(errs):.2e}")
            rows.append({"N": n_seq, "T": steps, "I": inp, "H": hidden, "mode": "cudnn-bf16",
                         "worst": max(errs)})
    fg.POISON = False
    write_csv("correctness.csv", rows)
    cols = ["out", "x"] + param_names
    log("\nmax over modes of ||err||/||ref|| per tensor (fp32 | bf16 | fp16):")
    log("N,T,I,H | " + " | ".join(cols))
    for n_seq, steps, inp, hidden in cases:
        mine = [r for r in rows if (r["N"], r["T"], r["I"], r["H"]) == (n_seq, steps, inp, hidden)
                and r["mode"] in MODES]
        cells = []
        for col in cols:
            cells.append("/".join(f"{r[col]:.0e}" for r in mine))
        log(f"{n_seq},{steps},{inp},{hidden} | " + " | ".join(cells))
    log(f"CHECK {'PASSED' if ok else 'FAILED'}")
    return ok


# ------------------------------------------------------------------------------------ sweep

SWEEP_CONFIGS = [(16, 1), (16, 2), (16, 4), (32, 1), (32, 2), (32, 4), (64, 4)]
PRECISIONS = {"fp32": ["tf32x3", "ieee"], "bf16": ["tf32"]}


def srb_shapes(smoke: bool):
    return [(8, 8), (16, 2)] if smoke else [(4096, 64), (16384, 16)]


def sweep(device, smoke: bool) -> dict:
    """Time each kernel alone under each launch config; returns the best per (shape, mode)."""
    rows, best = [], {}
    hidden, inp = 32, 64
    configs = SWEEP_CONFIGS[:2] if smoke else SWEEP_CONFIGS
    for n_seq, steps in srb_shapes(smoke):
        gru = make_gru(inp, hidden, 0).to(device)
        packed = [p.detach() for p in bigru.pack_params(gru)]
        for mode, precisions in PRECISIONS.items():
            dtype = torch.float32 if mode == "fp32" else torch.bfloat16
            torch.manual_seed(1)
            x = torch.randn(n_seq, steps, inp, device=device, dtype=dtype)
            gi = (x.reshape(n_seq * steps, inp) @ packed[0].to(dtype).t()).view(n_seq, steps, -1)
            grad_out = torch.randn(n_seq, steps, 2 * hidden, device=device, dtype=dtype)
            fg.OVERRIDE.clear()
            out, hs = fg.triton_forward(gi, packed[1], packed[2], packed[3], dtype, True)
            hs = out if hs is None else hs
            for kind in ("fwd", "bwd"):
                timed = []
                for precision in precisions[:1] if smoke else precisions:
                    for block_n, warps in configs:
                        cfg = fg.KernelConfig(block_n, warps, precision)
                        fg.OVERRIDE[kind] = cfg
                        if kind == "fwd":
                            fn = partial(fg.triton_forward, gi, *packed[1:], dtype, True)
                        else:
                            fn = partial(fg.triton_backward, grad_out, gi, hs, *packed[1:], dtype)
                        try:
                            ms = bench(fn, smoke)
                        except Exception as err:  # a config that does not compile
                            log(f"sweep {kind} {cfg}: {type(err).__name__}: {err}"[:300])
                            continue
                        timed.append((ms, cfg))
                        rows.append({"N": n_seq, "T": steps, "mode": mode, "kind": kind,
                                     "block_n": block_n, "num_warps": warps,
                                     "precision": precision, "ms": ms})
                fg.OVERRIDE.pop(kind, None)
                timed.sort(key=lambda item: item[0])
                best[(n_seq, steps, mode, kind)] = timed[0][1]
                default = fg.pick_config(kind, n_seq, hidden, dtype)
                default_ms = next((ms for ms, c in timed if c == default), float("nan"))
                log(f"sweep N={n_seq} T={steps} {mode} {kind}: best {timed[0][1]} "
                    f"{timed[0][0]:.3f} ms; default {default} {default_ms:.3f} ms; "
                    "top3 " + ", ".join(f"{c.block_n}/{c.num_warps}/{c.precision}={ms:.3f}"
                                        for ms, c in timed[:3]))
    write_csv("sweep.csv", rows)
    return best


# ------------------------------------------------------------------------------------ bench


def fwd_bwd(gru, x, grad_out, fused: bool, amp):
    def fn():
        with amp_ctx(x.device, amp):
            out = fg.fused_bigru(gru, x) if fused else gru(x)[0]
        out.backward(grad_out)
    return fn


def fwd_only(gru, x, fused: bool, amp):
    def fn():
        with torch.no_grad(), amp_ctx(x.device, amp):
            return fg.fused_bigru(gru, x) if fused else gru(x)[0]
    return fn


PROFILES: list[str] = []


def profiled(fn, calls: int):
    """Profiler events (key averages) of ``calls`` calls of ``fn``, after one warm-up call."""
    from torch.profiler import ProfilerActivity, profile

    fn()
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(calls):
            fn()
        torch.cuda.synchronize()
    return prof.key_averages()


def gru_kernels(fn, calls: int = 10) -> tuple[str, float]:
    """Top kernels of ``calls`` calls and the GPU time of all kernels per call (ms)."""
    events = profiled(fn, calls)
    busy = sum(getattr(e, "self_device_time_total", 0) or getattr(e, "self_cuda_time_total", 0)
               for e in events) / 1e3 / calls
    return table_of(events, 8), busy


def table_of(events, rows: int) -> str:
    for key in ("self_device_time_total", "self_cuda_time_total", "device_time_total"):
        try:
            return events.table(sort_by=key, row_limit=rows)
        except Exception:  # the key's name changed across torch versions
            continue
    return events.table(row_limit=rows)


def host_ms(fn, calls: int = 20) -> float:
    """Host time to enqueue one call (ms): above the GPU time, the call is host-bound."""
    fn()
    torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(calls):
        fn()
    elapsed = time.perf_counter() - start
    torch.cuda.synchronize()
    return elapsed * 1e3 / calls


def graphed_ms(gru, x, grad_out) -> float:
    """Fused fwd+bwd captured as CUDA graphs (bf16 input, no autocast): GPU time, no host."""

    class Wrapped(nn.Module):
        def __init__(self):
            super().__init__()
            self.gru = gru

        def forward(self, inp):
            return fg.fused_bigru(self.gru, inp)

    try:
        x16 = x.detach().to(torch.bfloat16).requires_grad_()
        graphed = torch.cuda.make_graphed_callables(Wrapped(), (x16,))
        g16 = grad_out.to(torch.bfloat16)

        def fn():
            graphed(x16).backward(g16)
        return bench(fn, False)
    except Exception as err:
        log(f"graphed fused GRU failed: {type(err).__name__}: {err}"[:500])
        return float("nan")


def bench_gru(device, smoke: bool, best: dict) -> list[dict]:
    rows = []
    hidden, inp = 32, 64
    for n_seq, steps in srb_shapes(smoke):
        gru = make_gru(inp, hidden, 0).to(device)
        for mode in ("bf16", "fp32"):
            amp = MODES[mode]
            torch.manual_seed(2)
            x = torch.randn(n_seq, steps, inp, device=device, requires_grad=True)
            grad_out = torch.randn(n_seq, steps, 2 * hidden, device=device,
                                   dtype=amp or torch.float32)
            row = {"N": n_seq, "T": steps, "mode": mode}
            if not smoke:
                row["cudnn_fwd_bwd_ms"] = bench(fwd_bwd(gru, x, grad_out, False, amp), smoke)
                row["cudnn_fwd_ms"] = bench(fwd_only(gru, x, False, amp), smoke)
            fg.OVERRIDE.clear()
            row["fused_fwd_bwd_ms"] = bench(fwd_bwd(gru, x, grad_out, True, amp), smoke)
            row["fused_fwd_ms"] = bench(fwd_only(gru, x, True, amp), smoke)
            for kind in ("fwd", "bwd"):
                if (n_seq, steps, mode, kind) in best:
                    fg.OVERRIDE[kind] = best[(n_seq, steps, mode, kind)]
            if fg.OVERRIDE:
                row["fused_best_cfg_fwd_bwd_ms"] = bench(fwd_bwd(gru, x, grad_out, True, amp),
                                                         smoke)
            fg.OVERRIDE.clear()
            if not smoke:
                row["speedup"] = row["cudnn_fwd_bwd_ms"] / row["fused_fwd_bwd_ms"]
            if not smoke:
                row["cudnn_host_ms"] = host_ms(fwd_bwd(gru, x, grad_out, False, amp))
                row["fused_host_ms"] = host_ms(fwd_bwd(gru, x, grad_out, True, amp))
            if not smoke and mode == "bf16":
                row["fused_graphed_fwd_bwd_ms"] = graphed_ms(gru, x, grad_out)
                for fused in (False, True):
                    table, busy = gru_kernels(fwd_bwd(gru, x, grad_out, fused, amp))
                    row["fused_gpu_busy_ms" if fused else "cudnn_gpu_busy_ms"] = busy
                    PROFILES.append(f"GRU alone fwd+bwd N={n_seq} T={steps} bf16, "
                                    f"{'fused' if fused else 'cuDNN'}: {busy:.3f} ms of kernels "
                                    f"per call\n{table}")
            rows.append(row)
            log("bench " + ", ".join(f"{k}={v:.3f}" if isinstance(v, float) else f"{k}={v}"
                                     for k, v in row.items()))
    write_csv("bench.csv", rows)
    if PROFILES:
        (OUT / "profile_gru.txt").write_text("\n\n".join(PROFILES))
        log("\n" + "\n\n".join(PROFILES))
    return rows


# ------------------------------------------------------------------------------------ srb


def kernel_table(step, steps: int = 5) -> str:
    return table_of(profiled(step, steps), 10)


def srb_part(device, smoke: bool) -> list[dict]:
    rows = []
    batch = 2 if smoke else 256
    torch.manual_seed(3)
    block = SRB(64).to(device)
    x = torch.randn(batch, 64, 16, 64, device=device)
    x_eval = torch.randn(1, 64, 16, 64, device=device)

    def train_step(amp):
        def fn():
            with amp_ctx(device, amp):
                loss = block(x).float().square().mean()
            loss.backward()
        return fn

    # same function on both paths (fp32, eval statistics so BN is deterministic)
    block.eval()
    tf32 = torch.backends.cudnn.allow_tf32
    torch.backends.cudnn.allow_tf32 = False  # cuDNN's float32 RNN uses TF32 by default
    with torch.no_grad():
        dispatch.set_fused_gru(False)
        y_ref = block(x[:8])
        dispatch.set_fused_gru(True)
        y_fused = block(x[:8])
    torch.backends.cudnn.allow_tf32 = tf32
    log(f"srb eval fp32 fused vs nn.GRU (cuDNN without TF32): rel "
        f"{rel_errors(y_fused, y_ref)[0]:.2e}")
    block.train()

    for mode in ("bf16", "fp32"):
        amp = MODES[mode]
        row = {"what": f"SRB(64) fwd+bwd batch {batch} {mode}"}
        for fused in (False, True):
            dispatch.set_fused_gru(fused)
            row["fused_ms" if fused else "cudnn_ms"] = bench(train_step(amp), smoke)
        row["speedup"] = row["cudnn_ms"] / row["fused_ms"]
        rows.append(row)
        log("srb " + ", ".join(f"{k}={v:.3f}" if isinstance(v, float) else f"{k}={v}"
                               for k, v in row.items()))
    dispatch.set_fused_gru(True)
    if smoke:
        return rows

    tables = []
    for fused in (False, True):
        dispatch.set_fused_gru(fused)
        table = kernel_table(train_step(torch.bfloat16))
        tables.append(f"top-10 kernels, SRB fwd+bwd batch 256 bf16, "
                      f"{'fused' if fused else 'cuDNN'} GRU (5 steps):\n{table}")
        log("\n" + tables[-1])
    (OUT / "profile_srb.txt").write_text("\n\n".join(tables))
    dispatch.set_fused_gru(True)

    # torch.compile readiness: graph breaks of the SRB forward with the fused path
    import torch._dynamo as dynamo

    explained = []
    for allow_rnn in (False, True):  # dynamo refuses nn.GRU modules unless allow_rnn is set
        try:
            dynamo.reset()
            with dynamo.config.patch(allow_rnn=allow_rnn):
                explain = dynamo.explain(block)(x[:4])
            text = (f"allow_rnn={allow_rnn}: graphs={explain.graph_count} graph_breaks="
                    f"{explain.graph_break_count} ops={explain.op_count}\nbreak reasons: "
                    + "; ".join(str(r.reason).splitlines()[0] for r in explain.break_reasons))
            explained.append(text + "\n\n" + str(explain))
            log("dynamo explain (SRB forward, fused GRU) " + text[:1200])
        except Exception as err:
            log(f"dynamo explain allow_rnn={allow_rnn} failed: {type(err).__name__}: {err}"[:800])
    dynamo.reset()
    (OUT / "dynamo_explain.txt").write_text("\n\n".join(explained))

    # batch-1 inference: eager vs CUDA-graph replay, fused GRU inside the graph
    block.eval()
    for fused in (False, True):
        dispatch.set_fused_gru(fused)
        with torch.no_grad():
            eager_ms = bench(lambda: block(x_eval), smoke)
            side = torch.cuda.Stream()
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side):
                for _ in range(3):
                    block(x_eval)
            torch.cuda.current_stream().wait_stream(side)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph):
                y_graph = block(x_eval)
            graph.replay()
            torch.cuda.synchronize()
            err = rel_errors(y_graph, block(x_eval))[0]
            graph_ms = bench(graph.replay, smoke)
        row = {"what": f"SRB(64) eval batch 1 fp32 {'fused' if fused else 'cuDNN'}",
               "eager_ms": eager_ms, "graph_ms": graph_ms, "graph_vs_eager_rel": err}
        rows.append(row)
        log("srb " + ", ".join(f"{k}={v:.4f}" if isinstance(v, float) else f"{k}={v}"
                               for k, v in row.items()))
    dispatch.set_fused_gru(True)
    write_csv("srb.csv", rows)
    return rows


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--only", default="check,sweep,bench,srb,api")
    parser.add_argument("--smoke", action="store_true")
    args = parser.parse_args()
    parts = set(args.only.split(","))
    OUT.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(os.cpu_count() or 1)
    if args.smoke:
        device = torch.device("cpu")
    else:
        if not torch.cuda.is_available():
            log("no CUDA device")
            return 2
        device = torch.device("cuda")
        import triton

        props = torch.cuda.get_device_properties(0)
        log(f"torch {torch.__version__}, triton {triton.__version__}, cuDNN "
            f"{torch.backends.cudnn.version()}, {props.name}, {props.multi_processor_count} SMs; "
            f"cudnn.allow_tf32={torch.backends.cudnn.allow_tf32}, "
            f"matmul.allow_tf32={torch.backends.cuda.matmul.allow_tf32}")
    start = time.time()
    ok = True
    best = {}
    try:
        if "check" in parts:
            ok &= check(device, args.smoke)
        if "sweep" in parts:
            best = sweep(device, args.smoke)
        if "bench" in parts:
            bench_gru(device, args.smoke, best)
        if "srb" in parts:
            srb_part(device, args.smoke)
        if "api" in parts and not args.smoke:  # the helper that `image-bench bench` calls
            from image_bench.accel.kernels.gru_bench import bench_srb_grus

            for row in bench_srb_grus():
                log(f"gru_bench.bench_srb_grus: {row}")
    finally:
        log(f"total {time.time() - start:.0f} s")
        (OUT / "log.txt").write_text("\n".join(LOG_LINES) + "\n")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
