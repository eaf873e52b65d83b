"""`image-bench run` and `image-bench ablate`: fill the run store, then write the tables."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import click

from image_bench.experiments.tables import TABLES
from image_bench.profiles import DEFAULT_RESULTS, PROFILES

TABLE_CHOICES = [*TABLES, "all"]


def _console():
    from rich.console import Console

    return Console(stderr=True)


def _common(f):
    f = click.option("--data-root", default=None, type=click.Path(file_okay=False),
                     help="Real data sets (TextZoom layout); default: generated stand-ins.")(f)
    f = click.option("--device", default=None, help="cuda, cuda:1 or cpu (default: cuda if "
                     "available).")(f)
    f = click.option("--results", default=DEFAULT_RESULTS, show_default=True,
                     type=click.Path(file_okay=False, path_type=Path),
                     help="Results directory: store/, tables, data index.")(f)
    f = click.option("--seeds", default=1, show_default=True, type=click.IntRange(1, 100),
                     help="Seeds 0..N-1 for every run; tables show mean +- std.")(f)
    f = click.option("--profile", default="smoke", show_default=True,
                     type=click.Choice(list(PROFILES)), help="Data sizes and schedules.")(f)
    return f


def _check_store(runner, console) -> None:
    problems = runner.store.check()
    if problems:
        for err in problems:
            console.print(f"[red]error:[/] {err}")
        raise SystemExit(1)


def _stage_summary(runner, total: float, console) -> None:
    from rich.table import Table

    t = Table(title=f"wall time per stage ({runner.profile.name})")
    t.add_column("stage")
    t.add_column("seconds", justify="right")
    for name, secs in sorted(runner.stage_wall.items()):
        t.add_row(name, f"{secs:.1f}")
    t.add_row("outside stages", f"{total - sum(runner.stage_wall.values()):.1f}")
    t.add_row("[bold]total[/]", f"[bold]{total:.1f}[/]")
    console.print(t)


@click.command()
@click.argument("table", type=click.Choice(TABLE_CHOICES))
@_common
@click.option("--compile/--no-compile", "compile_", default=True, show_default=True,
              help="On a GPU, torch.compile the transformer blocks in training. Ignored on "
                   "the CPU.")
@click.option("--figures/--no-figures", default=None,
              help="Draw Figures 3-4 afterwards (default: with `all`).")
@click.option("--quiet", is_flag=True, help="No progress bars.")
def run(table, profile, seeds, results, device, data_root, compile_, figures, quiet):
    """Train and evaluate what TABLE (table1..table5 or all) needs and the store lacks, then write
    the tables (.tex, .md, .csv) under RESULTS. Interrupted? Run it again: finished runs are in the
    store, unfinished ones resume from their checkpoints. SIGTERM or Ctrl-C saves the training
    run in flight at its current step (exit 143 / 130); stages.jsonl logs each session."""
    from image_bench.experiments.runner import Runner
    from image_bench.experiments.store import StoreError
    from image_bench.experiments.tables import learning_flags
    from image_bench.report.tables import build_table, write_table

    console = _console()
    names = list(TABLES) if table == "all" else [table]
    runner = Runner(results, profile, compute=True, device=device, data_root=data_root,
                    compile=compile_, progress=not quiet, console=console)
    _check_store(runner, console)
    t0 = time.perf_counter()
    outcome = "stopped"  # until the end is reached: an error or a stop signal leaves it so
    try:
        for seed in range(seeds):
            for name in names:
                spec = TABLES[name]
                rows = spec.rows(runner.plan(seed))
                console.rule(f"{name} (seed {seed}): {len(rows)} rows")
                for row in rows:
                    spec.values(row, runner)
                    # its did-it-learn check (the val evaluations) now: a run cut off later
                    # keeps the judgement of every row finished before the cut
                    learning_flags(row, runner)
        with runner.stage("report"):
            for name in names:
                built = build_table(TABLES[name], runner, list(range(seeds)))
                for path in write_table(built, results):
                    console.print(f"wrote {path}")
        if figures or (figures is None and table == "all"):
            from image_bench.report.figures import draw_figure

            with runner.stage("figures"):
                for fig in ("fig3", "fig4"):
                    for path in draw_figure(fig, runner, results.resolve().parent / "figures"):
                        console.print(f"wrote {path}")
        outcome = "done"
    except StoreError as e:
        outcome = "error"
        console.print(f"[red]error:[/] {e}")
        sys.exit(1)
    finally:
        total = time.perf_counter() - t0
        log = runner.write_stage_log(f"run {table} --profile {profile} --seeds {seeds}", total,
                                     outcome)
        _stage_summary(runner, total, console)
        console.print(f"stage times appended to {log}")


@click.command()
@click.option("--no-guidance-loss", is_flag=True,
              help="IMAGE-2 without the losses on intermediate results.")
@click.option("--no-guidance", is_flag=True,
              help="Recognition and SR models trained separately (no clue exchange).")
@click.option("--iterations", default=None, metavar="1,2,3",
              help="IMAGE-L for each L listed.")
@_common
@click.option("--quiet", is_flag=True, help="No progress bars.")
def ablate(no_guidance_loss, no_guidance, iterations, profile, seeds, results, device,
           data_root, quiet):
    """Train what an ablation needs (if missing) and print it against full IMAGE-2."""
    from image_bench.experiments.ablate import ablation_spec, parse_iterations
    from image_bench.experiments.runner import Runner
    from image_bench.experiments.store import StoreError
    from image_bench.report.tables import build_table, to_markdown

    if not (no_guidance_loss or no_guidance or iterations):
        raise click.UsageError("choose at least one of --no-guidance-loss, --no-guidance, "
                               "--iterations 1,2,3")
    try:
        its = parse_iterations(iterations) if iterations else None
    except ValueError as e:
        raise click.BadParameter(str(e), param_hint="--iterations") from e
    console = _console()
    spec = ablation_spec(no_guidance_loss=no_guidance_loss, no_guidance=no_guidance,
                         iterations=its)
    runner = Runner(results, profile, compute=True, device=device, data_root=data_root,
                    progress=not quiet, console=console)
    _check_store(runner, console)
    t0 = time.perf_counter()
    outcome = "stopped"
    try:
        for seed in range(seeds):
            for row in spec.rows(runner.plan(seed)):
                spec.values(row, runner)
        built = build_table(spec, runner, list(range(seeds)), paper_alias={"average": "accuracy"})
        outcome = "done"
    except StoreError as e:
        outcome = "error"
        console.print(f"[red]error:[/] {e}")
        sys.exit(1)
    finally:
        runner.write_stage_log("ablate", time.perf_counter() - t0, outcome)
    print_ablation(built, console)
    click.echo(to_markdown(built))


def print_ablation(built, console) -> None:
    from rich.table import Table

    t = Table(title="Ablation against full IMAGE-2 (S+L); paper's Table 4 value in parentheses")
    t.add_column("variant")
    for c in built.spec.columns:
        t.add_column(f"{c.name} ({c.unit})" if c.unit else c.name, justify="right")
    t.add_column("d avg acc", justify="right")
    t.add_column("d PSNR", justify="right")
    full = built.rows[0][1]
    for row, cells in built.rows:
        parts = [row.label]
        for c in built.spec.columns:
            cell = cells[c.name]
            text = "--" if cell.mean is None else f"{cell.mean:.{c.digits}f}"
            if cell.std is not None:
                text += f"±{cell.std:.{c.digits}f}"
            if cell.paper is not None:
                text += f" ({cell.paper:.{c.digits}f})"
            parts.append(text)
        for col in ("average", "psnr"):
            a, b = cells[col].mean, full[col].mean
            parts.append("--" if a is None or b is None else f"{a - b:+.2f}")
        t.add_row(*parts)
    console.print(t)
