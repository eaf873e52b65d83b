"""``--data PATH``: the LMDBs at or under a path, each loaded as one evaluation set.

``--data`` is a data set name (``synth``, ``textzoom``, ``ic15-352``: ``datasets.SPLITS``) or a
path; a name wins, so a folder that happens to be called ``synth`` is given as ``./synth``. A path
is either one LMDB environment (a folder holding ``data.mdb``) or a folder of them, one per subset
at any depth, as the benchmark bundles ship (``evaluation/IIIT5k_3000``, ``evaluation/SVT``, ...).
Each environment is read in the format it holds (``benchmark_lmdb.open_lmdb``). The set is named
after the folder given; its subsets after their paths inside it.

Decoded tensors are cached under the cache dir (``datasets.cache_root()/decoded``), keyed by the
LMDB's content hash, never beside the LMDB: published sets often lie in read-only folders.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from image_bench.data import datasets
from image_bench.data.benchmark_lmdb import DESCRIPTIONS, open_lmdb
from image_bench.data.lmdb_format import DataError


def is_name(data: str) -> bool:
    """Whether ``data`` names a built-in set rather than a path."""
    return data in datasets.SPLITS


def set_name(path: str | os.PathLike) -> str:
    """The name of a set given by path: its folder's name (``eval-<name>.json``)."""
    return Path(path).resolve().name


def find_lmdbs(path: str | os.PathLike) -> dict[str, Path]:
    """{subset name: environment folder} at or under ``path``, sorted by name.

    One environment at ``path`` itself is one subset named after the folder. Raises DataError
    when there is none.
    """
    root = Path(path)
    if not root.exists():
        raise DataError(root, None, "no such file or folder")
    if (root / "data.mdb").is_file():
        return {set_name(root): root}
    if not root.is_dir():
        raise DataError(root, None, "not a folder holding an LMDB environment (data.mdb)")
    envs = sorted(p.parent for p in root.rglob("data.mdb") if p.is_file())
    if not envs:
        raise DataError(root, None, "no LMDB environment (data.mdb) at or under it")
    return {env.relative_to(root).as_posix(): env for env in envs}


@dataclass
class Subset:
    """What the CLI prints about one environment before using it."""

    name: str
    path: Path
    format: str
    records: int
    has_hr: bool

    def describe(self) -> str:
        kind = "LR+HR" if self.has_hr else "LR-only"
        return f"{self.name}: {DESCRIPTIONS[self.format]}, {self.records} records, {kind}"


def inspect_lmdbs(path: str | os.PathLike) -> list[Subset]:
    """The subsets at or under ``path`` with their detected format and record count."""
    out = []
    for name, env in find_lmdbs(path).items():
        with open_lmdb(env) as db:
            out.append(Subset(name, env, db.FORMAT, len(db), db.has_hr))
    return out


def load_subset(subset: Subset, set_label: str) -> datasets.TensorSet:
    """One environment as a TensorSet (LR 16x64, HR 32x128 or None), unscorable labels dropped.

    ``identity['dropped']`` counts the records whose label normalises to nothing.
    """
    digest = datasets.lmdb_hash(subset.path)
    cache_dir = datasets.cache_root() / "decoded"
    cache_dir.mkdir(parents=True, exist_ok=True)
    lr, hr, labels = datasets.load_lmdb(subset.path, digest, cache_dir)
    lr, hr, labels, dropped = datasets.keep_scorable(lr, hr, labels)
    identity = {"name": set_label, "split": subset.name, "source": "path",
                "format": subset.format, "hash": digest, "path": str(subset.path),
                "records": subset.records, "count": len(labels), "profile": None,
                "dropped": int(dropped)}
    return datasets.TensorSet(lr=lr, hr=hr, labels=labels, identity=identity)
