"""`image-bench data import / info`: a good import and each error case, named by file and key."""

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from image_bench.data.cli import data
from image_bench.data.lmdb_format import TextZoomLMDB
from tests.foreign_lmdb import write_keys


def _folder(tmp_path, names=("a.png", "b.jpg"), hr=True):
    lr_dir, hr_dir = tmp_path / "lr", tmp_path / "hr"
    lr_dir.mkdir()
    hr_dir.mkdir()
    for i, name in enumerate(names):
        Image.fromarray(np.full((14, 50, 3), 40 * i, np.uint8)).save(lr_dir / name)
        if hr:
            Image.fromarray(np.full((30, 100, 3), 40 * i, np.uint8)).save(hr_dir / name)
    return lr_dir, hr_dir


def _run(*args):
    return CliRunner().invoke(data, [str(a) for a in args])


def test_import_then_info(tmp_path):
    lr_dir, hr_dir = _folder(tmp_path)
    (lr_dir / "labels.tsv").write_text("a.png\tHello\n\n# comment\nb.jpg\tW0rld!\n")
    out = tmp_path / "db"
    result = _run("import", lr_dir, "--hr-dir", hr_dir, "--out", out)
    assert result.exit_code == 0, result.output
    with TextZoomLMDB(out) as db:
        assert len(db) == 2 and db.has_hr and db.record(2).label == "W0rld!"
        assert db.record(1).lr == (lr_dir / "a.png").read_bytes()  # original bytes kept
    info = _run("info", out)
    assert info.exit_code == 0 and "2 records, LR+HR" in info.output
    lr_only = _run("import", lr_dir, "--out", tmp_path / "db2")
    assert lr_only.exit_code == 0 and "LR-only" in lr_only.output


@pytest.mark.parametrize("labels,files,expect", [
    ("a.png Hello\n", ("a.png",), "line 1"),  # no tab
    ("a.png\t\n", ("a.png",), "empty label"),
    ("a.png\tcafé\n", ("a.png",), "non-ASCII"),
    ("zz.png\tHello\n", ("a.png",), "zz.png"),  # missing image file
])
def test_import_errors(tmp_path, labels, files, expect):
    lr_dir, _ = _folder(tmp_path, files, hr=False)
    (lr_dir / "labels.tsv").write_text(labels)
    result = _run("import", lr_dir, "--out", tmp_path / "db")
    assert result.exit_code == 1 and expect in result.output, result.output
    assert not (tmp_path / "db" / "data.mdb").exists()  # nothing half-written


def test_import_undecodable_and_missing_hr(tmp_path):
    lr_dir, hr_dir = _folder(tmp_path, ("a.png",))
    (lr_dir / "bad.png").write_bytes(b"\x89PNG broken")
    (lr_dir / "labels.tsv").write_text("bad.png\tHi\n")
    result = _run("import", lr_dir, "--out", tmp_path / "db")
    assert result.exit_code == 1 and "bad.png" in result.output and "undecodable" in result.output
    (lr_dir / "labels.tsv").write_text("a.png\tHi\n")
    (hr_dir / "a.png").unlink()
    result = _run("import", lr_dir, "--hr-dir", hr_dir, "--out", tmp_path / "db")
    assert result.exit_code == 1 and "a.png" in result.output and "not found" in result.output


def test_info_names_failing_key(tmp_path):
    write_keys(tmp_path / "x", {b"num-samples": b"1", b"label-000000001": b"word",
                                b"image_lr-000000001": b"garbage"})
    result = _run("info", tmp_path)
    assert result.exit_code == 1 and "image_lr-000000001" in result.output
