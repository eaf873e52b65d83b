"""The run store: one JSON record per finished piece of work, keyed by the hash of what it is.

A record is immutable once written. Kinds:

- ``train``: a finished training run; key = ``RunConfig.key()``; the checkpoint lives in the runs
  directory (git-ignored), the record (committed) keeps the config, result and provenance.
- ``eval``: metrics of one method (a trained run, optionally read by a trained recognizer) on one
  data set; ``cost``: params/FLOPs of a model config; ``bench``: latency on one device.

Writes are atomic (temp file in the same directory, fsync, ``os.replace``, fsync of the directory),
so a crash never leaves half a record under a record's name; a per-key ``fcntl.flock`` makes
check-then-work-then-write safe with several processes on one store. An existing record is never
overwritten: a second writer with the same key and spec keeps the first record; a different spec
under the same key is an error. A record that exists but does not parse is reported with its path
(:class:`CorruptRecordError`), never skipped.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import time
from pathlib import Path
from typing import Iterator

RECORD_FIELDS = ("key", "kind", "spec", "result", "provenance")
KINDS = ("train", "eval", "cost", "bench")


class StoreError(RuntimeError):
    pass


class CorruptRecordError(StoreError):
    def __init__(self, path: Path, reason: str):
        self.path = Path(path)
        super().__init__(
            f"corrupt run record {path}: {reason}. It is kept as is; inspect it, then move it "
            f"away (e.g. `mv {path} {path}.bad`) to redo that run."
        )


class ConflictError(StoreError):
    pass


def spec_key(spec: dict) -> str:
    """Identity of a non-training record: sha256 of its canonical JSON, 16 hex digits (the same
    scheme as ``RunConfig.key``)."""
    blob = json.dumps(spec, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class RunStore:
    """Records under ``root/<key>.json``; lock files under ``root/.locks/``."""

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        (self.root / ".locks").mkdir(exist_ok=True)
        ignore = self.root / ".gitignore"
        if not ignore.exists():  # locks and temp files never belong in the committed store
            ignore.write_text(".locks/\n.*.tmp*\n")

    # -- paths and locks ---------------------------------------------------------------------
    def path(self, key: str) -> Path:
        if not key or "/" in key or key.startswith("."):
            raise ValueError(f"bad record key {key!r}")
        return self.root / f"{key}.json"

    @contextlib.contextmanager
    def lock(self, key: str) -> Iterator[None]:
        """Exclusive per-key lock across processes; the kernel drops it if the holder dies."""
        with open(self.root / ".locks" / f"{key}.lock", "a+") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    # -- reading -------------------------------------------------------------------------------
    def _load(self, path: Path) -> dict:
        try:
            text = path.read_text()
        except OSError as e:
            raise CorruptRecordError(path, f"unreadable ({e})") from e
        if not text.strip():
            raise CorruptRecordError(path, "empty file")
        try:
            record = json.loads(text)
        except json.JSONDecodeError as e:
            raise CorruptRecordError(path, f"not valid JSON ({e.msg} at char {e.pos})") from e
        if not isinstance(record, dict):
            raise CorruptRecordError(path, "not a JSON object")
        missing = [f for f in RECORD_FIELDS if f not in record]
        if missing:
            raise CorruptRecordError(path, f"missing fields {missing}")
        if record["key"] != path.stem:
            raise CorruptRecordError(path, f"holds key {record['key']!r}, file named {path.stem!r}")
        return record

    def get(self, key: str) -> dict | None:
        """The record, None if absent; raises CorruptRecordError if present but unreadable."""
        path = self.path(key)
        if not path.exists():
            return None
        return self._load(path)

    def __contains__(self, key: str) -> bool:
        return self.get(key) is not None

    def records(self, kind: str | None = None) -> list[dict]:
        """Every record (of a kind); raises on the first corrupt one (see :meth:`check`)."""
        out = []
        for path in sorted(self.root.glob("*.json")):
            record = self._load(path)
            if kind is None or record["kind"] == kind:
                out.append(record)
        return out

    def check(self) -> list[CorruptRecordError]:
        """All corrupt records, for a report that names every one."""
        problems = []
        for path in sorted(self.root.glob("*.json")):
            try:
                self._load(path)
            except CorruptRecordError as e:
                problems.append(e)
        return problems

    # -- writing -------------------------------------------------------------------------------
    def put(self, key: str, kind: str, spec: dict, result: dict, provenance: dict) -> dict:
        """Write a record unless one exists. Returns the record now in the store.

        Same key and same spec already stored: the stored record wins (kept, returned). Same key,
        different spec: ConflictError. Call inside :meth:`lock` when the work itself must not be
        done twice; ``put`` takes the lock itself for the write."""
        if kind not in KINDS:
            raise ValueError(f"unknown record kind {kind!r}; known: {', '.join(KINDS)}")
        record = {"key": key, "kind": kind, "spec": spec, "result": result,
                  "provenance": provenance}
        blob = json.dumps(record, indent=1, sort_keys=True, allow_nan=True) + "\n"
        path = self.path(key)
        with self._write_lock(key):
            existing = self.get(key)
            if existing is not None:
                if _canon(existing["spec"]) != _canon(spec) or existing["kind"] != kind:
                    raise ConflictError(
                        f"record {path} exists with a different spec; refusing to overwrite it")
                return existing
            atomic_write_text(path, blob)
        return record

    @contextlib.contextmanager
    def _write_lock(self, key: str) -> Iterator[None]:
        # A separate lock file from `lock(key)`, so a caller holding the work lock can still put.
        with open(self.root / ".locks" / f"{key}.write.lock", "a+") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)


def atomic_write_text(path: Path, text: str) -> None:
    """Write ``path`` so that readers see the old file or the new one, never a part: a
    temporary file private to this process (two writers never share one), fsync, rename, fsync
    of the folder."""
    tmp = path.with_name(f".{path.name}.tmp.{os.getpid()}")
    with open(tmp, "w") as fh:
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    _fsync_dir(path.parent)


def _canon(obj) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"))


def now_iso() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")
