"""Import an image folder plus ``labels.tsv`` into a TextZoom-format LMDB.

``labels.tsv`` holds one ``filename<TAB>text`` per line (blank lines and lines starting with
``#`` are skipped). Images are stored with their original bytes (after checking they decode);
with an HR folder, each LR file must have an HR file of the same name.
"""

from __future__ import annotations

import io
from pathlib import Path

from PIL import Image, UnidentifiedImageError

from image_bench.data.lmdb_format import DataError, LMDBWriter, check_label


def read_labels(path: Path, *, ascii_only: bool) -> list[tuple[str, str]]:
    """(filename, text) pairs; every problem names the file and the line."""
    if not path.is_file():
        raise DataError(path, None, "labels file not found")
    rows = []
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as err:
        raise DataError(path, None, f"not UTF-8: {err}") from err
    for number, line in enumerate(lines, 1):
        if not line.strip() or line.startswith("#"):
            continue
        key = f"line {number}"
        if "\t" not in line:
            raise DataError(path, key, f"expected filename<TAB>text, got {line[:60]!r}")
        name, text = line.split("\t", 1)
        check_label(text, path=path, key=key, ascii_only=ascii_only)
        rows.append((name.strip(), text))
    if not rows:
        raise DataError(path, None, "no labelled images")
    return rows


def _image_bytes(path: Path) -> bytes:
    if not path.is_file():
        raise DataError(path.parent, path.name, "image file not found")
    raw = path.read_bytes()
    try:
        with Image.open(io.BytesIO(raw)) as im:
            im.convert("RGB").load()
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as err:
        raise DataError(path.parent, path.name, f"undecodable image: {err}") from err
    return raw


def import_folder(image_dir, labels=None, hr_dir=None, out=None, *, ascii_only: bool = True,
                  overwrite: bool = False) -> tuple[int, str]:
    """Write ``out`` from LR images in ``image_dir`` (and HR in ``hr_dir``); returns
    (count, content hash). Nothing is left at ``out`` if any record fails."""
    image_dir = Path(image_dir)
    labels = Path(labels) if labels else image_dir / "labels.tsv"
    rows = read_labels(labels, ascii_only=ascii_only)
    writer = LMDBWriter(out, ascii_only=ascii_only, overwrite=overwrite)
    try:
        for name, text in rows:
            lr = _image_bytes(image_dir / name)
            hr = _image_bytes(Path(hr_dir) / name) if hr_dir else None
            writer.add(text, lr, hr)
    except BaseException:
        writer.abort()
        for part in ("data.mdb", "lock.mdb"):
            (Path(out) / part).unlink(missing_ok=True)
        raise
    return writer.count, writer.close()
