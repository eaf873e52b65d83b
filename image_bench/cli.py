"""The ``image-bench`` command. Each sub-command lives beside the code it drives and is imported
only when used, so ``image-bench --help`` is instant and a broken area names itself."""

from __future__ import annotations

import importlib
import sys

import click

from image_bench.engine.interrupt import Stopped, stop_signals

# name -> (module, attribute, one-line help shown by `image-bench --help`)
COMMANDS = {
    "data": ("image_bench.data.cli", "data",
             "Make, import, check and show data sets (TextZoom or STR benchmark LMDBs)."),
    "train": ("image_bench.engine.cli", "train", "Train one model on one data set (resumable)."),
    "eval": ("image_bench.engine.cli", "evaluate",
             "Evaluate a trained run on a data set (a name, or a path to LMDBs)."),
    "read": ("image_bench.engine.read", "read",
             "Read your own images with a trained run: PATH<TAB>TEXT lines, SR images."),
    "bench": ("image_bench.engine.cli", "bench", "Latency and throughput, eager and optimized."),
    "cost": ("image_bench.metrics.cost", "cost", "Parameters and FLOPs (MACs) of a model."),
    "run": ("image_bench.experiments.cli", "run",
            "Regenerate the paper's tables from the run store."),
    "ablate": ("image_bench.experiments.cli", "ablate", "IMAGE ablations against full IMAGE-2."),
    "report": ("image_bench.report.cli", "report", "Write tables as LaTeX, Markdown and CSV."),
    "figure": ("image_bench.report.cli", "figure", "Draw Figures 3 and 4 from trained runs."),
}


class LazyGroup(click.Group):
    def list_commands(self, ctx):
        return list(COMMANDS)

    def get_command(self, ctx, name):
        if name not in COMMANDS:
            return None
        module, attr, _ = COMMANDS[name]
        return getattr(importlib.import_module(module), attr)

    def main(self, *args, **kwargs):
        # SIGTERM / Ctrl-C: training saves its step and `finally` blocks run (engine/interrupt.py);
        # the exit status is the shell's for that signal (143 / 130).
        with stop_signals():
            try:
                return super().main(*args, **kwargs)
            except Stopped as e:
                click.echo(f"image-bench: {e}", err=True)
                sys.exit(e.exit_code)

    def format_commands(self, ctx, formatter):
        rows = [(name, help_) for name, (_, _, help_) in COMMANDS.items()]
        with formatter.section("Commands"):
            formatter.write_dl(rows)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="image-bench")
def main():
    """image-bench: train, evaluate and compare low-resolution scene text models (IMAGE, CRNN,
    SVTR, TG, TPGSR, C3-STISR) and regenerate the IMAGE paper's tables from your own runs.

    Data sets are named (synth, textzoom, ic15-352). Without --data-root (or IMAGE_BENCH_DATA)
    they resolve to stand-ins that the suite generates, and every table says so. eval, data info
    and data show also take a path to LMDBs (TextZoom's or the STR benchmark format).
    """


if __name__ == "__main__":
    main()
