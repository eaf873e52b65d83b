"""Tables as LaTeX/Markdown/CSV beside the paper's numbers, and Figures 3-4, from a store."""

from __future__ import annotations

import re
import shutil
import subprocess
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F
from click.testing import CliRunner

from image_bench.cli import main
from image_bench.experiments.tables import TABLES, Column, Method, Row, TableSpec
from image_bench.profiles import get_profile
from image_bench.report.figures import char_colours
from image_bench.report.tables import build_table, paper_tables, to_csv, to_latex, to_markdown


class StubSource:
    """Two rows of Table 3 with fixed numbers, no store."""

    profile = get_profile("smoke")

    def __init__(self):
        self.touched = []

    def plan(self, seed):
        return seed

    def evaluation(self, method):
        return {"average": {"accuracy_weighted": method.run}}

    def cost(self, cfg):
        return None

    def bench(self, name):
        return None


def _spec():
    def rows(seed):
        return [Row("SVTR", "SVTR", "S+L", Method(0.40 + 0.02 * seed)),
                Row("IMAGE-2", "IMAGE-2", "S+L", Method(0.55 + 0.04 * seed))]

    def values(row, src):
        return {"accuracy": 100 * src.evaluation(row.method)["average"]["accuracy_weighted"]}

    return TableSpec("table3", "Test table.", [Column("accuracy", "Accuracy", "%")], rows,
                     values)


def test_paper_numbers_are_data_for_every_table_row():
    paper = paper_tables()
    assert paper["table1"]["rows"]["15"]["average"] == 70.3
    assert paper["table5"]["rows"]["2"]["flops"] == 3.14
    for name, spec in TABLES.items():
        plan = SimpleNamespace(recognizer=lambda *a, **k: None, stisr=lambda *a, **k: None,
                               image=lambda *a, **k: None)
        rows = spec.rows(plan)
        if name not in paper:  # the suite's own tables (the STN variants) have no paper column
            assert name == "stn" and {row.paper for row in rows} == {"-"}
            continue
        for row in rows:
            assert row.paper in paper[name]["rows"], (name, row.paper)


def test_cells_mean_std_bold_and_paper_value():
    built = build_table(_spec(), StubSource(), seeds=[0, 1])
    (svtr, c1), (image, c2) = built.rows
    assert c1["accuracy"].mean == pytest.approx(41.0) and c1["accuracy"].std == pytest.approx(
        1.41421, rel=1e-4)
    assert c2["accuracy"].best and not c1["accuracy"].best
    assert c2["accuracy"].paper == 80.7
    tex = to_latex(built)
    assert r"\textbf{57.0$\pm$2.8} {\scriptsize (80.7)}" in tex
    md = to_markdown(built)
    assert "**57.0 ± 2.8** (80.7)" in md and "2 seeds" in md
    csv_text = to_csv(built)
    assert csv_text.splitlines()[0] == ("row,method,datasets,accuracy,accuracy_std,"
                                        "accuracy_paper,did_not_learn")
    assert csv_text.splitlines()[2].startswith("IMAGE-2,IMAGE-2,S+L,57,2.82843,80.7")


def _check_latex(tex: str, n_cols: int):
    assert tex.count("\\begin{tabular}") == tex.count("\\end{tabular}") == 1
    assert "\\toprule" in tex and "\\midrule" in tex and "\\bottomrule" in tex
    assert tex.count("{") == tex.count("}")
    body = tex.split("\\midrule\n")[1].split("\\bottomrule")[0]
    for line in body.strip().splitlines():
        assert line.count(" & ") == n_cols - 1, line
    spec = re.search(r"\\begin\{tabular\}\{([lr]+)\}", tex).group(1)
    assert len(spec) == n_cols


def test_latex_structure_and_compiles_if_tex_present(tmp_path):
    built = build_table(_spec(), StubSource(), seeds=[0])
    tex = to_latex(built)
    _check_latex(tex, 3)
    if shutil.which("pdflatex") is None:
        return
    doc = tmp_path / "t.tex"
    doc.write_text("\\documentclass{article}\\usepackage{booktabs}\\begin{document}\n" + tex
                   + "\\end{document}\n")
    subprocess.run(["pdflatex", "-interaction=nonstopmode", doc.name], cwd=tmp_path, check=True,
                   capture_output=True, timeout=60)


def test_char_colours_mark_wrong_characters_red():
    assert char_colours("tracker", "Tracker") == [(c, "black") for c in "tracker"]
    cols = dict(enumerate(char_colours("traceer", "tracker")))
    assert [i for i, (_, col) in cols.items() if col == "red"] == [4]
    assert char_colours("", "abc") == []


# --------------------------------------------------------------------------------------------
# Report and figures through the commands, on the fakes of test_experiments_run


@pytest.fixture
def world(monkeypatch, tmp_path):
    import tests.test_experiments_run as t

    t.install_fakes(monkeypatch)
    t.use_fake_data(monkeypatch)
    import image_bench.engine.evaluate as evaluate

    monkeypatch.setattr(t.FakeModel, "parameters", lambda self: iter([torch.zeros(1)]),
                        raising=False)

    def fake_predict(model, lr, *, recognizer=None):
        lr = lr.float() / 255.0 if lr.dtype == torch.uint8 else lr
        n = lr.shape[0]
        name = getattr(getattr(model, "cfg", None), "model", "")
        wrong = {"svtr": "wrd", "tg": "ward", "tpgsr": "wor", "c3stisr": "word",
                 "image-2": "word"}.get(name, "word")
        out = {"texts": [wrong if i % 3 else "word" for i in range(n)], "sr": None,
               "step_texts": {}, "step_sr": {}}
        if model.kind != "x" or recognizer is not None:
            out["sr"] = F.interpolate(lr, size=(32, 128), mode="bicubic").clamp(0, 1)
        if name.startswith("image"):
            out["step_texts"] = {"p_1": ["wxrd"] * n, "p_2": ["wrd"] * n}
            out["step_sr"] = {"I_1": out["sr"] * 0.5, "I_2": out["sr"] * 0.8}
        return out

    monkeypatch.setattr(evaluate, "predict", fake_predict)
    monkeypatch.setenv("IMAGE_BENCH_RUNS", str(tmp_path / "runs"))
    return tmp_path


def test_report_and_figures_from_the_store(world):
    results = world / "results"
    cli = CliRunner()
    for command in (["report", "table1"], ["figure", "fig3"]):  # no store there: a usage error
        res = cli.invoke(main, [*command, "--results", str(results)])
        assert res.exit_code == 2 and f"--results {results}: no run store there" in res.output
        assert not results.exists()  # and nothing written
    (results / "store").mkdir(parents=True)
    res = cli.invoke(main, ["report", "table1", "--results", str(results)])
    assert res.exit_code == 0  # an empty store: every row missing, said so
    assert "no records yet" in res.output and "IMAGE-2 (S+L)" in res.output
    res = cli.invoke(main, ["figure", "fig3", "--results", str(results)])
    assert res.exit_code == 1 and "run `image-bench run" in res.output.replace("\n", " ") or \
        "Run `image-bench run" in res.output.replace("\n", " ")
    res = cli.invoke(main, ["run", "table1", "--results", str(results), "--quiet", "--figures"])
    assert res.exit_code == 0, res.output
    for name in ("fig3", "fig4"):
        for ext in ("png", "pdf", "txt"):
            assert (world / "figures" / f"{name}.{ext}").stat().st_size > 0
    res = cli.invoke(main, ["report", "all", "--results", str(results)])
    assert res.exit_code == 0
    tex = (results / "table1.tex").read_text()
    _check_latex(tex, 11)
    assert "stand-in" in tex and "Profile: smoke" in tex
    # each trained model's rate and schedule as it ran (fake runs: the RunConfig defaults)
    assert "Learning rate: 0.0001 constant (" in tex


class LearningSource(StubSource):
    """TextZoom val numbers for the did-it-learn flags: bicubic 20 dB, the recognizer on the LR
    40%; an SR model at 18 dB read at 30% (below both), another at 21 dB read at 60%."""

    def evaluation(self, method):
        if method.split != "val":
            return {"average": {"accuracy_weighted": 0.5, "psnr": 20.0, "ssim": 0.7}}
        if method.run is not None and method.run.steps == 2200:
            return None  # a cut-off run: test numbers, no val evaluation
        if method.run is None:
            val = {"psnr": 20.0, "accuracy": None}
        elif method.run.model == "crnn":
            val = {"psnr": None, "accuracy": 0.40}
        else:
            val = {"psnr": method.run.steps / 100, "accuracy": (method.run.steps - 1500) / 1000}
        return {"splits": {"val": val}}


def test_rows_worse_than_doing_nothing_get_a_dagger_and_a_footnote():
    from image_bench.experiments.config import RunConfig

    crnn = RunConfig("crnn", "synth", "smoke", 3, 4)
    bad, good, cut = (RunConfig("tpgsr", "textzoom", "smoke", steps, 4)
                      for steps in (1800, 2100, 2200))

    def rows(seed):
        return [Row("CRNN", "-", "S", Method(crnn)),
                Row("Bad$^1$", "-", "S+L", Method(bad, crnn)),
                Row("Good$^1$", "-", "S+L", Method(good, crnn)),
                Row("Cut$^1$", "-", "S+L", Method(cut, crnn))]

    def values(row, src):
        return {"psnr": src.evaluation(row.method)["average"]["psnr"]}

    spec = TableSpec("stn", "Flags.", [Column("psnr", "PSNR", "dB")], rows, values)
    built = build_table(spec, LearningSource(), seeds=[0])
    assert list(built.flags) == [1]
    assert built.flags[1] == [
        "SR output below bicubic on TextZoom val (18.00 < 20.00 dB)",
        "reads worse than CRNN (S) on the plain LR on TextZoom val (30.0% < 40.0%)"]
    assert built.unchecked == {3}  # neither flagged nor shown as if it had passed
    md = to_markdown(built)
    assert "| Bad¹† | S+L |" in md and "| Good¹ | S+L |" in md and "| Cut¹‡ | S+L |" in md
    assert "† Bad¹ did not learn" in md and "(18.00 < 20.00 dB)" in md
    assert "‡ Cut¹ (S+L): not judged: no TextZoom val evaluation" in md
    tex = to_latex(built)
    assert "Bad$^1$$^\\dagger$ & S+L" in tex and "(30.0\\% $<$ 40.0\\%)" in tex
    assert "Cut$^1$$^\\ddagger$ & S+L" in tex
    lines = to_csv(built).splitlines()
    assert lines[0].endswith(",did_not_learn") and lines[3].endswith(",")
    assert "below bicubic" in lines[2] and lines[4].endswith(",not judged")
