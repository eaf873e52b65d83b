"""LMDBs written with the lmdb package directly, never with the suite's writer, so the tests
read files laid out the way other projects publish them."""

from __future__ import annotations

import io
from pathlib import Path

import lmdb
import numpy as np
from PIL import Image

REAL_IC15 = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "real" / "ic15-train"


def encode(image: Image.Image, fmt: str = "PNG") -> bytes:
    out = io.BytesIO()
    image.save(out, format=fmt)
    return out.getvalue()


def crop(w: int, h: int, shade: int, mode: str = "RGB") -> Image.Image:
    """A flat image of ``shade`` at any size and mode."""
    return Image.fromarray(np.full((h, w, 3), shade, np.uint8)).convert(mode)


def write_keys(path: Path, items: dict[bytes, bytes]) -> Path:
    """An LMDB holding exactly ``items``, in one transaction (odd layouts and broken files too)."""
    path.mkdir(parents=True, exist_ok=True)
    env = lmdb.open(str(path), map_size=1 << 24)
    with env.begin(write=True) as txn:
        for key, value in items.items():
            txn.put(key, value)
    env.close()
    return path


def write_benchmark(path: Path, records: list[tuple[str, bytes]]) -> Path:
    """The clovaai / PARSeq layout: num-samples, image-%09d, label-%09d, 1-based."""
    items = {b"num-samples": str(len(records)).encode()}
    for i, (label, image) in enumerate(records, 1):
        items[b"image-%09d" % i] = image
        items[b"label-%09d" % i] = label.encode("utf-8")
    write_keys(path, items)
    (path / "lock.mdb").unlink(missing_ok=True)  # as published: data.mdb alone
    return path


def write_textzoom(path: Path, records: list[tuple[str, bytes, bytes]]) -> Path:
    """TextZoom's layout: num-samples, image_hr-%09d, image_lr-%09d, label-%09d."""
    items = {b"num-samples": str(len(records)).encode()}
    for i, (label, hr, lr) in enumerate(records, 1):
        items[b"image_hr-%09d" % i] = hr
        items[b"image_lr-%09d" % i] = lr
        items[b"label-%09d" % i] = label.encode("utf-8")
    return write_keys(path, items)


def benchmark_bundle(root: Path) -> Path:
    """A folder of two benchmark-format subsets, as the bundles ship (evaluation/<SET>).

    IIIT5k: 3 crops of assorted sizes and codecs, case and punctuation in the labels, one label
    ('!!!') that normalises to nothing. SVT: 2 crops, one with an empty label.
    """
    evaluation = root / "evaluation"
    write_benchmark(evaluation / "IIIT5k", [
        ("Hello", encode(crop(100, 32, 200), "JPEG")),
        ("!!!", encode(crop(20, 8, 90, "L"))),
        ("62-03", encode(crop(300, 60, 30))),
    ])
    write_benchmark(evaluation / "SVT", [
        ("STREET", encode(crop(64, 16, 220))),
        ("", encode(crop(41, 23, 10, "P"))),
    ])
    return evaluation
