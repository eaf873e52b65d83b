"""Bad command-line input is a usage error: exit 2, one line naming the bad value, no
traceback, and no run folder left behind."""

import pytest
from click.testing import CliRunner

from image_bench.cli import main
from image_bench.engine.cli_checks import parse_sets
from tests.tiny_runs import make_run


@pytest.fixture
def here(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the default run folder would be tmp_path/runs/...
    (tmp_path / "empty").mkdir()
    return tmp_path


def _one_line_usage_error(res, *names):
    assert res.exit_code == 2, res.output
    assert "Traceback" not in res.output and isinstance(res.exception, SystemExit)
    lines = res.output.strip().splitlines()
    assert len(lines) == 1, res.output
    for name in names:
        assert name in lines[0], lines[0]
    return lines[0]


@pytest.mark.parametrize("args,names", [
    (["train", "nosuchmodel", "--data", "synth"], ["unknown model", "nosuchmodel"]),
    (["train", "crnn", "--data", "synth", "--set", "nosuch=1"], ["unknown --set key", "nosuch"]),
    (["train", "crnn", "--data", "synth", "--set", "steps=abc"], ["steps", "abc", "int"]),
    (["train", "crnn", "--data", "empty"], ["empty", "no LMDB"]),
    (["train", "crnn", "--data", "nosuchset"], ["nosuchset"]),
    (["train", "crnn", "--data", "synth", "--set", "lr_fraction=true"], ["lr_fraction", "float"]),
    (["train", "crnn", "--data", "synth", "--set", "lr_fraction=3"], ["lr_fraction", "[0, 1]"]),
    (["train", "image-2", "--data", "synth", "--set", "iterations=3"], ["iterations"]),
    (["train", "crnn", "--data", "synth", "--set", "batch_size=0"], ["batch_size"]),
    (["train", "crnn", "--data", "synth", "--set", "lr_schedule=step"],
     ["lr_schedule=step", "constant, cosine"]),
    (["train", "crnn", "--data", "synth", "--profile", "huge"], ["huge"]),
])
def test_train_rejects_bad_input_before_making_a_run_folder(here, args, names):
    res = CliRunner().invoke(main, [*args, "--device", "cpu"])
    _one_line_usage_error(res, *names)
    assert not (here / "runs").exists()


def test_a_run_folder_of_another_run_is_refused_untouched(here):
    run = make_run(here / "other", "test-brightness")
    before = sorted(p.name for p in run.iterdir())
    res = CliRunner().invoke(main, ["train", "crnn", "--data", "synth", "--run-dir", str(run)])
    _one_line_usage_error(res, str(run))
    assert sorted(p.name for p in run.iterdir()) == before


def test_a_model_that_needs_a_helper_does_not_start_without_a_right_one(here):
    """TG's loss needs its stroke recognizer, TPGSR's text prior a trained CRNN: each --helper
    is checked (role, run folder, model, finished) and a missing one is named, before any run
    folder exists."""
    rec = make_run(here / "rec", "test-brightness")
    unfinished = make_run(here / "unfinished", "crnn")
    (unfinished / "best.pt").unlink()
    (here / "broken").mkdir()
    (here / "broken" / "config.json").write_text("{not json")
    cases = [([], ["tg needs --helper stroke=RUN_DIR", "tg-stroke"]),
             (["--helper", "stroke"], ["expected ROLE=RUN_DIR"]),
             (["--helper", "pen=x"], ["no helper role 'pen'", "stroke"]),
             (["--helper", "stroke=empty"], ["empty is not a run folder"]),
             (["--helper", f"stroke={rec}"], ["a test-brightness run", "tg-stroke run"]),
             (["--helper", "stroke=broken"], ["broken/config.json is not a run's config"])]
    for extra, names in cases:
        res = CliRunner().invoke(main, ["train", "tg", "--data", "textzoom", *extra])
        _one_line_usage_error(res, *names)
    res = CliRunner().invoke(main, ["train", "tpgsr", "--data", "textzoom",
                                    "--helper", f"recognizer={unfinished}"])
    _one_line_usage_error(res, "no best.pt")
    assert not (here / "runs").exists()


@pytest.mark.parametrize("data,names", [("empty", ["empty", "no LMDB"]),
                                        ("nowhere", ["nowhere", "neither"])])
def test_eval_rejects_a_data_path_without_lmdb(here, data, names):
    run = make_run(here / "rec", "test-brightness")
    res = CliRunner().invoke(main, ["eval", str(run), "--data", data])
    _one_line_usage_error(res, *names)
    assert not list(run.glob("eval-*.json"))


def test_good_set_values_are_typed_like_their_field_or_default():
    fields, kwargs = parse_sets("crnn", ("lr=1", "steps=7", "lr_fraction=0.5",
                                         "channels=[8,8,8,8,8,8,8]"))
    assert fields == {"lr": 1.0, "steps": 7} and isinstance(fields["lr"], float)
    assert kwargs == {"lr_fraction": 0.5, "channels": [8] * 7}
    _, kwargs = parse_sets("image-1", ("guidance=false",))  # IMAGE's keywords via **kwargs
    assert kwargs == {"guidance": False}


def test_eval_of_a_folder_with_a_broken_config_names_it(here):
    (here / "broken").mkdir()
    (here / "broken" / "config.json").write_text("{not json")
    for command in (["eval", "broken", "--data", "textzoom"], ["read", "broken", "empty"]):
        res = CliRunner().invoke(main, command)
        _one_line_usage_error(res, "broken/config.json is not a run's config")
