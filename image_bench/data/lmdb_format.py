"""TextZoom's LMDB format, read and written exactly (ORIGINALS.md section 1).

One LMDB environment (a directory holding ``data.mdb`` and ``lock.mdb``) per split. Keys are bytes
and 1-based:

- ``num-samples``: ASCII integer N;
- ``label-%09d``: the UTF-8 word (case kept, may hold punctuation);
- ``image_hr-%09d`` / ``image_lr-%09d``: encoded image bytes (any PIL-readable codec) at their
  native size. An LR-only set (IC15-352) has no ``image_hr`` keys.

At load time images are converted to RGB (:func:`to_rgb`) and resized with PIL BICUBIC to HR
128x32 and LR 64x16 (W x H), aspect ratio not kept, as every STISR repository's collate function
does. This is the one resize of the suite: the STR benchmark format (``benchmark_lmdb``) and
``image-bench read`` go through the same :func:`decode_image`.

Every problem raises :class:`DataError`, which names the environment and the key.
"""

from __future__ import annotations

import hashlib
import io
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import lmdb
import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

HR_SIZE = (128, 32)  # PIL (W, H)
LR_SIZE = (64, 16)
NUM_KEY = b"num-samples"
# A sparse map: LMDB reserves address space, not disk. Large enough for the paper profile.
MAP_SIZE = 1 << 40


def label_key(index: int) -> bytes:
    return b"label-%09d" % index


def hr_key(index: int) -> bytes:
    return b"image_hr-%09d" % index


def lr_key(index: int) -> bytes:
    return b"image_lr-%09d" % index


class DataError(Exception):
    """A data set problem, naming the environment (``path``) and the record key (``key``)."""

    def __init__(self, path: str | os.PathLike, key: str | bytes | None, message: str):
        self.path = str(path)
        self.key = key.decode("ascii", "replace") if isinstance(key, bytes) else key
        where = f"{self.path}" + (f" [key {self.key!r}]" if self.key is not None else "")
        super().__init__(f"{where}: {message}")
        self.message = message


def to_rgb(im: Image.Image) -> Image.Image:
    """An 8-bit RGB view of any PIL image, as a person would see it.

    Plain ``convert('RGB')`` is wrong for three kinds of files people have: transparency (text
    drawn on a transparent background turns into black on black), 16-bit and 32-bit grey (PIL
    clips the values above 255 to white), and photos stored sideways with an EXIF orientation.
    """
    im = ImageOps.exif_transpose(im)
    if im.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        values = np.asarray(im, dtype=np.float64)
        # a 16-bit file spans 0..65535; an 'I' or 'F' image that already lies in 0..255 stays
        top = 65535.0 if im.mode.startswith("I;16") or values.max(initial=0) > 255 else 255.0
        im = Image.fromarray(np.clip(values * (255.0 / top), 0, 255).round().astype(np.uint8))
    if im.mode == "P" and "transparency" in im.info:
        im = im.convert("RGBA")
    if im.mode in ("RGBA", "LA", "La", "RGBa", "PA"):
        im = im.convert("RGBA")
        white = Image.new("RGBA", im.size, (255, 255, 255, 255))
        im = Image.alpha_composite(white, im)
    return im.convert("RGB") if im.mode != "RGB" else im


def decode_image(buf: bytes, size: tuple[int, int], *, path="<bytes>", key=None) -> np.ndarray:
    """Decode to RGB (:func:`to_rgb`) and bicubic-resize to ``size`` (W, H); uint8 (H, W, 3)."""
    try:
        with Image.open(io.BytesIO(buf)) as im:
            im = to_rgb(im)
            if im.size != size:
                im = im.resize(size, Image.BICUBIC)
            return np.array(im, dtype=np.uint8)  # writable: torch.from_numpy needs it
    except UnidentifiedImageError as err:
        raise DataError(path, key, f"undecodable image ({len(buf)} bytes): not a format PIL "
                                   "can identify") from err
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as err:
        raise DataError(path, key, f"undecodable image ({len(buf)} bytes): {err}") from err


def encode_image(array: np.ndarray, fmt: str = "PNG", quality: int = 95) -> bytes:
    """Encode a uint8 (H, W, 3) array. PNG uses a fast zlib level: the stand-ins are large."""
    im = Image.fromarray(np.ascontiguousarray(array, dtype=np.uint8), "RGB")
    out = io.BytesIO()
    if fmt.upper() == "PNG":
        im.save(out, format="PNG", compress_level=1)
    elif fmt.upper() in ("JPEG", "JPG"):
        im.save(out, format="JPEG", quality=int(quality))
    else:
        raise ValueError(f"unsupported image format {fmt!r}; use PNG or JPEG")
    return out.getvalue()


def check_label(label: str, *, path, key, ascii_only: bool) -> None:
    if not label:
        raise DataError(path, key, "empty label")
    if ascii_only and not label.isascii():
        raise DataError(path, key, f"non-ASCII label {label!r} where ASCII is required")


class LMDBWriter:
    """Writes one TextZoom-format split. Use as a context manager; ``num-samples`` is written last.

    ``content_hash`` (sha256 over every key and value in index order, ``num-samples`` last) is the
    split's identity in manifests; identical records give identical hashes.
    """

    def __init__(self, path: str | os.PathLike, *, ascii_only: bool = True, overwrite: bool = False,
                 commit_every: int = 2000):
        self.path = Path(path)
        if (self.path / "data.mdb").exists():
            if not overwrite:
                raise DataError(self.path, None, "an LMDB environment already exists here")
            for name in ("data.mdb", "lock.mdb"):
                (self.path / name).unlink(missing_ok=True)
        self.path.mkdir(parents=True, exist_ok=True)
        self.ascii_only = ascii_only
        self.commit_every = commit_every
        self.count = 0
        self.has_hr: bool | None = None
        self._hash = hashlib.sha256()
        self._env = lmdb.open(str(self.path), map_size=MAP_SIZE, subdir=True, meminit=False,
                              map_async=True, sync=False)
        self._txn = self._env.begin(write=True)
        self.content_hash: str | None = None

    def _put(self, key: bytes, value: bytes) -> None:
        self._txn.put(key, value)
        self._hash.update(len(key).to_bytes(4, "little") + key)
        self._hash.update(len(value).to_bytes(8, "little") + value)

    def add(self, label: str, lr: bytes, hr: bytes | None = None) -> int:
        """Append one record (encoded image bytes); returns its 1-based index."""
        index = self.count + 1
        check_label(label, path=self.path, key=label_key(index), ascii_only=self.ascii_only)
        if self.has_hr is None:
            self.has_hr = hr is not None
        elif self.has_hr != (hr is not None):
            raise DataError(self.path, hr_key(index),
                            "mixing LR-only and LR+HR records in one split")
        self._put(label_key(index), label.encode("utf-8"))
        if hr is not None:
            self._put(hr_key(index), hr)
        self._put(lr_key(index), lr)
        self.count = index
        if index % self.commit_every == 0:
            self._txn.commit()
            self._txn = self._env.begin(write=True)
        return index

    def close(self) -> str:
        if self._env is None:
            return self.content_hash
        num = str(self.count).encode("ascii")
        self._put(NUM_KEY, num)
        self._txn.commit()
        self._env.sync(True)
        self._env.close()
        self._env = None
        self.content_hash = self._hash.hexdigest()
        return self.content_hash

    def abort(self) -> None:
        if self._env is not None:
            self._txn.abort()
            self._env.close()
            self._env = None

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        if exc_type is None:
            self.close()
        else:
            self.abort()


def write_lmdb(path, records: Iterable[tuple[str, bytes | None, bytes]],
               **kwargs) -> tuple[int, str]:
    """Write (label, hr_bytes_or_None, lr_bytes) records; returns (count, content hash)."""
    with LMDBWriter(path, **kwargs) as writer:
        for label, hr, lr in records:
            writer.add(label, lr, hr)
    return writer.count, writer.content_hash


@dataclass
class Record:
    index: int
    label: str
    lr: bytes
    hr: bytes | None


def open_environment(path: str | os.PathLike) -> lmdb.Environment:
    """Open an LMDB environment read-only, after checking it is one and is not cut off.

    ``lock=False``: published data sets come without ``lock.mdb``, often in read-only folders,
    and nothing writes while the suite reads.
    """
    path = Path(path)
    data = path / "data.mdb"
    if not path.is_dir():
        raise DataError(path, None, "not a directory (expected an LMDB environment "
                                    "directory holding data.mdb)")
    if not data.is_file():
        raise DataError(path, None, "no data.mdb here: not an LMDB environment")
    try:
        env = lmdb.open(str(path), readonly=True, lock=False, readahead=False, meminit=False,
                        subdir=True, max_readers=512)
    except lmdb.Error as err:
        raise DataError(path, None, f"corrupt or not an LMDB environment: {err}") from err
    # A cut-off data.mdb opens fine but faults (SIGBUS) when a page past the end is mapped:
    # check the file covers every page the environment claims before reading anything.
    info, stat = env.info(), env.stat()
    needed = (info["last_pgno"] + 1) * stat["psize"]
    actual = data.stat().st_size
    if actual < needed:
        env.close()
        raise DataError(path, None, f"truncated environment: data.mdb holds {actual} "
                                    f"bytes, its pages need {needed}")
    return env


class TextZoomLMDB:
    """Read-only view of one TextZoom-format split.

    Opening validates the environment (an LMDB at all, not cut off, ``num-samples`` present and
    consistent with the records); :meth:`check` decodes every record. Subclasses read other key
    layouts (``benchmark_lmdb.BenchmarkLMDB``) by overriding the class attributes below.
    """

    FORMAT = "textzoom"
    # the keys of record i's images; no HR key: an LR-only format
    lr_key = staticmethod(lr_key)
    hr_key: staticmethod | None = staticmethod(hr_key)
    # TextZoom sets are written by the suite, whose writer refuses empty labels, so one here is
    # a broken file; read-only published sets may hold them (see BenchmarkLMDB).
    empty_labels_ok = False

    def __init__(self, path: str | os.PathLike, *, ascii_only: bool = False):
        self.path = Path(path)
        self.ascii_only = ascii_only
        self._env = open_environment(self.path)
        self.num_samples, self.has_hr = self._read_header()

    # -- header --------------------------------------------------------------------------------
    def _get(self, txn, key: bytes, *, required: bool = True) -> bytes | None:
        try:
            value = txn.get(key)
        except lmdb.Error as err:
            raise DataError(self.path, key, f"corrupt environment: {err}") from err
        if value is None and required:
            raise DataError(self.path, key, "missing key")
        return value

    def _read_header(self) -> tuple[int, bool]:
        with self._env.begin() as txn:
            raw = self._get(txn, NUM_KEY)
            try:
                n = int(raw.decode("ascii").strip())
            except (UnicodeDecodeError, ValueError) as err:
                raise DataError(self.path, NUM_KEY, f"not an integer: {raw[:40]!r}") from err
            if n < 0:
                raise DataError(self.path, NUM_KEY, f"negative count {n}")
            try:
                entries = txn.stat()["entries"]
            except lmdb.Error as err:
                raise DataError(self.path, None, f"corrupt environment: {err}") from err
            if n > 0:
                for key in (label_key(1), self.lr_key(1), label_key(n), self.lr_key(n)):
                    self._get(txn, key)
                has_hr = self.hr_key is not None and txn.get(self.hr_key(1)) is not None
            else:
                has_hr = False
            # records beyond num-samples mean it disagrees with the data
            if txn.get(label_key(n + 1)) is not None:
                raise DataError(self.path, NUM_KEY,
                                f"num-samples says {n} but record {label_key(n + 1).decode()} "
                                "exists")
            per_record = 3 if has_hr else 2
            extra = entries - 1 - per_record * n
            if extra != 0:
                raise DataError(self.path, NUM_KEY,
                                f"num-samples says {n} ({per_record} keys each) but the "
                                f"environment holds {entries - 1} record keys")
        return n, has_hr

    # -- access --------------------------------------------------------------------------------
    def __len__(self) -> int:
        return self.num_samples

    def _check_index(self, index: int) -> None:
        if not 1 <= index <= self.num_samples:
            raise IndexError(f"{self.path}: index {index} outside 1..{self.num_samples}")

    def record(self, index: int, txn=None) -> Record:
        """Raw record ``index`` (1-based) with its label validated."""
        self._check_index(index)
        if txn is None:
            with self._env.begin() as own:
                return self.record(index, own)
        key = label_key(index)
        raw = self._get(txn, key)
        try:
            label = raw.decode("utf-8")
        except UnicodeDecodeError as err:
            raise DataError(self.path, key, f"label is not UTF-8: {raw[:40]!r}") from err
        if label or not self.empty_labels_ok:
            check_label(label, path=self.path, key=key, ascii_only=self.ascii_only)
        hr = self._get(txn, self.hr_key(index)) if self.has_hr else None
        lr = self._get(txn, self.lr_key(index))
        return Record(index, label, bytes(lr), None if hr is None else bytes(hr))

    def records(self, start: int = 1, stop: int | None = None) -> Iterator[Record]:
        """Records start..stop-1 (1-based, stop exclusive; default to the end)."""
        stop = self.num_samples + 1 if stop is None else stop
        with self._env.begin() as txn:
            for index in range(start, stop):
                yield self.record(index, txn)

    def load(self, index: int) -> tuple[np.ndarray, np.ndarray | None, str]:
        """(LR uint8 16x64x3, HR uint8 32x128x3 or None, label) of record ``index``."""
        rec = self.record(index)
        return self.decode(rec)

    def decode(self, rec: Record) -> tuple[np.ndarray, np.ndarray | None, str]:
        lr = decode_image(rec.lr, LR_SIZE, path=self.path, key=self.lr_key(rec.index))
        hr = None
        if rec.hr is not None:
            hr = decode_image(rec.hr, HR_SIZE, path=self.path, key=self.hr_key(rec.index))
        return lr, hr, rec.label

    def content_hash(self) -> str:
        """sha256 over every key and value in the writer's order: equals LMDBWriter's hash."""
        h = hashlib.sha256()

        def put(key: bytes, value: bytes) -> None:
            h.update(len(key).to_bytes(4, "little") + key)
            h.update(len(value).to_bytes(8, "little") + value)

        with self._env.begin() as txn:
            for index in range(1, self.num_samples + 1):
                keys = [label_key(index)] + ([self.hr_key(index)] if self.has_hr else [])
                for key in keys + [self.lr_key(index)]:
                    put(key, bytes(self._get(txn, key)))
            put(NUM_KEY, bytes(self._get(txn, NUM_KEY)))
        return h.hexdigest()

    def check(self, progress=None) -> int:
        """Decode every record; raises DataError on the first bad one. Returns the count."""
        for rec in self.records():
            self.decode(rec)
            if progress is not None:
                progress(rec.index)
        return self.num_samples

    def close(self) -> None:
        if self._env is not None:
            self._env.close()
            self._env = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
