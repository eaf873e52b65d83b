"""Data sets by name: the API the engine uses.

``resolve(name, split, profile)`` returns a :class:`TensorSet` of uint8 tensors. It reads the real
data when a data root (argument or env ``IMAGE_BENCH_DATA``) holds the set, else the stand-in that
the suite generates (once, under a lock) in the cache dir (env ``IMAGE_BENCH_CACHE``, default
``./.cache/image-bench``).

Accepted real-data layouts under the data root (first match wins)::

    textzoom:  ROOT/textzoom/{train1,train2,test/easy,test/medium,test/hard}
               ROOT/TextZoom/...   (same inside), or ROOT itself holding train1/ and test/
    ic15-352:  ROOT/ic15-352, ROOT/IC15-352, ROOT/ic15_352, ROOT/IC15_352: each either the LMDB
               itself (data.mdb inside) or holding it in test/
    synth:     ROOT/synth/{train,val}

Splits: synth ``train``/``val``; textzoom ``train`` (train1 + train2 minus a held-out ``val``:
2% of them, at least 32, chosen by a fixed generator), ``val``, ``test/easy|medium|hard``;
ic15-352 ``test``. Model selection uses ``val``, never a test split.

Labels that normalise to nothing (pure punctuation, which real TextZoom has a few of) are dropped
from every split, test splits included, and the count is logged: a word nobody can score is not
a test sample. ``identity['dropped']`` records how many.

Decoding happens once: the uint8 tensors of each LMDB are cached in a ``.pt`` keyed by the LMDB's
content hash (next to a stand-in LMDB; in the cache dir for real data, which may be read-only).
"""

from __future__ import annotations

import hashlib
import json
import logging
import multiprocessing as mp
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from image_bench.charset import normalize
from image_bench.data.benchmark_lmdb import open_lmdb
from image_bench.data.lmdb_format import DataError
from image_bench.data.make import file_lock, make_set, read_manifest

log = logging.getLogger(__name__)

SPLITS = {
    "synth": ["train", "val"],
    "textzoom": ["train", "val", "test/easy", "test/medium", "test/hard"],
    "ic15-352": ["test"],
}
TEXTZOOM_VAL_FRACTION = 0.02
TEXTZOOM_VAL_MIN = 32
VAL_SEED = 20240611  # fixed: the held-out part never depends on the run's seed
CACHE_FORMAT = 2  # 2: RGBA and 16-bit images decoded by lmdb_format.to_rgb


@dataclass
class TensorSet:
    lr: torch.Tensor  # uint8 (N,3,16,64)
    hr: torch.Tensor | None  # uint8 (N,3,32,128); None for LR-only sets
    labels: list[str]  # raw labels (case kept); normalisation happens at encoding
    identity: dict = field(default_factory=dict)
    # name, split, source ('stand-in'|'real'), hash, path, count, profile, dropped

    def __len__(self) -> int:
        return len(self.labels)


def splits(name: str) -> list[str]:
    if name not in SPLITS:
        raise KeyError(f"unknown data set {name!r}; known: {', '.join(SPLITS)}")
    return list(SPLITS[name])


def cache_root() -> Path:
    return Path(os.environ.get("IMAGE_BENCH_CACHE", "./.cache/image-bench"))


def standin_root(profile: str, seed: int) -> Path:
    return cache_root() / "standin" / f"{profile}-seed{seed}"


# ----------------------------------------------------------------------------------------------
# locating LMDBs
# ----------------------------------------------------------------------------------------------
def _is_lmdb(path: Path) -> bool:
    return (path / "data.mdb").is_file()


def _real_dirs(name: str, root: Path) -> dict[str, Path] | None:
    """LMDB directories of the real set under ``root`` (keyed like make.split_sizes), or None."""
    if name == "textzoom":
        for base in (root / "textzoom", root / "TextZoom", root):
            parts = {p: base / p for p in ("train1", "train2", "test/easy", "test/medium",
                                          "test/hard")}
            if any(_is_lmdb(p) for p in parts.values()):
                return parts
    elif name == "ic15-352":
        for base in (root / "ic15-352", root / "IC15-352", root / "ic15_352", root / "IC15_352"):
            for cand in (base, base / "test"):
                if _is_lmdb(cand):
                    return {".": cand}
    elif name == "synth":
        base = root / "synth"
        if _is_lmdb(base / "train"):
            return {"train": base / "train", "val": base / "val"}
    return None


def _split_parts(name: str, split: str) -> list[str]:
    """Which LMDB sub-directories a split reads."""
    if name == "textzoom":
        return ["train1", "train2"] if split in ("train", "val") else [split]
    if name == "ic15-352":
        return ["."]
    return [split]


# ----------------------------------------------------------------------------------------------
# decoding with a cache
# ----------------------------------------------------------------------------------------------
def lmdb_hash(path: Path) -> str:
    """Content hash of a real LMDB, remembered per (size, mtime) of its data.mdb."""
    st = (path / "data.mdb").stat()
    key = hashlib.sha256(str(path.resolve()).encode()).hexdigest()[:24]
    memo = cache_root() / "hashes" / f"{key}.json"
    stamp = [st.st_size, st.st_mtime_ns]
    if memo.is_file():
        saved = json.loads(memo.read_text())
        if saved.get("stamp") == stamp:
            return saved["hash"]
    with open_lmdb(path) as db:
        digest = db.content_hash()
    memo.parent.mkdir(parents=True, exist_ok=True)
    memo.write_text(json.dumps({"path": str(path), "stamp": stamp, "hash": digest}))
    return digest


def _decode_range(args) -> list[str]:
    """Worker: decode records [start, stop) of one LMDB into the scratch arrays (or in memory)."""
    path, start, stop, lr_file, hr_file, n = args
    if lr_file is None:
        lr_out, hr_out = _LOCAL["lr"], _LOCAL["hr"]
    else:
        lr_out = np.memmap(lr_file, np.uint8, "r+", shape=(n, 3, 16, 64))
        hr_out = np.memmap(hr_file, np.uint8, "r+", shape=(n, 3, 32, 128)) if hr_file else None
    labels = []
    with open_lmdb(path) as db:
        for rec in db.records(start + 1, stop + 1):
            lr, hr, label = db.decode(rec)
            lr_out[rec.index - 1] = lr.transpose(2, 0, 1)
            if hr_out is not None:
                hr_out[rec.index - 1] = hr.transpose(2, 0, 1)
            labels.append(label)
    if lr_file is not None:
        lr_out.flush()
        if hr_out is not None:
            hr_out.flush()
    return labels


_LOCAL: dict = {}


def decode_lmdb(path: Path, workers: int | None = None, scratch: Path | None = None
                ) -> tuple[torch.Tensor, torch.Tensor | None, list[str]]:
    """Decode every record of one LMDB to uint8 NCHW tensors; large ones in parallel.

    Parallel workers write into memory-mapped scratch files on disk (not /dev/shm, which is
    small in many containers), so no pixels travel through pipes.
    """
    with open_lmdb(path) as db:
        n, has_hr = len(db), db.has_hr
    workers = min(workers or os.cpu_count() or 1, max(1, n // 2000))
    step = max(1, -(-n // (workers * 4)))
    if workers == 1:
        lr = np.empty((n, 3, 16, 64), np.uint8)
        hr = np.empty((n, 3, 32, 128), np.uint8) if has_hr else None
        _LOCAL.update(lr=lr, hr=hr)
        try:
            labels = _decode_range((str(path), 0, n, None, None, n))
        finally:
            _LOCAL.clear()
        return torch.from_numpy(lr), None if hr is None else torch.from_numpy(hr), labels
    scratch = Path(scratch or path)
    lr_file = scratch / f".decode-{os.getpid()}-lr.u8"
    hr_file = scratch / f".decode-{os.getpid()}-hr.u8" if has_hr else None
    try:
        np.memmap(lr_file, np.uint8, "w+", shape=(n, 3, 16, 64)).flush()
        if hr_file:
            np.memmap(hr_file, np.uint8, "w+", shape=(n, 3, 32, 128)).flush()
        jobs = [(str(path), s, min(s + step, n), str(lr_file), hr_file and str(hr_file), n)
                for s in range(0, n, step)]
        # close + join, not the context manager's terminate(): a terminated worker gets SIGTERM,
        # which the stop handler it inherited (engine/interrupt.py) turns into a traceback
        pool = mp.get_context("fork").Pool(workers)
        try:
            parts = pool.map(_decode_range, jobs)
        except BaseException:
            pool.terminate()
            raise
        finally:
            pool.close()
            pool.join()
        lr = torch.from_numpy(np.fromfile(lr_file, np.uint8).reshape(n, 3, 16, 64))
        hr = (torch.from_numpy(np.fromfile(hr_file, np.uint8).reshape(n, 3, 32, 128))
              if hr_file else None)
    finally:
        for f in (lr_file, hr_file):
            if f is not None:
                Path(f).unlink(missing_ok=True)
    return lr, hr, [label for part in parts for label in part]


def load_lmdb(path: Path, digest: str, cache_dir: Path) -> tuple[torch.Tensor, torch.Tensor | None,
                                                                  list[str]]:
    """Decoded tensors of one LMDB, from ``cache_dir/decoded-<hash>.pt`` when present."""
    cache = cache_dir / f"decoded-{digest[:32]}.pt"

    def cached():
        if cache.is_file():
            blob = torch.load(cache, mmap=True, weights_only=True)
            if blob.get("format") == CACHE_FORMAT and blob.get("hash") == digest:
                return blob["lr"], blob["hr"], list(blob["labels"])
        return None

    found = cached()
    if found is not None:
        return found
    with file_lock(cache_dir / f".decoded-{digest[:32]}.lock"):
        found = cached()  # another process may have finished while we waited
        if found is not None:
            return found
        lr, hr, labels = decode_lmdb(path, scratch=cache_dir)
        tmp = cache.with_suffix(f".tmp-{os.getpid()}")
        torch.save({"format": CACHE_FORMAT, "hash": digest, "lr": lr, "hr": hr,
                    "labels": labels}, tmp)
        os.replace(tmp, cache)
    return lr, hr, labels


def keep_scorable(lr: torch.Tensor, hr: torch.Tensor | None, labels: list[str],
                  index: np.ndarray | None = None):
    """The samples at ``index`` (default: all) whose label normalises to something.

    Returns (lr, hr, labels, dropped): a word that normalises to nothing cannot be scored nor
    trained on (module docstring)."""
    index = np.arange(len(labels)) if index is None else index
    keep = np.array([i for i in index if normalize(labels[i])], dtype=np.int64)
    dropped = len(index) - len(keep)
    if len(keep) != len(labels):
        sel = torch.from_numpy(keep)
        lr = lr.index_select(0, sel)
        hr = hr.index_select(0, sel) if hr is not None else None
        labels = [labels[i] for i in keep]
    return lr, hr, labels, dropped


# ----------------------------------------------------------------------------------------------
# resolve
# ----------------------------------------------------------------------------------------------
def textzoom_val_indices(n: int) -> np.ndarray:
    """Held-out val positions in train1+train2 (0-based, sorted): 2%, at least 32."""
    k = min(n, max(TEXTZOOM_VAL_MIN, round(TEXTZOOM_VAL_FRACTION * n)))
    return np.sort(np.random.default_rng(VAL_SEED).choice(n, size=k, replace=False))


def resolve(name: str, split: str, profile: str = "smoke", *, data_root: str | None = None,
            seed: int = 0) -> TensorSet:
    """The (LR, HR, labels) of one split, real when available, else the generated stand-in."""
    known = splits(name)
    if split not in known:
        raise KeyError(f"unknown split {split!r} of {name!r}; known: {', '.join(known)}")
    root = data_root or os.environ.get("IMAGE_BENCH_DATA")
    dirs = _real_dirs(name, Path(root)) if root else None
    parts = _split_parts(name, split)
    if dirs is not None:
        source, used_profile = "real", None
        missing = [p for p in parts if not _is_lmdb(dirs[p])]
        if missing:
            raise DataError(dirs[missing[0]], None,
                            f"the real {name} set under {root} lacks split {missing[0]!r}")
        hashes = {p: lmdb_hash(dirs[p]) for p in parts}
        cache_dirs = {p: cache_root() / "decoded" for p in parts}
    else:
        source, used_profile = "stand-in", profile
        out = standin_root(profile, seed)
        manifest = make_set(name, out, profile=profile, seed=seed, quiet=True)
        set_dir = out / name
        dirs = {p: set_dir / p for p in manifest["splits"]}
        hashes = {p: manifest["splits"][p]["hash"] for p in parts}
        cache_dirs = {p: dirs[p] for p in parts}
        if read_manifest(set_dir) is None:
            raise DataError(set_dir, None, "stand-in set has no manifest.json")
    for p in parts:
        cache_dirs[p].mkdir(parents=True, exist_ok=True)
    loaded = [load_lmdb(dirs[p], hashes[p], cache_dirs[p]) for p in parts]
    lr = torch.cat([x[0] for x in loaded]) if len(loaded) > 1 else loaded[0][0]
    hr_parts = [x[1] for x in loaded]
    hr = None if any(h is None for h in hr_parts) else (
        torch.cat(hr_parts) if len(hr_parts) > 1 else hr_parts[0])
    labels = [label for x in loaded for label in x[2]]
    index = np.arange(len(labels))
    if name == "textzoom" and split in ("train", "val"):
        val = textzoom_val_indices(len(labels))
        index = val if split == "val" else np.setdiff1d(index, val)
    lr, hr, labels, dropped = keep_scorable(lr, hr, labels, index)
    if dropped:
        log.warning("%s/%s: dropped %d of %d samples whose label normalises to nothing",
                    name, split, dropped, len(index))
    if len(parts) > 1:  # textzoom train/val: both LMDBs plus the rule that splits them
        rule = f"val:{TEXTZOOM_VAL_FRACTION}/{TEXTZOOM_VAL_MIN}/{VAL_SEED}"
        digest = hashlib.sha256(f"{name}/{split}:{hashes[parts[0]]}+{hashes[parts[1]]}:{rule}"
                                .encode()).hexdigest()
    else:
        digest = hashes[parts[0]]  # a whole LMDB: its own content hash
    path = str(dirs[parts[0]]) if len(parts) == 1 else ",".join(str(dirs[p]) for p in parts)
    identity = {"name": name, "split": split, "source": source, "hash": digest, "path": path,
                "count": len(labels), "profile": used_profile, "dropped": int(dropped)}
    return TensorSet(lr=lr, hr=hr, labels=labels, identity=identity)
