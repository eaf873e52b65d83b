"""TextZoom LMDB format: round trip, a raw-lmdb fixture in TextZoom's layout, every error case."""

import io

import lmdb
import numpy as np
import pytest
from PIL import Image

from image_bench.data.lmdb_format import (
    HR_SIZE,
    LR_SIZE,
    DataError,
    LMDBWriter,
    TextZoomLMDB,
    encode_image,
    write_lmdb,
)


def _img(h, w, value, fmt="PNG"):
    arr = np.full((h, w, 3), value, np.uint8)
    arr[:, : w // 2] = 255 - value
    return encode_image(arr, fmt)


def _raw_textzoom(path, records, num=None, extra=None):
    """Write an LMDB with raw lmdb calls, exactly as TextZoom's files are laid out."""
    env = lmdb.open(str(path), map_size=1 << 24)
    with env.begin(write=True) as txn:
        for i, (label, hr, lr) in enumerate(records, 1):
            txn.put(b"label-%09d" % i, label.encode())
            if hr is not None:
                txn.put(b"image_hr-%09d" % i, hr)
            txn.put(b"image_lr-%09d" % i, lr)
        txn.put(b"num-samples", str(len(records) if num is None else num).encode())
        for k, v in (extra or {}).items():
            txn.put(k, v)
    env.close()


def test_round_trip(tmp_path):
    recs = [("Hello", _img(40, 150, 30), _img(18, 70, 30, "JPEG")),
            ("x-7!", _img(32, 100, 200), _img(12, 40, 200))]
    count, digest = write_lmdb(tmp_path / "s", recs)
    assert count == 2
    with TextZoomLMDB(tmp_path / "s") as db:
        assert len(db) == 2 and db.has_hr
        lr, hr, label = db.load(1)
        assert label == "Hello"
        assert lr.shape == (LR_SIZE[1], LR_SIZE[0], 3) and hr.shape == (HR_SIZE[1], HR_SIZE[0], 3)
        # PNG is lossless: the decoded HR is the bicubic resize of the stored pixels
        want = Image.open(io.BytesIO(recs[0][1])).convert("RGB").resize(HR_SIZE, Image.BICUBIC)
        assert np.array_equal(hr, np.asarray(want))
        assert db.record(2).label == "x-7!" and db.record(2).hr == recs[1][1]
        assert db.content_hash() == digest
        assert db.check() == 2


def test_raw_fixture_in_textzoom_layout(tmp_path):
    _raw_textzoom(tmp_path / "easy", [("Word", _img(64, 200, 90, "JPEG"), _img(20, 60, 90))])
    with TextZoomLMDB(tmp_path / "easy") as db:
        lr, hr, label = db.load(1)
    assert (label, lr.shape, hr.shape) == ("Word", (16, 64, 3), (32, 128, 3))


def test_lr_only(tmp_path):
    _raw_textzoom(tmp_path / "ic15", [("a", None, _img(10, 30, 9)), ("b", None, _img(10, 30, 9))])
    with TextZoomLMDB(tmp_path / "ic15") as db:
        lr, hr, label = db.load(2)
    assert hr is None and label == "b" and lr.shape == (16, 64, 3)


def test_missing_key_names_it(tmp_path):
    env = lmdb.open(str(tmp_path / "m"), map_size=1 << 24)
    with env.begin(write=True) as txn:
        txn.put(b"num-samples", b"2")
        for i in (1, 2):
            txn.put(b"label-%09d" % i, b"ab")
            txn.put(b"image_hr-%09d" % i, _img(32, 64, 1))
        txn.put(b"image_lr-%09d" % 1, _img(16, 32, 1))
        txn.put(b"image_xx-%09d" % 2, b"junk")  # keeps the key count consistent
    env.close()
    with pytest.raises(DataError) as err:
        TextZoomLMDB(tmp_path / "m")
    assert err.value.key == "image_lr-000000002" and "missing key" in str(err.value)
    assert str(tmp_path / "m") in str(err.value)


def test_undecodable_image(tmp_path):
    _raw_textzoom(tmp_path / "u", [("ok", _img(32, 64, 5), b"not an image at all")])
    with TextZoomLMDB(tmp_path / "u") as db, pytest.raises(DataError) as err:
        db.check()
    assert err.value.key == "image_lr-000000001" and "undecodable" in str(err.value)


def test_num_samples_disagrees(tmp_path):
    recs = [("a", _img(32, 64, 5), _img(16, 32, 5))] * 3
    _raw_textzoom(tmp_path / "short", recs, num=2)
    with pytest.raises(DataError, match="num-samples says 2") as err:
        TextZoomLMDB(tmp_path / "short")
    assert err.value.key == "num-samples"
    _raw_textzoom(tmp_path / "long", recs, num=5)
    with pytest.raises(DataError) as err:
        TextZoomLMDB(tmp_path / "long")
    assert err.value.key == "label-000000005"
    _raw_textzoom(tmp_path / "nan", recs, num="three")
    with pytest.raises(DataError, match="not an integer"):
        TextZoomLMDB(tmp_path / "nan")


def test_empty_and_non_ascii_labels(tmp_path):
    _raw_textzoom(tmp_path / "e", [("", _img(32, 64, 5), _img(16, 32, 5))])
    with TextZoomLMDB(tmp_path / "e") as db, pytest.raises(DataError, match="empty label") as err:
        db.load(1)
    assert err.value.key == "label-000000001"
    _raw_textzoom(tmp_path / "u", [("café", _img(32, 64, 5), _img(16, 32, 5))])
    with TextZoomLMDB(tmp_path / "u") as db:
        assert db.load(1)[2] == "café"  # UTF-8 is TextZoom's label encoding
    with TextZoomLMDB(tmp_path / "u", ascii_only=True) as db:
        with pytest.raises(DataError, match="non-ASCII"):
            db.load(1)
    with pytest.raises(DataError, match="non-ASCII"), LMDBWriter(tmp_path / "w") as w:
        w.add("naïve", _img(16, 32, 5), _img(32, 64, 5))
    with pytest.raises(DataError, match="empty label"), LMDBWriter(tmp_path / "w2") as w:
        w.add("", _img(16, 32, 5))


def test_not_an_lmdb_and_truncated(tmp_path):
    with pytest.raises(DataError, match="no data.mdb"):
        TextZoomLMDB(tmp_path)
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "data.mdb").write_bytes(b"hello, not lmdb" * 500)
    with pytest.raises(DataError, match="corrupt or not an LMDB"):
        TextZoomLMDB(bad)
    recs = [("w", _img(64, 256, i), _img(32, 128, i)) for i in range(60)]
    _raw_textzoom(tmp_path / "cut", recs)
    data = tmp_path / "cut" / "data.mdb"
    size = data.stat().st_size
    with open(data, "r+b") as f:
        f.truncate(size // 2)
    with pytest.raises(DataError, match="truncated|corrupt"):
        TextZoomLMDB(tmp_path / "cut")
