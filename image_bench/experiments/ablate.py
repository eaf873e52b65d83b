"""IMAGE ablations as small tables against full IMAGE-2 (S+L), from the same store as Table 4."""

from __future__ import annotations

from image_bench.experiments.plan import Plan
from image_bench.experiments.tables import (
    ACC,
    COST,
    FID,
    Method,
    Row,
    Source,
    TableSpec,
    cost_values,
    fidelity_values,
    recognition_values,
)

MAX_ITERATIONS = 3  # image-1..image-3 are registered


def parse_iterations(text: str) -> list[int]:
    try:
        values = [int(x) for x in text.split(",") if x.strip()]
    except ValueError as e:
        raise ValueError(f"--iterations takes a comma list of integers such as 1,2,3, got "
                         f"{text!r}") from e
    bad = [v for v in values if not 1 <= v <= MAX_ITERATIONS]
    if not values or bad:
        raise ValueError(f"--iterations values must lie in 1..{MAX_ITERATIONS} (image-1..image-"
                         f"{MAX_ITERATIONS} exist), got {text!r}")
    return sorted(set(values))


def ablation_spec(*, no_guidance_loss: bool, no_guidance: bool,
                  iterations: list[int] | None) -> TableSpec:
    def rows(plan: Plan) -> list[Row]:
        full = plan.image(2, "S+L")
        out = [Row("IMAGE-2 (full)", "IMAGE-2", "S+L", Method(full), cost=(full,))]
        if no_guidance_loss:
            cfg = plan.image(2, "S+L", clue_losses=False)
            out.append(Row("without losses on intermediate results", "Without losses of IMAGE",
                           "S+L", Method(cfg), cost=(cfg,)))
        if no_guidance:
            cfg = plan.image(2, "S+L", guidance=False)
            out.append(Row("no guidance: recognition model", "Recognition model", "S+L",
                           Method(cfg), cost=(cfg,), cost_part="recognition"))
            out.append(Row("no guidance: SR model", "Super-resolution model", "S+L",
                           Method(cfg), cost=(cfg,), cost_part="sr"))
        for n in iterations or []:
            if n == 2:
                continue  # the full model is already the first row
            cfg = plan.image(n, "S+L")
            out.append(Row(f"IMAGE-{n}", f"IMAGE-{n}", "S+L", Method(cfg), cost=(cfg,)))
        return out

    def values(row: Row, src: Source) -> dict:
        ev = src.evaluation(row.method)
        vals = {**recognition_values(ev, "textzoom"), **fidelity_values(ev),
                **cost_values(row, src)}
        # An unguided run carries two separate models; each row shows its own half only.
        if row.cost_part == "recognition":
            vals.update(psnr=None, ssim=None)
        elif row.cost_part == "sr":
            vals.update(easy=None, medium=None, hard=None, average=None)
        return vals

    return TableSpec("table4", "IMAGE ablations against full IMAGE-2 (S+L), one store.",
                     [*ACC, *FID, *COST], rows, values)
