"""`image-bench read`: one PATH<TAB>TEXT line per image of any size and mode, SR images and
IMAGE's steps under --out, unreadable files named and skipped, and the TSV imports back."""

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from image_bench.cli import main
from image_bench.data.lmdb_format import TextZoomLMDB
from tests.foreign_lmdb import crop
from tests.tiny_runs import make_run


@pytest.fixture
def photos(tmp_path, monkeypatch):
    """Light and dark images in assorted sizes, codecs and modes, one broken, one not an
    image; the test runs inside tmp_path so that the printed paths are relative."""
    monkeypatch.chdir(tmp_path)
    folder = tmp_path / "photos"
    (folder / "sub").mkdir(parents=True)
    crop(89, 14, 230).save(folder / "light.png")
    crop(400, 100, 20).save(folder / "dark_big.jpg", quality=90)
    crop(7, 5, 240, "L").save(folder / "sub" / "light_grey.png")
    # transparent black: convert('RGB') would make it black, a viewer shows white
    Image.new("RGBA", (34, 25), (0, 0, 0, 0)).save(folder / "clear.png")
    crop(63, 32, 15).convert("P").save(folder / "dark_palette.gif")
    # 16-bit dark grey: PIL's plain convert('RGB') would clip it to white
    Image.fromarray(np.full((14, 89), 5000, np.uint16)).save(folder / "dark16.png")
    (folder / "broken.jpg").write_bytes(b"\xff\xd8 not a jpeg")
    (folder / "notes.txt").write_text("skipped: not an image suffix")
    return folder


EXPECTED = {"photos/clear.png": "light", "photos/dark16.png": "dark",
            "photos/dark_big.jpg": "dark", "photos/dark_palette.gif": "dark",
            "photos/light.png": "light", "photos/sub/light_grey.png": "light"}


def _read(*args):
    return CliRunner().invoke(main, ["read", *map(str, args), "--device", "cpu"])


def test_recognizer_prints_one_tsv_line_per_readable_image(tmp_path, photos):
    run = make_run(tmp_path / "rec", "test-brightness")
    res = _read(run, "photos")
    assert res.exit_code == 1  # the broken file
    assert "skipped photos/broken.jpg: undecodable image" in res.stderr
    assert "1 of 7 file(s) could not be read" in res.stderr
    lines = res.stdout.splitlines()
    assert dict(line.split("\t") for line in lines) == EXPECTED
    assert len(lines) == len(EXPECTED)


def test_tsv_imports_back(tmp_path, photos):
    run = make_run(tmp_path / "rec", "test-brightness")
    (photos / "broken.jpg").unlink()
    res = _read(run, "photos")
    assert res.exit_code == 0, res.output
    (tmp_path / "labels.tsv").write_text(res.stdout)
    imported = CliRunner().invoke(main, ["data", "import", ".", "--labels", "labels.tsv",
                                         "--out", "db"])
    assert imported.exit_code == 0, imported.output
    with TextZoomLMDB(tmp_path / "db") as db:
        assert [db.record(i).label for i in range(1, len(db) + 1)] == list(EXPECTED.values())


def test_sr_model_writes_its_images_and_reads_with_a_recognizer(tmp_path, photos):
    sr = make_run(tmp_path / "sr", "test-upsampler")  # inverts the image
    rec = make_run(tmp_path / "rec", "test-brightness")
    res = _read(sr, "photos/light.png", "photos/sub", "--recognizer", rec, "--out", "sr")
    assert res.exit_code == 0, res.output
    assert res.stdout.splitlines() == ["photos/light.png\tdark", "photos/sub/light_grey.png\tdark"]
    for name in ("light.sr.png", "light_grey.sr.png"):
        with Image.open(tmp_path / "sr" / name) as im:
            assert im.size == (128, 32) and im.mode == "RGB"


def test_joint_model_writes_steps(tmp_path, photos):
    joint = make_run(tmp_path / "joint", "test-joint")
    res = _read(joint, "photos/light.png", "photos/dark_big.jpg", "--out", "o", "--steps")
    assert res.exit_code == 0, res.output
    assert sorted(p.name for p in (tmp_path / "o").iterdir()) == [
        "dark_big.I_1.png", "dark_big.sr.png", "light.I_1.png", "light.sr.png", "steps.tsv"]
    # p_1 reads the inverted first image; the final text reads the SR image
    assert (tmp_path / "o" / "steps.tsv").read_text().splitlines() == [
        "# path\tp_1\tfinal", "photos/light.png\tdark\tlight", "photos/dark_big.jpg\tlight\tdark"]


def test_same_names_from_two_folders_do_not_overwrite(tmp_path, photos):
    (tmp_path / "more").mkdir()
    crop(20, 10, 10).save(tmp_path / "more" / "light.png")
    joint = make_run(tmp_path / "joint", "test-joint")
    res = _read(joint, "photos/light.png", "more/light.png", "--out", "o")
    assert res.exit_code == 0, res.output
    assert sorted(p.name for p in (tmp_path / "o").iterdir()) == ["light-2.sr.png",
                                                                 "light.sr.png"]


@pytest.mark.parametrize("model,extra,message", [
    ("test-upsampler", [], "give --recognizer RUN"),
    ("test-brightness", ["--out", "o"], "makes no SR image"),
    ("test-brightness", ["--steps"], "--steps: needs IMAGE"),
])
def test_options_that_do_not_fit_the_model_are_usage_errors(tmp_path, photos, model, extra,
                                                            message):
    run = make_run(tmp_path / "run", model)
    res = _read(run, "photos", *extra)
    assert res.exit_code == 2 and message in res.output and "Traceback" not in res.output
    assert len(res.output.strip().splitlines()) == 1 and not (tmp_path / "o").exists()


def test_missing_file_and_empty_folder(tmp_path, photos):
    run = make_run(tmp_path / "rec", "test-brightness")
    res = _read(run, "photos/light.png", "photos/nothere.png")
    assert res.exit_code == 1 and res.stdout == "photos/light.png\tlight\n"
    assert "skipped photos/nothere.png: No such file or directory" in res.stderr
    (tmp_path / "empty").mkdir()
    res = _read(run, "empty")
    assert res.exit_code == 2 and "no images" in res.output
