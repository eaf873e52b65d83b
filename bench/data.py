"""Benchmark and calibrate the stand-in data generator.

    python bench/data.py speed [--n 3000]          pairs/s on one core (wall and CPU time)
    python bench/data.py quality [--n N]           bicubic LR vs HR PSNR/SSIM per test split
    python bench/data.py ic15 --real LMDB [--max-height 16]
                                                   the stand-in IC15-352 beside real word crops

``quality`` generates each stand-in test split exactly as ``image-bench data make`` does (same
seeds, same encoding), decodes it as the loader does (PIL BICUBIC to 16x64 / 32x128), upsamples
the LR with bicubic interpolation to 32x128 and scores it against the HR in TextZoom's convention
(image_bench.metrics.image_quality: RGB in [0,1], PSNR from the batch MSE, Gaussian SSIM),
averaging per-batch values over batches of 50 (TATT's test batch). The overall figure weights the
splits by size, as TextZoom's published 20.35 dB / 0.6961 does.

``ic15`` sets the stand-in IC15-352's LR crops (generated as ``data make`` does) beside real crops
in the STR benchmark format (a *training* set, such as ../shared/data/real/ic15-train; never a
test set), those of at most ``--max-height`` pixels when given (IC15-352 holds low-resolution
crops): native size, label length, and at the models' 64x16 input (the loader's bicubic resize)
the sharpness (mean |4-neighbour Laplacian| of the grey image in [0,1]) and the contrast (its
standard deviation). Medians and 10th/90th percentiles.
"""

from __future__ import annotations

import argparse
import io
import json
import multiprocessing as mp
import time

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from image_bench.data.lmdb_format import HR_SIZE, LR_SIZE, decode_image
from image_bench.data.make import _renderer, make_sample
from image_bench.data.render import warm_glyphs
from image_bench.profiles import get_profile

TEXTZOOM_BICUBIC = {"easy": (22.35, 0.7884), "medium": (18.98, 0.6254), "hard": (19.39, 0.6592),
                    "overall": (20.35, 0.6961)}


def speed(n: int, name: str, split: str, steady: bool = False) -> dict:
    """pairs/s after warming on n/3 other samples (the glyph cache still misses ~2 glyphs a pair,
    as in a short run) or, with ``steady``, with every glyph cached first (a long run such as
    quick's 500k synth pairs draws each of the ~31k glyphs once, then only hits)."""
    if steady:
        r = _renderer("default", ())
        warm_glyphs(r.fonts, range(r.style.font_size[0], r.style.font_size[1] + 1))
    for i in range(n // 3):
        make_sample(name, split, 10_000_000 + i, 0)
    wall, cpu = time.perf_counter(), time.process_time()
    for i in range(n):
        make_sample(name, split, i, 0)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    return {"set": f"{name}/{split}" + (" (steady)" if steady else ""), "n": n,
            "pairs_per_s_wall": round(n / wall, 1),
            "pairs_per_s_cpu": round(n / cpu, 1)}


def _pair(args) -> tuple[np.ndarray, np.ndarray]:
    split, index, seed = args
    _, hr, lr = make_sample("textzoom", split, index, seed)
    return decode_image(lr, LR_SIZE), decode_image(hr, HR_SIZE)


def _gauss1d(size: int = 11, sigma: float = 1.5) -> torch.Tensor:
    x = torch.arange(size, dtype=torch.float32) - size // 2
    g = torch.exp(-(x**2) / (2 * sigma**2))
    return g / g.sum()


def ssim_fast(a: torch.Tensor, b: torch.Tensor) -> float:
    """TextZoom's SSIM (11x11 Gaussian, sigma 1.5, zero padding 5, C1/C2 for range 1) computed
    with two separable float32 passes. Equals image_bench.metrics.image_quality.ssim (float64,
    2-D window) to ~1e-6, but is far faster on a CPU."""
    g = _gauss1d()
    c = a.shape[1]

    def blur(x):
        x = F.conv2d(x, g.view(1, 1, 1, -1).expand(c, 1, 1, -1), padding=(0, 5), groups=c)
        return F.conv2d(x, g.view(1, 1, -1, 1).expand(c, 1, -1, 1), padding=(5, 0), groups=c)

    mx, my = blur(a), blur(b)
    sx, sy, sxy = blur(a * a) - mx * mx, blur(b * b) - my * my, blur(a * b) - mx * my
    c1, c2 = 0.01**2, 0.03**2
    num = (2 * mx * my + c1) * (2 * sxy + c2)
    return float((num / ((mx * mx + my * my + c1) * (sx + sy + c2))).mean())


def quality(sizes: dict[str, int], seed: int, workers: int, batch: int = 50) -> dict:
    from image_bench.metrics.image_quality import psnr, ssim

    out = {}
    with mp.get_context("fork").Pool(workers) as pool:
        for severity, n in sizes.items():
            pairs = pool.map(_pair, [(f"test/{severity}", i, seed) for i in range(n)], 64)
            lr = torch.from_numpy(np.stack([p[0] for p in pairs])).permute(0, 3, 1, 2).float() / 255
            hr = torch.from_numpy(np.stack([p[1] for p in pairs])).permute(0, 3, 1, 2).float() / 255
            up = F.interpolate(lr, size=(32, 128), mode="bicubic", align_corners=False)
            # the library's float64 SSIM is the reference: check the fast one against it once
            ref = ssim(up[:8], hr[:8])
            if abs(ref - ssim_fast(up[:8], hr[:8])) > 1e-4:
                raise AssertionError(f"fast SSIM disagrees with the library: {ref}")
            ps, ss = [], []
            for s in range(0, n, batch):
                ps.append(psnr(up[s:s + batch], hr[s:s + batch]))
                ss.append(ssim_fast(up[s:s + batch], hr[s:s + batch]))
            out[severity] = {"n": n, "psnr": float(np.mean(ps)), "ssim": float(np.mean(ss))}
    total = sum(v["n"] for v in out.values())
    out["overall"] = {"n": total,
                      "psnr": sum(v["psnr"] * v["n"] for v in out.values()) / total,
                      "ssim": sum(v["ssim"] * v["n"] for v in out.values()) / total}
    return out


def crop_stats(images: list[bytes], labels: list[str]) -> dict[str, np.ndarray]:
    """Per-crop native height and width, label length, sharpness and contrast at the LR input."""
    out = {k: [] for k in ("height", "width", "label_length", "sharpness", "contrast")}
    for buf, label in zip(images, labels):
        with Image.open(io.BytesIO(buf)) as im:
            out["height"].append(im.height)
            out["width"].append(im.width)
        g = decode_image(buf, LR_SIZE).astype(np.float32).mean(axis=2) / 255
        lap = 4 * g[1:-1, 1:-1] - g[:-2, 1:-1] - g[2:, 1:-1] - g[1:-1, :-2] - g[1:-1, 2:]
        out["sharpness"].append(float(np.abs(lap).mean()))
        out["contrast"].append(float(g.std()))
        out["label_length"].append(len(label))
    return {k: np.asarray(v, np.float64) for k, v in out.items()}


def ic15(real: str, max_height: int | None, n: int, seed: int) -> dict:
    from image_bench.data.benchmark_lmdb import open_lmdb

    records = list(open_lmdb(real).records())
    images, labels = [r.lr for r in records], [r.label for r in records]
    real_stats = crop_stats(images, labels)
    if max_height is not None:
        keep = real_stats["height"] <= max_height
        real_stats = {k: v[keep] for k, v in real_stats.items()}
    made = [make_sample("ic15-352", "test", i, seed) for i in range(n)]
    stand_in = crop_stats([m[2] for m in made], [m[0] for m in made])

    def summary(stats):
        return {k: {"median": float(np.median(v)), "p10": float(np.percentile(v, 10)),
                    "p90": float(np.percentile(v, 90))} for k, v in stats.items()} | {
            "n": int(len(stats["height"]))}
    return {"real": summary(real_stats), "stand_in": summary(stand_in)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    sp = sub.add_parser("speed")
    sp.add_argument("--n", type=int, default=3000)
    sp.add_argument("--steady", action="store_true",
                    help="also measure synth with the glyph cache full (a long run's state)")
    q = sub.add_parser("quality")
    q.add_argument("--profile", default="quick", help="test sizes from this profile")
    q.add_argument("--n", type=int, default=None, help="override: this many per split")
    q.add_argument("--seed", type=int, default=0)
    q.add_argument("--workers", type=int, default=mp.cpu_count())
    c = sub.add_parser("ic15")
    c.add_argument("--real", required=True, help="real crops, an LMDB in the benchmark format")
    c.add_argument("--max-height", type=int, default=None,
                   help="only the real crops of at most this many pixels high")
    c.add_argument("--n", type=int, default=352, help="stand-in crops to generate")
    c.add_argument("--seed", type=int, default=0)
    for p in (sp, q, c):
        p.add_argument("--json", default=None, help="also write the results here")
    args = parser.parse_args()
    if args.cmd == "speed":
        result = [speed(args.n, "synth", "train"), speed(args.n // 3, "textzoom", "train1")]
        if args.steady:
            result += [speed(args.n, "synth", "train", steady=True)]
        for r in result:
            print(f"{r['set']:>25}: {r['pairs_per_s_wall']:7.1f} pairs/s wall, "
                  f"{r['pairs_per_s_cpu']:7.1f} pairs/s CPU time (one core, n={r['n']})")
    elif args.cmd == "ic15":
        result = ic15(args.real, args.max_height, args.n, args.seed)
        print(f"{'':>13} {'real (n=' + str(result['real']['n']) + ')':>24} "
              f"{'stand-in (n=' + str(result['stand_in']['n']) + ')':>24}   median (p10-p90)")
        for k in ("height", "width", "label_length", "sharpness", "contrast"):
            cells = [f"{v[k]['median']:.3g} ({v[k]['p10']:.3g}-{v[k]['p90']:.3g})"
                     for v in (result["real"], result["stand_in"])]
            print(f"{k:>13} {cells[0]:>24} {cells[1]:>24}")
    else:
        e, m, h = get_profile(args.profile).textzoom_test
        sizes = {"easy": e, "medium": m, "hard": h}
        if args.n:
            sizes = {k: args.n for k in sizes}
        result = quality(sizes, args.seed, args.workers)
        print(f"{'split':>8} {'n':>6} {'PSNR':>7} {'SSIM':>7}   TextZoom bicubic (PSNR / SSIM)")
        for k, v in result.items():
            ref = TEXTZOOM_BICUBIC[k]
            print(f"{k:>8} {v['n']:6d} {v['psnr']:7.2f} {v['ssim']:7.4f}   "
                  f"{ref[0]:.2f} / {ref[1]:.4f}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)


if __name__ == "__main__":
    main()
