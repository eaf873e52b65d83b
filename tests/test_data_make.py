"""Stand-in generation: determinism, worker independence, severity order, datasets by name."""

import time

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from image_bench.data import datasets, make
from image_bench.data.lmdb_format import HR_SIZE, LR_SIZE, TextZoomLMDB, decode_image
from image_bench.data.render import sample_text

TINY = {"synth": {"train": 12, "val": 4},
        "textzoom": {"train1": 30, "train2": 10, "test/easy": 5, "test/medium": 4,
                     "test/hard": 3},
        "ic15-352": {".": 6}}


@pytest.fixture
def tiny(monkeypatch, tmp_path):
    monkeypatch.setattr(make, "split_sizes", lambda name, profile: TINY[name])
    monkeypatch.setenv("IMAGE_BENCH_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("IMAGE_BENCH_DATA", raising=False)
    return tmp_path


def test_same_seed_same_bytes_any_worker_count(tiny):
    a = make.make_set("textzoom", tiny / "a", seed=3, workers=1, quiet=True, chunk=7)
    b = make.make_set("textzoom", tiny / "b", seed=3, workers=2, quiet=True, chunk=5)
    c = make.make_set("textzoom", tiny / "c", seed=4, workers=1, quiet=True)
    assert a["splits"] == b["splits"]
    assert a["splits"]["train1"]["hash"] != c["splits"]["train1"]["hash"]
    with TextZoomLMDB(tiny / "a" / "textzoom" / "test" / "easy") as db:
        assert db.content_hash() == a["splits"]["test/easy"]["hash"] and len(db) == 5
    # an identical set is not regenerated
    again = make.make_set("textzoom", tiny / "a", seed=3, workers=1, quiet=True)
    assert again["seconds"] == a["seconds"]


def test_labels_are_usable():
    rng = np.random.default_rng(0)
    texts = [sample_text(rng) for _ in range(300)]
    assert all(1 <= len(t) <= 20 and t.isascii() for t in texts)
    assert any(t.isdigit() for t in texts) and any(t.isupper() for t in texts)
    assert any(t.islower() for t in texts)


def test_severity_monotone():
    from image_bench.metrics.image_quality import psnr

    result = {}
    for severity in ("easy", "medium", "hard"):
        lrs, hrs = [], []
        for i in range(60):
            _, hr, lr = make.make_sample("textzoom", f"test/{severity}", i, 0)
            lrs.append(decode_image(lr, LR_SIZE))
            hrs.append(decode_image(hr, HR_SIZE))
        lr = torch.from_numpy(np.stack(lrs)).permute(0, 3, 1, 2).float() / 255
        hr = torch.from_numpy(np.stack(hrs)).permute(0, 3, 1, 2).float() / 255
        result[severity] = psnr(F.interpolate(lr, size=(32, 128), mode="bicubic"), hr)
    assert result["easy"] > result["medium"] > result["hard"], result
    assert 15 < result["hard"] and result["easy"] < 27, result


def test_resolve_standin(tiny):
    train = datasets.resolve("textzoom", "train", "smoke")
    val = datasets.resolve("textzoom", "val", "smoke")
    easy = datasets.resolve("textzoom", "test/easy", "smoke")
    assert len(val) == 32 and len(train) == 40 - 32 and len(easy) == 5
    assert train.lr.dtype == torch.uint8 and tuple(train.lr.shape[1:]) == (3, 16, 64)
    assert tuple(train.hr.shape[1:]) == (3, 32, 128)
    assert not set(map(tuple, train.lr.flatten(1).tolist())) & set(
        map(tuple, val.lr.flatten(1).tolist()))
    ident = easy.identity
    assert ident["source"] == "stand-in" and ident["profile"] == "smoke" and ident["count"] == 5
    assert {"name", "split", "hash", "path"} <= set(ident)
    assert list((tiny / "cache").rglob("decoded-*.pt"))
    again = datasets.resolve("textzoom", "test/easy", "smoke")
    assert torch.equal(again.lr, easy.lr) and again.identity == ident
    ic = datasets.resolve("ic15-352", "test", "smoke")
    assert ic.hr is None and len(ic) == 6
    assert len(datasets.resolve("synth", "val", "smoke")) == 4


def test_unknown_names(tiny):
    with pytest.raises(KeyError, match="known: synth, textzoom, ic15-352"):
        datasets.resolve("mnist", "train")
    with pytest.raises(KeyError, match="test/easy"):
        datasets.resolve("textzoom", "test")
    assert datasets.splits("ic15-352") == ["test"]


def test_resolve_real_root_drops_empty_labels(tiny):
    from image_bench.data.lmdb_format import encode_image, write_lmdb

    img = encode_image(np.full((20, 50, 3), 120, np.uint8))
    root = tiny / "real"
    write_lmdb(root / "TextZoom" / "test" / "easy",
               [("Good", img, img), ("!!!", img, img), ("ok2", img, img)], ascii_only=True)
    ts = datasets.resolve("textzoom", "test/easy", data_root=str(root))
    assert ts.labels == ["Good", "ok2"] and ts.identity["source"] == "real"
    assert ts.identity["dropped"] == 1 and ts.identity["profile"] is None
    with pytest.raises(Exception, match="lacks split"):
        datasets.resolve("textzoom", "test/hard", data_root=str(root))


def _slow_chunk(args):
    time.sleep(0.5)
    return [("word", None, b"")]


def test_a_stop_drops_the_queued_chunks(tmp_path, monkeypatch):
    """A stop signal (or an error) in the middle of generation ends it at once: the pool's queued
    chunks are dropped, not worked off first, and no half-made set is left in place."""
    from image_bench.engine.interrupt import Stopped

    def stop(*args, **kwargs):
        raise Stopped(15)

    monkeypatch.setattr(make, "_chunk", _slow_chunk)  # the forked workers inherit the patch
    monkeypatch.setattr(make.LMDBWriter, "add", stop)  # the stop lands at the first record
    t0 = time.perf_counter()
    with pytest.raises(Stopped):
        make.make_set("synth", tmp_path, profile="smoke", workers=2, quiet=True, chunk=1)
    # 448 queued chunks of 0.5 s on two workers would take ~112 s to work off
    assert time.perf_counter() - t0 < 20
    assert not (tmp_path / "synth").exists()
