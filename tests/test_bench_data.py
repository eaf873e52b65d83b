"""bench/data.py's IC15 comparison: the statistics it prints are the ones the IC15 stand-in's
degradation was calibrated with (image_bench/data/degrade.py)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
from PIL import Image

from tests.foreign_lmdb import crop, encode, write_benchmark

BENCH_DATA = Path(__file__).resolve().parents[1] / "bench" / "data.py"


def _bench_data():
    spec = importlib.util.spec_from_file_location("bench_data", BENCH_DATA)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_crop_stats_measure_size_sharpness_and_contrast(tmp_path):
    bd = _bench_data()
    flat = encode(crop(40, 12, 128))
    stripes = np.zeros((12, 40, 3), np.uint8)
    stripes[:, ::2] = 255  # every other column white: at 64x16 still a hard edge pattern
    sharp = encode(Image.fromarray(stripes))
    stats = bd.crop_stats([flat, sharp], ["ab", "abcd"])
    assert stats["height"].tolist() == [12, 12] and stats["width"].tolist() == [40, 40]
    assert stats["label_length"].tolist() == [2, 4]
    assert stats["sharpness"][0] < 1e-6 and stats["contrast"][0] < 1e-6  # a flat grey crop
    assert stats["sharpness"][1] > 0.1 and stats["contrast"][1] > 0.2


def test_ic15_compares_real_crops_with_the_stand_in(tmp_path):
    bd = _bench_data()
    real = write_benchmark(tmp_path / "real", [("word", encode(crop(30, 10, 90))),
                                               ("tall", encode(crop(60, 32, 200)))])
    result = bd.ic15(str(real), max_height=16, n=4, seed=0)
    assert result["real"]["n"] == 1  # the 32-pixel crop is left out
    assert result["real"]["height"]["median"] == 10
    assert result["stand_in"]["n"] == 4
    assert result["stand_in"]["sharpness"]["median"] > 0  # generated crops have edges
