"""Tables as LaTeX (booktabs), Markdown and CSV, each reproduced value beside the paper's.

A table is built from a Source (the run store, see experiments/runner.py) for one or more seeds:
each cell holds the mean over seeds, the sample std when there are several, and the paper's value
(kept as data in ``paper_tables.json``). The best reproduced value per metric column is bold, as the
paper does; cost columns are not ranked.
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

from image_bench.experiments.store import atomic_write_text
from image_bench.experiments.tables import (
    Row,
    TableSpec,
    learning_flags,
    learning_unchecked,
    mean_std,
)


def paper_tables() -> dict:
    return json.loads(resources.files("image_bench.report").joinpath("paper_tables.json")
                      .read_text())


@dataclass
class Cell:
    mean: float | None
    std: float | None = None
    paper: float | None = None
    best: bool = False


@dataclass
class BuiltTable:
    spec: TableSpec
    rows: list[tuple[Row, dict[str, Cell]]]
    seeds: list[int]
    meta: dict = field(default_factory=dict)  # data, device, commits, profile
    # row index -> why that row's method is worse than doing nothing (tables.learning_flags)
    flags: dict[int, list[str]] = field(default_factory=dict)
    # rows that could not be judged: test numbers but no TextZoom val evaluation yet
    unchecked: set[int] = field(default_factory=set)

    def missing(self) -> list[str]:
        """Rows with no reproduced value at all (nothing in the store for them)."""
        return [_md(row.label) + (f" ({row.datasets})" if row.datasets not in ("", "-") else "")
                for row, cells in self.rows if all(c.mean is None for c in cells.values())]


def build_table(spec: TableSpec, runner, seeds: list[int], *,
                paper_alias: dict[str, str] | None = None) -> BuiltTable:
    """``paper_alias`` maps a column to the paper's column of another name (ablations read
    Table 4's 'accuracy' as their 'average')."""
    paper = paper_tables().get(spec.name, {}).get("rows", {})
    alias = paper_alias or {}
    per_seed = []
    runner.touched = []  # the caption names only the records behind this table
    for seed in seeds:
        rows = spec.rows(runner.plan(seed))
        per_seed.append([(row, spec.values(row, runner)) for row in rows])
    built, flags, unchecked = [], {}, set()
    for i, (row, _) in enumerate(per_seed[0]):
        reasons = sorted({r for seed_rows in per_seed
                          for r in learning_flags(seed_rows[i][0], runner)})
        if reasons:
            flags[i] = reasons
        elif any(learning_unchecked(seed_rows[i][0], runner) for seed_rows in per_seed):
            unchecked.add(i)
        cells = {}
        for col in spec.columns:
            mean, std = mean_std([vals[i][1].get(col.name) for vals in per_seed])
            paper_col = alias.get(col.name, col.name)
            cells[col.name] = Cell(mean, std, paper.get(row.paper, {}).get(paper_col))
        built.append((row, cells))
    for col in spec.columns:  # bold the best reproduced value per ranked column
        if col.better is None:
            continue
        vals = [cells[col.name].mean for _, cells in built if cells[col.name].mean is not None]
        if len(vals) < 2 or len({round(v, col.digits) for v in vals}) == 1:
            continue  # nothing to single out when every row ties
        best = max(vals) if col.better == "max" else min(vals)
        for _, cells in built:
            if cells[col.name].mean is not None and round(cells[col.name].mean, col.digits) == \
                    round(best, col.digits):
                cells[col.name].best = True
    return BuiltTable(spec, built, list(seeds), meta=runner_meta(runner), flags=flags,
                      unchecked=unchecked)


def runner_meta(runner) -> dict:
    """What the caption names: the data, device(s), commit(s) of the records the table read."""
    data, devices, commits, rates = {}, set(), set(), {}
    for record in getattr(runner, "touched", []):
        prov = record["provenance"]
        if record["kind"] == "train":  # each trained model's rate and schedule, as it ran
            spec = record["spec"]
            rate = f"{spec.get('lr', 1e-4):g} {spec.get('lr_schedule', 'constant')}"
            rates.setdefault(rate, set()).add(spec["model"])
        if prov.get("device") and record["kind"] in ("train", "eval", "bench"):
            devices.add(prov["device"])
        if prov.get("commit"):
            commits.add(prov["commit"][:10] + ("+dirty" if prov.get("dirty") else ""))
        ident = prov.get("data")
        if isinstance(ident, dict) and ident.get("name"):
            splits = ident.get("splits", {})
            part = "test" if any(s.startswith("test") for s in splits) else \
                "val" if splits and all(s == "val" for s in splits) else "train"
            data[f"{ident['name']} ({part})"] = \
                f"{'/'.join(ident.get('source', ['?']))} \\#{ident['hash'][:12]}"
    return {"data": data, "devices": sorted(devices), "commits": sorted(commits),
            "profile": runner.profile.name, "schedule": schedule_text(runner.profile),
            "rates": "; ".join(f"{rate} ({', '.join(sorted(models))})"
                               for rate, models in sorted(rates.items()))}


def schedule_text(p) -> str:
    return (f"pretraining (S) {p.pretrain_steps:,} steps x {p.pretrain_batch}, fine-tuning (S+L) "
            f"{p.finetune_steps:,} x {p.finetune_batch}, STISR training {p.stisr_steps:,} x "
            f"{p.finetune_batch}, helper networks {p.helper_steps:,} x {p.helper_batch}")


# --------------------------------------------------------------------------------------------
# Rendering


def _num(x: float | None, digits: int) -> str:
    return "--" if x is None else f"{x:.{digits}f}"


def caption(table: BuiltTable) -> str:
    m = table.meta
    data = "; ".join(f"{k}: {v}" for k, v in sorted(m["data"].items())) or "--"
    seeds = f"{len(table.seeds)} seed{'s' if len(table.seeds) > 1 else ''}" + (
        " (mean $\\pm$ std)" if len(table.seeds) > 1 else "")
    return (f"{table.spec.caption} Reproduced by image-bench; the paper's value in parentheses. "
            f"Data: {data}. Profile: {m['profile']} ({m.get('schedule', '--')}). "
            f"Learning rate: {m.get('rates') or '--'}. "
            f"Device: {', '.join(m['devices']) or '--'}. "
            f"{seeds}. Commit: {', '.join(m['commits']) or '--'}.")


DAGGER = {"latex": "$^\\dagger$", "markdown": "†"}
DDAGGER = {"latex": "$^\\ddagger$", "markdown": "‡"}
FLAG_NOTE = ("did not learn: worse than doing nothing (judged on TextZoom's validation split, "
             "not the test)")
UNCHECKED_NOTE = ("not judged: no TextZoom val evaluation in the store (the run was cut "
                  "before it), so whether they beat doing nothing is not checked; "
                  "image-bench run on this table adds it")


def _flagged(table: BuiltTable, i: int, label: str, style: str) -> str:
    if i in table.flags:
        return label + DAGGER[style]
    return label + DDAGGER[style] if i in table.unchecked else label


def footnotes(table: BuiltTable, style: str) -> list[str]:
    """One line per flagged row (the dagger, the row and its reasons), then one naming the rows
    that could not be judged (the double dagger)."""
    mark = DAGGER[style]
    notes = []
    for i, reasons in sorted(table.flags.items()):
        label, text = table.rows[i][0].label, "; ".join(reasons)
        if style == "latex":
            text = text.replace("%", "\\%").replace("<", "$<$")
        else:
            label = _md(label)
        notes.append(f"{mark} {label} {FLAG_NOTE}: {text}.")
    if table.unchecked:
        rows = [table.rows[i][0] for i in sorted(table.unchecked)]
        labels = [f"{r.label} ({r.datasets})" if r.datasets not in ("", "-") else r.label
                  for r in rows]
        labels = labels if style == "latex" else [_md(x) for x in labels]
        notes.append(f"{DDAGGER[style]} {', '.join(labels)}: {UNCHECKED_NOTE}.")
    return notes


def _header(table: BuiltTable) -> list[str]:
    heads = ["ID", "Method", "Data"] if table.spec.name == "table1" else ["Method", "Data"]
    if table.spec.name == "table5":
        heads = ["$i$"]
    if table.spec.name == "table2":
        heads = ["Method"]
    return heads


def _lead(table: BuiltTable, i: int, style: str) -> list[str]:
    row = table.rows[i][0]
    name = table.spec.name
    label = _flagged(table, i, row.label, style)
    if name == "table1":
        return [row.paper, label, row.datasets]
    if name in ("table5", "table2"):
        return [label]
    return [label, row.datasets]


def to_latex(table: BuiltTable) -> str:
    cols = table.spec.columns
    lead = _header(table)
    out = io.StringIO()
    w = out.write
    w("% Generated by `image-bench report`; needs \\usepackage{booktabs}.\n")
    w("\\begin{table}[t]\n\\centering\n\\small\n")
    w(f"\\caption{{{caption(table)}}}\n\\label{{tab:{table.spec.name}}}\n")
    w("\\begin{tabular}{" + "l" * len(lead) + "r" * len(cols) + "}\n\\toprule\n")
    heads = lead + [c.header + (f" ({c.unit.replace('%', chr(92) + '%')})" if c.unit else "")
                    for c in cols]
    w(" & ".join(heads) + " \\\\\n\\midrule\n")
    for i, (_, cells) in enumerate(table.rows):
        parts = list(_lead(table, i, "latex"))
        parts += [_cell_text(cells[c.name], c.digits, LATEX) for c in cols]
        w(" & ".join(parts) + " \\\\\n")
    w("\\bottomrule\n\\end{tabular}\n")
    for note in footnotes(table, "latex"):
        w(f"\\par\\footnotesize {note}\n")
    w("\\end{table}\n")
    return out.getvalue()


_MD = {"$^1$": "¹", "$^2$": "²", r"($\times 10^{-2}$)": "(×10⁻²)", r"$\hat{p}_i$": "p̂_i",
       r"$\hat p_i$": "p̂_i", "$p_i$": "p_i", "$I_i^{SR}$": "I_i^SR", "$i$": "i",
       "$\\pm$": "±", "\\#": "#"}


def _md(text: str) -> str:
    for k, v in _MD.items():
        text = text.replace(k, v)
    return text


def to_markdown(table: BuiltTable) -> str:
    cols = table.spec.columns
    heads = [_md(h) for h in _header(table)] + [
        _md(c.header) + (f" ({c.unit})" if c.unit else "") for c in cols]
    lines = ["| " + " | ".join(heads) + " |",
             "|" + "|".join(["---"] * len(_header(table)) + ["---:"] * len(cols)) + "|"]
    for i, (_, cells) in enumerate(table.rows):
        parts = [_md(x) for x in _lead(table, i, "markdown")]
        parts += [_cell_text(cells[c.name], c.digits, MARKDOWN) for c in cols]
        lines.append("| " + " | ".join(parts) + " |")
    notes = "".join(f"\n{note}\n" for note in footnotes(table, "markdown"))
    return (f"**{table.spec.name.replace('table', 'Table ')}.** {_md(caption(table))}\n\n"
            + "\n".join(lines) + "\n" + notes)


def to_csv(table: BuiltTable) -> str:
    out = io.StringIO()
    writer = csv.writer(out)
    cols = table.spec.columns
    writer.writerow(["row", "method", "datasets"]
                    + [f"{c.name}{suffix}" for c in cols for suffix in ("", "_std", "_paper")]
                    + ["did_not_learn"])
    for i, (row, cells) in enumerate(table.rows):
        vals = []
        for c in cols:
            cell = cells[c.name]
            vals += ["" if v is None else f"{v:.6g}" for v in (cell.mean, cell.std, cell.paper)]
        writer.writerow([row.paper, _md(row.label), row.datasets, *vals,
                         "; ".join(table.flags.get(i, []))
                         or ("not judged" if i in table.unchecked else "")])
    return out.getvalue()


# How one cell is written: mean, "+- std" across seeds, bold when best, the paper's value after.
LATEX = {"std": "$\\pm${}", "best": "\\textbf{{{}}}", "paper": " {{\\scriptsize ({})}}"}
MARKDOWN = {"std": " ± {}", "best": "**{}**", "paper": " ({})"}


def _cell_text(cell, digits: int, style: dict) -> str:
    text = _num(cell.mean, digits)
    if cell.std is not None:
        text += style["std"].format(f"{cell.std:.{digits}f}")
    if cell.best:
        text = style["best"].format(text)
    if cell.paper is not None:
        text += style["paper"].format(f"{cell.paper:.{digits}f}")
    return text


def write_table(table: BuiltTable, out_dir: Path) -> list[Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for ext, render in (("tex", to_latex), ("md", to_markdown), ("csv", to_csv)):
        path = out_dir / f"{table.spec.name}.{ext}"
        atomic_write_text(path, render(table))  # two `run` processes may write at once
        paths.append(path)
    return paths
