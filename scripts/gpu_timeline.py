"""Where the wall time of a graphed training step goes, stream by stream (issue 7).

    PYTHONPATH=. python3 scripts/gpu_timeline.py [--model image-2] [--variants base] [--out DIR]

The kernel sums of ``gpu_explore`` add up both streams of IMAGE's step (the SR model runs on a
side stream) and so do not say what bounds the wall time. This profiles a few replays of the
bench's optimized training step (``gpu_explore.use_variant`` variants allowed), reads the trace's
kernel intervals and reports, per replay: the wall span; per stream its kernels, busy time and
idle time; the time no stream runs anything (bubbles: launch gaps inside the graph, and
cross-stream waits that leave the GPU empty); and the main stream's idle time while the side
stream works (the recognizer waiting for the SR branch). Results to stdout and
DIR/timeline_<variant>.json.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile

import image_bench.engine.bench as bench
from image_bench.accel.optimize import configure_cuda
from scripts.gpu_explore import use_variant


def merged(intervals: list[tuple[float, float]]) -> list[tuple[float, float]]:
    out: list[list[float]] = []
    for a, b in sorted(intervals):
        if out and a <= out[-1][1]:
            out[-1][1] = max(out[-1][1], b)
        else:
            out.append([a, b])
    return [(a, b) for a, b in out]


def length(intervals) -> float:
    return sum(b - a for a, b in intervals)


def minus(a_list, b_list) -> list[tuple[float, float]]:
    """Parts of the merged intervals ``a_list`` not covered by the merged ``b_list``."""
    out, j = [], 0
    for a, b in a_list:
        cur = a
        while j < len(b_list) and b_list[j][1] <= cur:
            j += 1
        k = j
        while k < len(b_list) and b_list[k][0] < b:
            if b_list[k][0] > cur:
                out.append((cur, b_list[k][0]))
            cur = max(cur, b_list[k][1])
            k += 1
        if cur < b:
            out.append((cur, b))
    return out


def analyse(kernels: list[dict], replays: int) -> dict:
    """``kernels``: trace events with ts, dur (us) and args.stream."""
    by_stream: dict[int, list[tuple[float, float]]] = {}
    for k in kernels:
        by_stream.setdefault(k["args"].get("stream", -1), []).append(
            (k["ts"], k["ts"] + k["dur"]))
    start = min(a for iv in by_stream.values() for a, _ in iv)
    end = max(b for iv in by_stream.values() for _, b in iv)
    span = [(start, end)]
    busy_all = merged([x for iv in by_stream.values() for x in iv])
    streams = sorted(by_stream, key=lambda s: -len(by_stream[s]))
    main = streams[0]
    out = {"wall_ms": (end - start) / 1e3 / replays,
           "gpu_busy_ms": length(busy_all) / 1e3 / replays,
           "no_kernel_ms": length(minus(span, busy_all)) / 1e3 / replays,
           "kernel_sum_ms": sum(length(iv) for iv in by_stream.values()) / 1e3 / replays,
           "streams": {}}
    for s in streams:
        busy = merged(by_stream[s])
        idle = minus(span, busy)
        others = merged([x for t in streams if t != s for x in by_stream[t]])
        waiting = minus(idle, minus(idle, others)) if others else []
        gaps = [b - a for a, b in idle]
        out["streams"][str(s)] = {
            "role": "main" if s == main else "side",
            "kernels": len(by_stream[s]) / replays,
            "busy_ms": length(busy) / 1e3 / replays,
            "idle_ms": length(idle) / 1e3 / replays,
            "idle_while_other_busy_ms": length(waiting) / 1e3 / replays,
            "gaps_under_5us_ms": sum(g for g in gaps if g < 5) / 1e3 / replays,
            "gaps_5_to_50us_ms": sum(g for g in gaps if 5 <= g < 50) / 1e3 / replays,
            "gaps_over_50us_ms": sum(g for g in gaps if g >= 50) / 1e3 / replays,
            "gap_count": len(gaps) / replays}
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="image-2")
    ap.add_argument("--variants", default="base")
    ap.add_argument("--replays", type=int, default=3)
    ap.add_argument("--out", default="runs/timeline")
    args = ap.parse_args()
    configure_cuda()
    device = torch.device("cuda")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for variant in args.variants.split(","):
        use_variant(variant)
        stepper, data, levers, _ = bench._training_setup(args.model, device, True, 256, None,
                                                          True, True)
        for _ in range(6):  # warm-up, capture, two replays
            stepper(data)
        torch.cuda.synchronize()
        with profile(activities=[ProfilerActivity.CUDA]) as prof:
            for _ in range(args.replays):
                stepper(data)
            torch.cuda.synchronize()
        with tempfile.NamedTemporaryFile(suffix=".json") as f:
            prof.export_chrome_trace(f.name)
            trace = json.loads(Path(f.name).read_text())
        kernels = [e for e in trace["traceEvents"]
                   if e.get("cat") == "kernel" and e.get("ph") == "X"]
        result = {"variant": variant, "levers": levers, **analyse(kernels, args.replays)}
        (out / f"timeline_{variant}.json").write_text(json.dumps(result, indent=1))
        print(f"{args.model} {variant}: wall {result['wall_ms']:.2f} ms per step, GPU busy "
              f"{result['gpu_busy_ms']:.2f}, no kernel running {result['no_kernel_ms']:.2f}, "
              f"kernel sum {result['kernel_sum_ms']:.2f}", flush=True)
        for s, r in result["streams"].items():
            print(f"  stream {s} ({r['role']}): {r['kernels']:.0f} kernels, busy "
                  f"{r['busy_ms']:.2f} ms, idle {r['idle_ms']:.2f} (while the other works "
                  f"{r['idle_while_other_busy_ms']:.2f}); gaps <5us {r['gaps_under_5us_ms']:.2f}"
                  f" ms, 5-50us {r['gaps_5_to_50us_ms']:.2f}, >50us "
                  f"{r['gaps_over_50us_ms']:.2f} ({r['gap_count']:.0f} gaps)", flush=True)
        del stepper
        torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
