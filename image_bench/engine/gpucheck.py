"""End-to-end check of the engine on a GPU, on a freshly rendered stand-in (no LMDB needed).

    python -m image_bench.engine.gpucheck OUT_DIR [--synth N] [--steps-crnn N] [--steps-image N]

Renders synth and TextZoom-like pairs with the data layer's own sample generator
(``image_bench.data.make.make_sample``) on every core, trains ``crnn`` on synth ("S") and
``image-1`` on the TextZoom-like pairs, evaluates both on easy/medium/hard test splits with the
engine's evaluator and writes everything (logs, samples/s, metrics) under OUT_DIR. Sizes are
small on purpose: this checks the machinery and measures speed, it is not a reproduction.
"""

from __future__ import annotations

import argparse
import json
import time
from multiprocessing import Pool
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch


def _render(args):
    from image_bench.data.lmdb_format import decode_image
    from image_bench.data.make import make_sample

    name, split, start, stop = args
    out = []
    for i in range(start, stop):
        label, hr, lr = make_sample(name, split, i, 0)
        out.append((label, decode_image(hr, (128, 32)), decode_image(lr, (64, 16))))
    return out


def render_set(name: str, split: str, n: int, pool: Pool) -> SimpleNamespace:
    chunks = [(name, split, s, min(s + 256, n)) for s in range(0, n, 256)]
    rows = [r for part in pool.map(_render, chunks) for r in part]
    hr = torch.from_numpy(np.stack([r[1] for r in rows])).permute(0, 3, 1, 2).contiguous()
    lr = torch.from_numpy(np.stack([r[2] for r in rows])).permute(0, 3, 1, 2).contiguous()
    return SimpleNamespace(lr=lr, hr=hr, labels=[r[0] for r in rows],
                           identity={"name": name, "split": split, "source": "stand-in (gpucheck)",
                                     "count": n})


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("out", type=Path)
    ap.add_argument("--synth", type=int, default=40_000)
    ap.add_argument("--textzoom", type=int, default=12_000)
    ap.add_argument("--test", type=int, default=500)
    ap.add_argument("--steps-crnn", type=int, default=600)
    ap.add_argument("--steps-image", type=int, default=300)
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)

    import baselines.crnn  # noqa: F401 - registers crnn
    import image_bench.models.image  # noqa: F401 - registers image-1/2/3
    from image_bench.engine.checkpoint import load_model
    from image_bench.engine.evaluate import evaluate
    from image_bench.engine.train import train_run
    from image_bench.experiments.config import RunConfig

    dev = "cuda" if torch.cuda.is_available() else "cpu"
    summary: dict = {"device": dev, "torch": torch.__version__}
    if dev == "cuda":
        summary["device"] = torch.cuda.get_device_name(0)
    t = time.time()
    with Pool() as pool:
        synth = {"train": render_set("synth", "train", args.synth, pool),
                 "val": render_set("synth", "val", 1000, pool)}
        tz = {"train": render_set("textzoom", "train", args.textzoom, pool),
              "val": render_set("textzoom", "val", 500, pool)}
        tests = {s: render_set("textzoom", f"test/{s}", args.test, pool)
                 for s in ("easy", "medium", "hard")}
    summary["render_s"] = time.time() - t
    print(f"rendered in {summary['render_s']:.1f} s", flush=True)

    runs = [("crnn", synth, RunConfig("crnn", "synth", "quick", args.steps_crnn, 256)),
            ("image-1", tz, RunConfig("image-1", "textzoom", "quick", args.steps_image, 64))]
    for name, data, cfg in runs:
        run_dir = args.out / name
        t = time.time()
        best = train_run(cfg, run_dir, data=data, progress=False,
                         checkpoint_every=max(cfg.steps // 2, 1), validate_every=cfg.steps // 3)
        wall = time.time() - t
        log = [json.loads(x) for x in (run_dir / "log.jsonl").open()]
        rates = [r["samples_per_s"] for r in log if "samples_per_s" in r]
        model = load_model(cfg, best, device=dev)
        t = time.time()
        res = evaluate(model, tests, batch_size=256, device=dev)
        for split in res["splits"].values():
            split.pop("psnr_per_image")
            split.pop("ssim_per_image")
        summary[name] = {"steps": cfg.steps, "batch": cfg.batch_size, "train_wall_s": wall,
                         "samples_per_s_median": float(np.median(rates[1:] or rates)),
                         "eval_s": time.time() - t, "val": [r for r in log if r["event"] == "val"],
                         "test": res["splits"], "average": res["average"]}
        brief = {k: v for k, v in summary[name].items() if k != "test"}
        print(json.dumps(brief, default=str)[:2000], flush=True)
        (args.out / "summary.json").write_text(json.dumps(summary, indent=1, default=str))


if __name__ == "__main__":
    main()
