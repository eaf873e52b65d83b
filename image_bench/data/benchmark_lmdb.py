"""The STR benchmark LMDB format, and telling it from TextZoom's.

The standard scene-text recognition benchmarks (IIIT5K, SVT, IC13, IC15, SVTP, CUTE80) are
published as LMDBs by the clovaai deep-text-recognition-benchmark and PARSeq, one environment per
subset (``evaluation/IIIT5k_3000``, ``evaluation/SVT``, ...). Their keys, 1-based:

- ``num-samples``: ASCII integer N;
- ``label-%09d``: the UTF-8 text as published (case, punctuation and spaces kept);
- ``image-%09d``: encoded image bytes of any size. There is no HR image: the set is LR-only.

Each image is read as the suite's LR input exactly like a TextZoom LR image (``lmdb_format``:
RGB, PIL bicubic to 64x16, aspect not kept), so every model sees a benchmark crop the same way.

``open_lmdb`` opens either format, deciding by the keys of record 1.
"""

from __future__ import annotations

import os

from image_bench.data.lmdb_format import (
    NUM_KEY,
    DataError,
    TextZoomLMDB,
    hr_key,
    label_key,
    lr_key,
    open_environment,
)


def image_key(index: int) -> bytes:
    return b"image-%09d" % index


class BenchmarkLMDB(TextZoomLMDB):
    """Read-only view of one STR benchmark LMDB (LR-only)."""

    FORMAT = "benchmark"
    lr_key = staticmethod(image_key)
    hr_key = None
    # A published set the user cannot fix may hold an empty label; it is read as it is and
    # skipped like every label that normalises to nothing (datasets.keep_scorable).
    empty_labels_ok = True


READERS = {"textzoom": TextZoomLMDB, "benchmark": BenchmarkLMDB}
DESCRIPTIONS = {
    "textzoom": "TextZoom format (image_lr-/image_hr-%09d)",
    "benchmark": "STR benchmark format (image-%09d)",
}


def detect_format(path: str | os.PathLike) -> str:
    """'textzoom' or 'benchmark', from which image key record 1 (or any record) has."""
    env = open_environment(path)
    try:
        with env.begin() as txn:
            if txn.get(NUM_KEY) is None:
                raise DataError(path, NUM_KEY, "missing key: neither TextZoom's LMDB format nor "
                                               "the STR benchmark format")
            if txn.get(lr_key(1)) is not None or txn.get(hr_key(1)) is not None:
                return "textzoom"
            if txn.get(image_key(1)) is not None:
                return "benchmark"
            # num-samples 0, or record 1 missing: look for any image key at all
            for key in txn.cursor().iternext(keys=True, values=False):
                if key.startswith((b"image_lr-", b"image_hr-")):
                    return "textzoom"
                if key.startswith(b"image-"):
                    return "benchmark"
            if txn.get(label_key(1)) is None and txn.stat()["entries"] == 1:
                return "textzoom"  # an empty set: nothing tells the formats apart
    finally:
        env.close()
    raise DataError(path, None, "no image_lr-/image_hr-%09d (TextZoom) nor image-%09d "
                                "(STR benchmark) keys")


def open_lmdb(path: str | os.PathLike, *, ascii_only: bool = False) -> TextZoomLMDB:
    """The reader of whichever format ``path`` holds; its ``FORMAT`` says which."""
    return READERS[detect_format(path)](path, ascii_only=ascii_only)
