"""Generate the stand-in data sets in TextZoom's LMDB format.

Layout written under ``out``::

    synth/train, synth/val                       rendered HR + synth LR ("S")
    textzoom/train1, textzoom/train2             camera-zoom pairs, severities mixed
    textzoom/test/easy, test/medium, test/hard   camera-zoom pairs, one severity each
    ic15-352/                                    LR-only, IC15-like look
    manifest.json (and <set>/manifest.json)      counts and content hash per split

Every sample is drawn from its own generator seeded by (seed, split, index), so the bytes do not
depend on the number of workers. A set is built in a temporary directory and renamed into place,
so an interrupted run never leaves a half-written set behind.
"""

from __future__ import annotations

import fcntl
import json
import multiprocessing as mp
import os
import shutil
import time
import zlib
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from image_bench.data import degrade
from image_bench.data.lmdb_format import LMDBWriter
from image_bench.data.render import DEFAULT_STYLE, IC15_STYLE, Renderer
from image_bench.profiles import get_profile
from image_bench.progress import progress_bar

# Bump when the generator's output changes, so cached stand-ins are regenerated.
GENERATOR_VERSION = 4  # 4: the IC15 stand-in's blur and contrast calibrated on real crops
SETS = ("synth", "textzoom", "ic15-352")
# TextZoom's training pairs mix all three difficulties; we draw each training pair's severity
# in proportion to the test subsets' sizes (1,619 / 1,411 / 1,343).
TRAIN_SEVERITY_P = np.array([1619, 1411, 1343], np.float64) / 4373
HR_QUALITY = 95  # HR and synth LR: JPEG 4:4:4 at q95, as TextZoom's own PIL2buf stores JPEG


def synth_val_size(total: int) -> int:
    """Held-out synth val: 1% of the pairs, at least 64 and at most 2,000."""
    return min(2000, max(64, total // 100))


def split_sizes(name: str, profile: str) -> dict[str, int]:
    """LMDB sub-directory (relative to the set) -> number of records."""
    p = get_profile(profile)
    if name == "synth":
        val = synth_val_size(p.synth_pairs)
        return {"train": p.synth_pairs - val, "val": val}
    if name == "textzoom":
        e, m, h = p.textzoom_test
        return {"train1": p.textzoom_train[0], "train2": p.textzoom_train[1],
                "test/easy": e, "test/medium": m, "test/hard": h}
    if name == "ic15-352":
        return {".": p.ic15_images}
    raise KeyError(f"unknown data set {name!r}; known: {', '.join(SETS)}")


# ----------------------------------------------------------------------------------------------
# one sample
# ----------------------------------------------------------------------------------------------
_RENDERERS: dict = {}


def _renderer(style_name: str, font_dirs: tuple[str, ...]) -> Renderer:
    key = (style_name, font_dirs)
    if key not in _RENDERERS:
        style = IC15_STYLE if style_name == "ic15" else DEFAULT_STYLE
        _RENDERERS[key] = Renderer(font_dirs, style)
    return _RENDERERS[key]


def _stream(name: str, split: str) -> int:
    return zlib.crc32(f"{name}/{split}".encode())


def make_sample(name: str, split: str, index: int, seed: int,
                font_dirs: tuple[str, ...] = ()) -> tuple[str, bytes | None, bytes]:
    """(label, HR bytes or None, LR bytes) of sample ``index`` (0-based) of one split."""
    rng = np.random.default_rng([seed, _stream(name, split), index])
    if name == "synth":
        text, hr = _renderer("default", font_dirs).sample(rng)
        lr = degrade.synth(hr, rng)
        return text, degrade.to_jpeg444(hr, HR_QUALITY), degrade.to_jpeg444(lr, HR_QUALITY)
    if name == "textzoom":
        if split.startswith("test/"):
            severity = split.split("/", 1)[1]
        else:
            severity = ("easy", "medium", "hard")[int(rng.choice(3, p=TRAIN_SEVERITY_P))]
        text, hr = _renderer("default", font_dirs).sample(rng)
        return text, degrade.to_jpeg444(hr, HR_QUALITY), degrade.camera(hr, rng, severity)
    if name == "ic15-352":
        text, hr = _renderer("ic15", font_dirs).sample(rng)
        return text, None, degrade.camera(hr, rng, "ic15")
    raise KeyError(f"unknown data set {name!r}; known: {', '.join(SETS)}")


def _chunk(args) -> list[tuple[str, bytes | None, bytes]]:
    name, split, start, stop, seed, font_dirs = args
    return [make_sample(name, split, i, seed, font_dirs) for i in range(start, stop)]


# ----------------------------------------------------------------------------------------------
# sets
# ----------------------------------------------------------------------------------------------
@contextmanager
def file_lock(path: Path):
    """An exclusive advisory lock (fcntl), so two processes never generate the same set."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _progress(disable: bool):
    return progress_bar(disable=disable)


def read_manifest(set_dir: Path) -> dict | None:
    path = Path(set_dir) / "manifest.json"
    if not path.is_file():
        return None
    return json.loads(path.read_text())


def make_set(name: str, out: str | os.PathLike, profile: str = "smoke", seed: int = 0,
             workers: int | None = None, font_dirs: tuple[str, ...] = (), force: bool = False,
             quiet: bool = False, chunk: int = 256) -> dict:
    """Write one stand-in set under ``out/name``; returns its manifest. Skips an identical one."""
    sizes = split_sizes(name, profile)
    out = Path(out)
    final = out / name
    want = {"name": name, "profile": profile, "seed": seed, "generator": GENERATOR_VERSION,
            "font_dirs": [str(d) for d in font_dirs]}
    with file_lock(out / f".{name}.lock"):
        existing = read_manifest(final)
        if existing and not force and all(existing.get(k) == v for k, v in want.items()):
            return existing
        workers = workers or os.cpu_count() or 1
        tmp = out / f".{name}.tmp-{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        splits = {}
        started = time.perf_counter()
        ctx = mp.get_context("fork")
        pool = ctx.Pool(workers) if workers > 1 else None
        try:
            with _progress(quiet) as bar:
                for split, count in sizes.items():
                    task = bar.add_task(f"{name}/{split}".rstrip("/."), total=count)
                    jobs = [(name, split, s, min(s + chunk, count), seed, tuple(font_dirs))
                            for s in range(0, count, chunk)]
                    results = pool.imap(_chunk, jobs) if pool else map(_chunk, jobs)
                    with LMDBWriter(tmp / split, ascii_only=True) as writer:
                        for records in results:
                            for label, hr, lr in records:
                                writer.add(label, lr, hr)
                            bar.advance(task, len(records))
                    splits[split] = {"count": writer.count, "hash": writer.content_hash,
                                     "has_hr": bool(writer.has_hr)}
        except BaseException:
            if pool is not None:  # an error or a stop signal: drop the queued chunks, do not
                pool.terminate()  # wait for them
            raise
        finally:
            if pool is not None:
                pool.close()
                pool.join()
        seconds = time.perf_counter() - started
        total = sum(s["count"] for s in splits.values())
        manifest = dict(want, splits=splits, seconds=round(seconds, 2), workers=workers,
                        pairs_per_second=round(total / max(seconds, 1e-9), 1))
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
    _update_top_manifest(out, name, manifest)
    return manifest


def _update_top_manifest(out: Path, name: str, manifest: dict) -> None:
    with file_lock(out / ".manifest.lock"):
        path = out / "manifest.json"
        top = json.loads(path.read_text()) if path.is_file() else {"sets": {}}
        top["sets"][name] = manifest
        tmp = path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(top, indent=2) + "\n")
        os.replace(tmp, path)


def make_all(out: str | os.PathLike, profile: str = "smoke", seed: int = 0,
             workers: int | None = None, font_dirs: tuple[str, ...] = (), force: bool = False,
             quiet: bool = False, sets: tuple[str, ...] = SETS) -> dict:
    return {name: make_set(name, out, profile, seed, workers, font_dirs, force, quiet)
            for name in sets}
