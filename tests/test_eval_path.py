"""`image-bench eval RUN --data PATH`: LMDBs the suite never wrote, one row per subset, the
weighted and plain averages, eval-<folder>.json; recognizer, SR + recognizer and IMAGE runs."""

import json

import pytest
from click.testing import CliRunner

from image_bench.cli import main
from tests.foreign_lmdb import REAL_IC15, benchmark_bundle, crop, encode, write_benchmark
from tests.tiny_runs import make_run


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("IMAGE_BENCH_CACHE", str(tmp_path / "cache"))


def _eval(run, data, *extra):
    res = CliRunner().invoke(main, ["eval", str(run), "--data", str(data), "--device", "cpu",
                                    *map(str, extra)])
    assert res.exit_code == 0, res.output
    return res


def test_folder_of_subsets_gives_a_row_each_and_both_averages(tmp_path):
    bundle = benchmark_bundle(tmp_path)
    run = make_run(tmp_path / "rec", "test-brightness")
    res = _eval(run, bundle)
    assert "IIIT5k: STR benchmark format (image-%09d), 3 records, LR-only; 2 scored, 1 skipped" \
        in res.output
    assert "SVT: STR benchmark format (image-%09d), 2 records, LR-only; 1 scored, 1 skipped" \
        in res.output
    out = json.loads((run / "eval-evaluation.json").read_text())
    rows = out["splits"]
    assert {k: r["count"] for k, r in rows.items()} == {"IIIT5k": 2, "SVT": 1}
    # the reader says 'light' for shades above 128: IIIT5k 'Hello' (200) and '62-03' (30)
    # are both wrong, SVT 'STREET' (220) too; so all zero, and the averages agree
    assert [r["accuracy"] for r in rows.values()] == [0.0, 0.0]
    avg = out["average"]
    assert avg["count"] == 3 and avg["accuracy_weighted"] == 0.0 and avg["accuracy_mean"] == 0.0
    assert out["protocol"]["identities"]["SVT"]["format"] == "benchmark"


def test_weighted_and_plain_mean_differ_as_defined(tmp_path):
    root = tmp_path / "bench"
    write_benchmark(root / "A", [("light", encode(crop(50, 20, 250))),
                                 ("light", encode(crop(50, 20, 5))),
                                 ("Dark", encode(crop(50, 20, 5))),
                                 ("dark", encode(crop(50, 20, 5)))])  # 3 of 4
    write_benchmark(root / "B", [("LIGHT", encode(crop(33, 11, 240, "L")))])  # 1 of 1
    run = make_run(tmp_path / "rec", "test-brightness")
    _eval(run, root)
    out = json.loads((run / "eval-bench.json").read_text())
    assert out["splits"]["A"]["accuracy"] == 0.75 and out["splits"]["B"]["accuracy"] == 1.0
    assert out["average"]["accuracy_weighted"] == pytest.approx(4 / 5)
    assert out["average"]["accuracy_mean"] == pytest.approx((0.75 + 1.0) / 2)


def test_sr_model_with_recognizer_on_an_lr_only_set(tmp_path):
    root = write_benchmark(tmp_path / "words", [("dark", encode(crop(40, 12, 250)))])
    sr = make_run(tmp_path / "sr", "test-upsampler")  # inverts: a light crop reads 'dark'
    rec = make_run(tmp_path / "rec", "test-brightness")
    _eval(sr, root, "--recognizer", rec)
    row = json.loads((sr / "eval-words.json").read_text())["splits"]["words"]
    assert row["accuracy"] == 1.0 and row["psnr"] is None  # LR-only: nothing to compare


def test_split_option_picks_subsets_and_names_unknown_ones(tmp_path):
    bundle = benchmark_bundle(tmp_path)
    run = make_run(tmp_path / "rec", "test-brightness")
    _eval(run, bundle, "--split", "SVT")
    assert list(json.loads((run / "eval-evaluation.json").read_text())["splits"]) == ["SVT"]
    res = CliRunner().invoke(main, ["eval", str(run), "--data", str(bundle), "--split", "X"])
    assert res.exit_code == 2 and "--split X" in res.output


@pytest.mark.skipif(not (REAL_IC15 / "data.mdb").is_file(), reason="no real IC15 crops")
def test_real_ic15_train_recognizer_only(tmp_path):
    run = make_run(tmp_path / "rec", "test-brightness")
    res = _eval(run, REAL_IC15)
    assert "ic15-train: STR benchmark format (image-%09d), 4468 records, LR-only; 4467 scored, " \
           "1 skipped" in res.output
    out = json.loads((run / "eval-ic15-train.json").read_text())
    assert out["splits"]["ic15-train"]["count"] == 4467 and out["average"]["count"] == 4467


@pytest.mark.parametrize("model", ["crnn", "svtr", "image-1"])
def test_suite_models_evaluate_on_a_benchmark_path(tmp_path, model):
    """The full-size CRNN, SVTR and IMAGE (initial weights) read a foreign benchmark LMDB."""
    bundle = benchmark_bundle(tmp_path)
    run = make_run(tmp_path / model, model)
    _eval(run, bundle, "--batch-size", 2)
    out = json.loads((run / "eval-evaluation.json").read_text())
    assert {k: r["count"] for k, r in out["splits"].items()} == {"IIIT5k": 2, "SVT": 1}
    assert all(r["accuracy"] is not None and r["psnr"] is None for r in out["splits"].values())
    if model == "image-1":  # IMAGE's intermediate p_1 is scored too
        assert "p_1" in out["average"]["steps"]


def test_a_subset_with_nothing_to_score_is_left_out(tmp_path):
    root = tmp_path / "bench"
    write_benchmark(root / "A", [("dark", encode(crop(50, 20, 5)))])
    write_benchmark(root / "B", [("?!", encode(crop(50, 20, 5))), ("", encode(crop(9, 9, 5)))])
    run = make_run(tmp_path / "rec", "test-brightness")
    res = _eval(run, root)
    assert "B: STR benchmark format (image-%09d), 2 records, LR-only; 0 scored, 2 skipped" \
           " (label normalises to nothing); left out: nothing to score" in res.output
    out = json.loads((run / "eval-bench.json").read_text())
    assert list(out["splits"]) == ["A"] and out["splits"]["A"]["accuracy"] == 1.0
    only_b = CliRunner().invoke(main, ["eval", str(run), "--data", str(root / "B")])
    assert only_b.exit_code == 1 and "no record with a scorable label" in only_b.output
