"""`image-bench report` and `image-bench figure`: tables and figures from the run store only."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from image_bench.experiments.profiles import DEFAULT_RESULTS, PROFILES
from image_bench.experiments.tables import TABLES


def _runner(results, profile, data_root, device):
    from image_bench.experiments.runner import Runner
    from image_bench.usage import UsageError

    if not (results / "store").is_dir():  # before anything is written there
        raise UsageError(f"--results {results}: no run store there ({results / 'store'} does not "
                         "exist); `image-bench run TABLE --results DIR` fills one")
    return Runner(results, profile, compute=False, device=device, data_root=data_root)


def _opts(f):
    f = click.option("--data-root", default=None, type=click.Path(file_okay=False),
                     help="The data root the runs used (default: stand-ins).")(f)
    f = click.option("--results", default=DEFAULT_RESULTS, show_default=True,
                     type=click.Path(file_okay=False, path_type=Path),
                     help="Results directory holding store/ (the GPU results: results).")(f)
    f = click.option("--profile", default="smoke", show_default=True,
                     type=click.Choice(list(PROFILES)))(f)
    return f


@click.command()
@click.argument("table", type=click.Choice([*TABLES, "all"]), default="all")
@_opts
@click.option("--seeds", default=1, show_default=True, type=click.IntRange(1, 100))
@click.option("--out", default=None, type=click.Path(file_okay=False, path_type=Path),
              help="Where to write (default: the results directory).")
def report(table, profile, results, data_root, seeds, out):
    """Write TABLE (table1..table5 or all) as .tex, .md and .csv from the store, each value beside
    the paper's. Rows the store lacks are shown as -- and listed."""
    from image_bench.experiments.store import StoreError
    from image_bench.report.tables import build_table, write_table

    runner = _runner(results, profile, data_root, None)
    problems = runner.store.check()
    for err in problems:
        click.echo(f"error: {err}", err=True)
    if problems:
        sys.exit(1)
    names = list(TABLES) if table == "all" else [table]
    try:
        for name in names:
            built = build_table(TABLES[name], runner, list(range(seeds)))
            for path in write_table(built, out or results):
                click.echo(f"wrote {path}")
            if built.missing():
                click.echo(f"{name}: no records yet for {', '.join(built.missing())} "
                           f"(`image-bench run {name} --profile {profile}`)", err=True)
    except StoreError as e:
        click.echo(f"error: {e}", err=True)
        sys.exit(1)


@click.command()
@click.argument("name", type=click.Choice(["fig3", "fig4", "all"]))
@_opts
@click.option("--device", default=None)
@click.option("--out", default=None, type=click.Path(file_okay=False, path_type=Path),
              help="Default: figures/ beside the results directory.")
def figure(name, profile, results, data_root, device, out):
    """Draw Figure 3 or 4 (PNG, PDF and a caption .txt) from trained runs of the store."""
    from image_bench.experiments.store import StoreError
    from image_bench.report.figures import FigureError, draw_figure

    runner = _runner(results, profile, data_root, device)
    out = out or results.resolve().parent / "figures"
    try:
        for fig in (["fig3", "fig4"] if name == "all" else [name]):
            for path in draw_figure(fig, runner, out):
                click.echo(f"wrote {path}")
    except (StoreError, FigureError) as e:
        click.echo(f"error: {e}", err=True)
        sys.exit(1)
