"""Reading LMDBs the suite never wrote: the STR benchmark format (the real ICDAR 2015 crops and
small files written with lmdb directly), TextZoom's format, and the folder-of-subsets layout."""

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from image_bench.data import paths
from image_bench.data.benchmark_lmdb import BenchmarkLMDB, detect_format, open_lmdb
from image_bench.data.cli import data
from image_bench.data.lmdb_format import DataError, TextZoomLMDB, to_rgb
from tests.foreign_lmdb import (
    REAL_IC15,
    benchmark_bundle,
    crop,
    encode,
    write_benchmark,
    write_keys,
    write_textzoom,
)

needs_real = pytest.mark.skipif(not (REAL_IC15 / "data.mdb").is_file(),
                                reason=f"the real IC15 crops are not at {REAL_IC15}")


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("IMAGE_BENCH_CACHE", str(tmp_path / "cache"))


@needs_real
def test_real_ic15_train_reads_as_benchmark_format(tmp_path):
    assert not (REAL_IC15 / "lock.mdb").exists()  # opened read-only without a lock file
    assert detect_format(REAL_IC15) == "benchmark"
    with open_lmdb(REAL_IC15) as db:
        assert isinstance(db, BenchmarkLMDB) and len(db) == 4468 and not db.has_hr
        lr, hr, label = db.load(1)
        assert label == "Genaxis Theatre" and lr.shape == (16, 64, 3) and hr is None
    (sub,) = paths.inspect_lmdbs(REAL_IC15)
    assert (sub.name, sub.format, sub.records) == ("ic15-train", "benchmark", 4468)
    ts = paths.load_subset(sub, "ic15-train")
    # one label ('...') normalises to nothing under the protocol: skipped and counted
    assert len(ts) == 4467 and ts.identity["dropped"] == 1 and ts.hr is None
    assert ts.lr.shape == (4467, 3, 16, 64) and ts.lr.dtype == torch.uint8
    assert ts.labels[0] == "Genaxis Theatre" and "..." not in ts.labels


def test_benchmark_bundle_subsets_counts_and_labels(tmp_path):
    bundle = benchmark_bundle(tmp_path)
    found = paths.find_lmdbs(bundle)
    assert list(found) == ["IIIT5k", "SVT"]
    subs = paths.inspect_lmdbs(bundle)
    assert [(s.name, s.format, s.records, s.has_hr) for s in subs] == [
        ("IIIT5k", "benchmark", 3, False), ("SVT", "benchmark", 2, False)]
    iiit = paths.load_subset(subs[0], "evaluation")
    # case and punctuation kept as published; '!!!' dropped; every size read at 16x64
    assert iiit.labels == ["Hello", "62-03"] and iiit.identity["dropped"] == 1
    assert iiit.lr.shape == (2, 3, 16, 64)
    assert iiit.lr[0].float().mean().item() == pytest.approx(200, abs=3)  # the JPEG's shade
    svt = paths.load_subset(subs[1], "evaluation")
    assert svt.labels == ["STREET"] and svt.identity["dropped"] == 1  # the empty label
    assert svt.identity["name"] == "evaluation" and svt.identity["split"] == "SVT"


def test_textzoom_format_detected_with_hr(tmp_path):
    env = write_textzoom(tmp_path / "tz", [
        ("Word", encode(crop(128, 32, 180)), encode(crop(64, 16, 180))),
        ("two", encode(crop(90, 30, 60)), encode(crop(45, 15, 60))),
    ])
    assert detect_format(env) == "textzoom"
    with open_lmdb(env) as db:
        assert type(db) is TextZoomLMDB and len(db) == 2 and db.has_hr
    (sub,) = paths.inspect_lmdbs(env)
    ts = paths.load_subset(sub, "tz")
    assert ts.hr.shape == (2, 3, 32, 128) and ts.labels == ["Word", "two"]


def test_unknown_layouts_and_no_lmdb_are_named(tmp_path):
    write_keys(tmp_path / "odd", {b"num-samples": b"1", b"label-000000001": b"x",
                                  b"picture-000000001": b"y"})
    with pytest.raises(DataError, match="nor image-%09d"):
        detect_format(tmp_path / "odd")
    (tmp_path / "none").mkdir()
    with pytest.raises(DataError, match="no LMDB environment"):
        paths.find_lmdbs(tmp_path / "none")


def test_benchmark_reader_names_an_undecodable_image(tmp_path):
    env = write_benchmark(tmp_path / "b", [("ok", encode(crop(30, 10, 5))), ("bad", b"nope")])
    with open_lmdb(env) as db, pytest.raises(DataError) as err:
        db.check()
    assert err.value.key == "image-000000002"


def test_to_rgb_handles_alpha_palette_and_16_bit():
    clear = Image.new("RGBA", (8, 4), (0, 0, 0, 0))  # black text colour, fully transparent
    assert np.asarray(to_rgb(clear)).min() == 255  # on white, as a viewer shows it
    grey16 = Image.fromarray(np.full((4, 8), 40000, np.uint16))
    assert np.asarray(to_rgb(grey16))[0, 0, 0] == round(40000 * 255 / 65535)
    pal = crop(8, 4, 77).convert("P")
    assert np.asarray(to_rgb(pal)).shape == (4, 8, 3)
    assert to_rgb(crop(8, 4, 9, "L")).mode == "RGB"


def test_data_info_prints_format_and_unscorable(tmp_path):
    bundle = benchmark_bundle(tmp_path)
    res = CliRunner().invoke(data, ["info", str(bundle)])
    assert res.exit_code == 0, res.output
    lines = res.output.splitlines()
    assert "IIIT5k: STR benchmark format (image-%09d), 3 records, LR-only" in lines[0]
    assert "1 label(s) normalise to nothing" in lines[0] and "SVT" in lines[1]
    empty = tmp_path / "empty"
    empty.mkdir()
    res = CliRunner().invoke(data, ["info", str(empty)])
    assert res.exit_code == 2 and "no LMDB environment" in res.output


def test_data_show_takes_a_path(tmp_path):
    bundle = benchmark_bundle(tmp_path)
    res = CliRunner().invoke(data, ["show", str(bundle), "--out", str(tmp_path / "fig")])
    assert res.exit_code == 0, res.output
    assert sorted(p.name for p in (tmp_path / "fig").iterdir()) == [
        "evaluation-IIIT5k.png", "evaluation-SVT.png"]
    assert "evaluation-SVT.png  (path, 1 samples)" in res.output
