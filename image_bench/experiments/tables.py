"""The paper's Tables 1-5 as declarative specs: rows are methods (runs), columns are metrics.

A row names *what* to measure (a :class:`Method`: a trained run, read by itself or by a recognizer,
on a data set; the models whose cost it carries; the model to time). How a number is obtained lives
in one place, the ``Source`` (:mod:`image_bench.experiments.runner`), which either computes what the
store lacks (``image-bench run``) or only reads the store (``image-bench report``). So a table is
regenerated from exactly the records that produced it.

Recognizers that read STISR outputs are the S-trained CRNN (rows marked 1) and SVTR (rows marked 2):
the originals evaluate with the synth-trained crnn.pth, and the paper's Table 1 repeats that.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable, Protocol

from image_bench.experiments.config import RunConfig
from image_bench.experiments.plan import Plan

TEST_SPLITS = {"textzoom": ("test/easy", "test/medium", "test/hard"), "ic15-352": ("test",)}


@dataclass(frozen=True)
class Method:
    """How a row produces its outputs. ``run`` None means the bicubic-upsampled LR image."""

    run: RunConfig | None
    reader: RunConfig | None = None  # recognizer that reads the SR output (STISR rows)
    data: str = "textzoom"
    split: str | None = None  # one split instead of the data set's test splits ('val')


@dataclass(frozen=True)
class Row:
    label: str  # as the paper prints it
    paper: str  # row id in report/paper_tables.json
    datasets: str = ""  # 'S', 'S+L' or '-'
    method: Method | None = None
    cost: tuple[RunConfig, ...] = ()  # models whose params and FLOPs add up to the row's cost
    cost_part: str | None = None  # Table 4: 'recognition' / 'sr' part of an unguided IMAGE
    bench: str | None = None  # registered model name to time (Table 2)
    step: int | None = None  # Table 5: iteration index i (1-based)


@dataclass(frozen=True)
class Column:
    name: str
    header: str  # LaTeX-safe header text
    unit: str = ""
    better: str | None = "max"  # 'max' | 'min' | None (no bold)
    digits: int = 1


class Source(Protocol):
    """Where numbers come from (see runner.py)."""

    def evaluation(self, method: Method) -> dict | None: ...

    def cost(self, cfg: RunConfig) -> dict | None: ...

    def bench(self, name: str) -> dict | None: ...


@dataclass
class TableSpec:
    name: str
    caption: str
    columns: list[Column]
    rows: Callable[[Plan], list[Row]]
    values: Callable[[Row, Source], dict[str, float | None]]
    extra_rows: list[str] = field(default_factory=list)


# --------------------------------------------------------------------------------------------
# Values shared by several tables


def _pct(x):
    return None if x is None else 100.0 * float(x)


def recognition_values(ev: dict | None, data: str) -> dict:
    """Per-split accuracy and the size-weighted average (TextZoom's convention), in percent."""
    if ev is None:
        return {}
    out = {}
    for split in TEST_SPLITS[data]:
        out[split.split("/")[-1]] = _pct(ev["splits"][split]["accuracy"])
    out["average"] = _pct(ev["average"]["accuracy_weighted"])
    return out


def fidelity_values(ev: dict | None) -> dict:
    if ev is None:
        return {}
    avg = ev["average"]
    ssim = avg.get("ssim")
    return {"psnr": avg.get("psnr"), "ssim": None if ssim is None else 100.0 * ssim}


def cost_values(row: Row, src: Source) -> dict:
    """FLOPs in G (MACs, fvcore's convention) and params in M, summed over the row's models
    (an STISR row carries its SR model plus the recognizer that reads it, as the paper counts)."""
    if not row.cost:
        return {}
    costs = [src.cost(cfg) for cfg in row.cost]
    if any(c is None for c in costs):
        return {}
    if row.cost_part is not None:
        part = part_cost(costs[0], row.cost_part)
        return {"flops": None if part is None else part / 1e9, "params": None}
    return {"flops": sum(c["flops"] for c in costs) / 1e9,
            "params": sum(c["params"] for c in costs) / 1e6}


def part_cost(cost: dict, part: str) -> float | None:
    """MACs of the recognition or the SR model of an IMAGE run (Table 4's rows 2 and 3), from the
    ``parts`` the runner counts with IMAGE's ``model_parts()``."""
    parts = cost.get("parts") or {}
    name = {"recognition": "recognition model", "sr": "super-resolution model"}[part]
    return float(parts[name]) if name in parts else None


def _group_flops(v) -> float:
    return float(v["flops"] if isinstance(v, dict) else v)


# --------------------------------------------------------------------------------------------
# Did it learn? A trained SR model whose output is below the bicubic LR, or an STISR pair that
# reads worse than its recognizer reading the plain LR, is worse than doing nothing: its row is
# flagged (a dagger and a footnote). Judged on TextZoom's validation split (held out of the
# training data), never on a test split.

LEARNING_SPLIT = ("textzoom", "val")


def _val(run: RunConfig | None, reader: RunConfig | None = None) -> Method:
    return Method(run, reader, data=LEARNING_SPLIT[0], split=LEARNING_SPLIT[1])


def _split_result(ev: dict | None) -> dict:
    return {} if ev is None else ev["splits"][LEARNING_SPLIT[1]]


def _judged(row: Row) -> bool:
    """Whether the row holds a trained SR model (or STISR pair) to judge; a recognizer reads the
    LR itself and has nothing to compare against."""
    from image_bench.models.base import model_class

    method = row.method
    if method is None or not isinstance(method.run, RunConfig) or row.cost_part == "recognition":
        return False
    return getattr(model_class(method.run.model), "kind", "sr") != "recognizer"


def learning_unchecked(row: Row, src: Source) -> bool:
    """A trained SR row with test numbers but no TextZoom val evaluation (a cut-off run): its
    row cannot be judged, and the table says so rather than showing it as unflagged."""
    if not _judged(row) or src.evaluation(row.method) is None:
        return False
    return src.evaluation(_val(row.method.run, row.method.reader)) is None


def learning_flags(row: Row, src: Source) -> list[str]:
    """Why the row's trained method is worse than doing nothing, one reason a line (empty when
    it is not, or when the row has no trained SR model)."""
    if not _judged(row):
        return []
    method = row.method
    own = _split_result(src.evaluation(_val(method.run, method.reader)))
    flags = []
    if own.get("psnr") is not None:
        bicubic = _split_result(src.evaluation(_val(None))).get("psnr")
        if bicubic is not None and own["psnr"] < bicubic:
            flags.append(f"SR output below bicubic on TextZoom val ({own['psnr']:.2f} < "
                         f"{bicubic:.2f} dB)")
    if method.reader is not None and own.get("accuracy") is not None:
        plain = _split_result(src.evaluation(_val(method.reader))).get("accuracy")
        if plain is not None and own["accuracy"] < plain:
            flags.append(f"reads worse than {method.reader.model.upper()} (S) on the plain LR on "
                         f"TextZoom val ({100 * own['accuracy']:.1f}% < {100 * plain:.1f}%)")
    return flags


# --------------------------------------------------------------------------------------------
# Table 1

ACC = [Column("easy", "Easy", "%"), Column("medium", "Medium", "%"), Column("hard", "Hard", "%"),
       Column("average", "Average", "%")]
FID = [Column("psnr", "PSNR", "dB", digits=2), Column("ssim", r"SSIM ($\times 10^{-2}$)", "",
                                                      digits=2)]
COST = [Column("flops", "FLOPs", "G", better=None, digits=2),
        Column("params", "Params", "M", better=None, digits=2)]


def table1_rows(plan: Plan) -> list[Row]:
    crnn_s, svtr_s = plan.recognizer("crnn", "S"), plan.recognizer("svtr", "S")
    rows = [Row("LR (bicubic)", "1", "-", Method(None))]
    for stage, ids in (("S", ("2", "3")), ("S+L", ("4", "5"))):
        for name, label, pid in (("crnn", "CRNN", ids[0]), ("svtr", "SVTR", ids[1])):
            cfg = plan.recognizer(name, stage)
            rows.append(Row(label, pid, stage, Method(cfg), cost=(cfg,)))
    for reader, mark, first in ((crnn_s, "1", 6), (svtr_s, "2", 9)):
        for k, (name, label) in enumerate((("tg", "TG"), ("tpgsr", "TPGSR"),
                                           ("c3stisr", "C3-STISR"))):
            sr = plan.stisr(name)
            rows.append(Row(f"{label}$^{mark}$", str(first + k), "S+L", Method(sr, reader),
                            cost=(sr, reader)))
    pid = 12
    for iterations in (1, 2):
        for stage in ("S", "S+L"):
            cfg = plan.image(iterations, stage)
            rows.append(Row(f"IMAGE-{iterations}", str(pid), stage, Method(cfg), cost=(cfg,)))
            pid += 1
    return rows


def table1_values(row: Row, src: Source) -> dict:
    ev = src.evaluation(row.method)
    return {**recognition_values(ev if row.method.run else None, "textzoom"),
            **fidelity_values(ev), **cost_values(row, src)}


# --------------------------------------------------------------------------------------------
# Table 2 (latency, batch 1; STISR methods timed together with CRNN, as the paper)


def table2_rows(plan: Plan) -> list[Row]:
    names = (("crnn", "CRNN"), ("svtr", "SVTR"), ("tpgsr", "TPGSR"), ("c3stisr", "C3-STISR"),
             ("image-1", "IMAGE-1"), ("image-2", "IMAGE-2"))
    return [Row(label, label, bench=name) for name, label in names]


def table2_values(row: Row, src: Source) -> dict:
    b = src.bench(row.bench)
    if b is None:
        return {}
    return {"eager": b.get("latency_ms_eager"), "optimized": b.get("latency_ms_optimized")}


# --------------------------------------------------------------------------------------------
# Table 3 (IC15-352; the S+L models; STISR read by the S-trained SVTR)


def table3_rows(plan: Plan) -> list[Row]:
    svtr_s, svtr_sl = plan.recognizer("svtr", "S"), plan.recognizer("svtr", "S+L")
    rows = [Row("SVTR", "SVTR", "S+L", Method(svtr_sl, data="ic15-352"), cost=(svtr_sl,))]
    for name, label in (("tg", "TG"), ("tpgsr", "TPGSR"), ("c3stisr", "C3-STISR")):
        sr = plan.stisr(name)
        rows.append(Row(label, label, "S+L", Method(sr, svtr_s, data="ic15-352"),
                        cost=(sr, svtr_s)))
    for iterations in (1, 2):
        cfg = plan.image(iterations, "S+L")
        rows.append(Row(f"IMAGE-{iterations}", f"IMAGE-{iterations}", "S+L",
                        Method(cfg, data="ic15-352"), cost=(cfg,)))
    return rows


def table3_values(row: Row, src: Source) -> dict:
    ev = src.evaluation(row.method)
    return {"accuracy": None if ev is None else _pct(ev["average"]["accuracy_weighted"]),
            **cost_values(row, src)}


# --------------------------------------------------------------------------------------------
# Table 4 (ablation of the mutual guidance; all IMAGE-2, S then S+L)


def table4_rows(plan: Plan) -> list[Row]:
    full = plan.image(2, "S+L")
    apart = plan.image(2, "S+L", guidance=False)
    no_losses = plan.image(2, "S+L", clue_losses=False)
    return [
        Row("IMAGE-2", "IMAGE-2", "S+L", Method(full), cost=(full,)),
        Row("Recognition model", "Recognition model", "S+L", Method(apart), cost=(apart,),
            cost_part="recognition"),
        Row("Super-resolution model", "Super-resolution model", "S+L", Method(apart),
            cost=(apart,), cost_part="sr"),
        Row("Without losses of IMAGE", "Without losses of IMAGE", "S+L", Method(no_losses),
            cost=(no_losses,)),
    ]


def table4_values(row: Row, src: Source) -> dict:
    ev = src.evaluation(row.method)
    out = cost_values(row, src)
    if ev is not None:
        # The unguided run holds both models: its recognition row reads only the recognizer, its
        # SR row only the SR image, as the paper's rows 2 and 3 show one metric each.
        if row.cost_part != "sr":
            out["accuracy"] = _pct(ev["average"]["accuracy_weighted"])
        if row.cost_part != "recognition":
            out["psnr"] = ev["average"].get("psnr")
    return {k: out.get(k) for k in ("accuracy", "psnr", "flops")}


# --------------------------------------------------------------------------------------------
# Table 5 (IMAGE-2 S+L per iteration)


def table5_rows(plan: Plan) -> list[Row]:
    cfg = plan.image(2, "S+L")
    return [Row(str(i), str(i), "S+L", Method(cfg), cost=(cfg,), step=i) for i in (1, 2, 3)]


def step_metrics(ev: dict) -> dict[str, list[float | None]]:
    """Per-step metrics over the whole test set (the evaluator weights splits by size).

    Lists indexed by step, 0-based: 'p' (accuracy of p_1..p_{L+1}), 'p_hat' (p-hat_1..p-hat_L),
    'psnr' (I_1..I_{L+1}). Step L+1 is the model's final output (sr, logits)."""
    avg = ev["average"]
    steps = avg.get("steps") or {}

    def series(prefix, metric):
        vals, i = [], 1
        while f"{prefix}_{i}" in steps:
            vals.append(steps[f"{prefix}_{i}"].get(metric))
            i += 1
        return vals

    return {"p": [*series("p", "accuracy"), avg.get("accuracy_weighted")],
            "p_hat": series("phat", "accuracy"),
            "psnr": [*series("I", "psnr"), avg.get("psnr")]}


def table5_values(row: Row, src: Source) -> dict:
    ev = src.evaluation(row.method)
    cost = src.cost(row.cost[0])
    i = row.step - 1
    out = {"p": None, "p_hat": None, "psnr": None, "flops": None}
    if ev is not None:
        steps = step_metrics(ev)
        if i < len(steps["p"]):
            out["p"] = _pct(steps["p"][i])
        if i < len(steps["p_hat"]):
            out["p_hat"] = _pct(steps["p_hat"][i])
        if i < len(steps["psnr"]):
            out["psnr"] = steps["psnr"][i]
    if cost is not None and cost.get("groups"):
        out["flops"] = cumulative_flops(cost["groups"], row.step) / 1e9
    return out


def cumulative_flops(groups: dict, step: int) -> float:
    """MACs up to the output of step i: initial features + iterations 1..i; the last step (L+1)
    adds the final decoding. Groups are IMAGE's ordered cost parts (initial, iteration k, final)."""
    items = list(groups.items())
    iterations = [k for k, _ in items if "iteration" in k.lower()]
    total = 0.0
    for k, v in items:
        if "iteration" in k.lower():
            if iterations.index(k) < step:
                total += _group_flops(v)
        elif "final" in k.lower() or "decod" in k.lower():
            if step > len(iterations):
                total += _group_flops(v)
        else:
            total += _group_flops(v)
    return total


# --------------------------------------------------------------------------------------------
# The STN variants (issue 25): TPGSR and IMAGE-1 with no STN, the originals' STN (0.01 init) and
# the STN at the identity, each trained on the profile's schedule. The row of a model's default
# setting is the run the other tables use.

STN_VARIANTS = ("none", "original", "identity")


def stn_rows(plan: Plan) -> list[Row]:
    crnn_s = plan.recognizer("crnn", "S")
    rows = [Row("LR (bicubic)", "-", "-", Method(None)),
            Row("CRNN reading the LR", "-", "S", Method(crnn_s), cost=(crnn_s,))]
    for mode in STN_VARIANTS:
        sr = plan.stisr("tpgsr", stn=mode)  # the default's row is the other tables' run
        rows.append(Row(f"TPGSR$^1$, STN {mode}", "-", "S+L", Method(sr, crnn_s),
                        cost=(sr, crnn_s)))
    for stage in ("S", "S+L"):
        for mode in STN_VARIANTS:
            cfg = plan.image(1, stage, stn=mode)
            rows.append(Row(f"IMAGE-1, STN {mode}", "-", stage, Method(cfg), cost=(cfg,)))
    return rows


def stn_values(row: Row, src: Source) -> dict:
    ev = src.evaluation(row.method)
    acc = recognition_values(ev, "textzoom") if row.method.run else {}
    return {"average": acc.get("average"), **fidelity_values(ev)}


# --------------------------------------------------------------------------------------------

TABLES: dict[str, TableSpec] = {
    # first, so that a reproduction cut short has measured the STN settings the others rely on
    "stn": TableSpec(
        "stn",
        "STN variants on TextZoom (issue 25): none, the originals' STN (control points at margin "
        "0.01) and the STN at the identity (margin 0.05), in training only, its TPS in float32. "
        "$^1$: read by CRNN (S).",
        [Column("average", "Average acc.", "%"), *FID], stn_rows, stn_values),
    "table1": TableSpec(
        "table1",
        "Performance on TextZoom. S: synthetic data; S+L: then the LR-HR training pairs. "
        "$^1$: read by CRNN (S); $^2$: read by SVTR (S), as the originals read STISR output with "
        "a synth-trained recognizer.",
        [*ACC, *FID, *COST], table1_rows, table1_values),
    "table2": TableSpec(
        "table2",
        "Latency at batch 1 (ms per image, median). STISR methods are timed with CRNN as "
        "recognizer.",
        [Column("eager", "Eager fp32", "ms", better="min", digits=2),
         Column("optimized", "Optimized", "ms", better="min", digits=2)],
        table2_rows, table2_values),
    "table3": TableSpec(
        "table3",
        "Performance on IC15-352. STISR methods are read by SVTR (S); the others are the S+L "
        "models.",
        [Column("accuracy", "Accuracy", "%"), *COST], table3_rows, table3_values),
    "table4": TableSpec(
        "table4",
        "Ablation of the iterative mutual guidance (IMAGE-2, S+L; every variant on the same "
        "schedule).",
        [Column("accuracy", "Accuracy", "%"), Column("psnr", "PSNR", "dB", digits=2),
         Column("flops", "FLOPs", "G", better=None, digits=2)],
        table4_rows, table4_values),
    "table5": TableSpec(
        "table5",
        "The $i$-th intermediate results of IMAGE-2 (S+L): accuracy of $p_i$ and $\\hat p_i$, PSNR "
        "of $I_i^{SR}$, cumulative FLOPs.",
        [Column("p", "Acc. $p_i$", "%"), Column("p_hat", r"Acc. $\hat{p}_i$", "%"),
         Column("psnr", "PSNR $I_i^{SR}$", "dB", digits=2),
         Column("flops", "FLOPs", "G", better=None, digits=2)],
        table5_rows, table5_values),
}


def get_table(name: str) -> TableSpec:
    if name not in TABLES:
        raise KeyError(f"unknown table {name!r}; known: {', '.join(TABLES)}")
    return TABLES[name]


def mean_std(values: list[float | None]) -> tuple[float | None, float | None]:
    vals = [v for v in values if v is not None and not math.isnan(v)]
    if not vals or len(vals) < len(values):
        return None, None
    mean = sum(vals) / len(vals)
    if len(vals) == 1:
        return mean, None
    var = sum((v - mean) ** 2 for v in vals) / (len(vals) - 1)  # sample std over seeds
    return mean, math.sqrt(var)
