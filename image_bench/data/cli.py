"""``image-bench data``: make, import, check and show data sets (TextZoom's LMDB format;
info and show also read the STR benchmark format)."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from image_bench.data.lmdb_format import DataError


@click.group("data")
def data():
    """Make, import, check and show data sets (TextZoom-format LMDBs; info and show also
    read the STR benchmark format)."""


@data.command("make")
@click.option("--profile", default="smoke", type=click.Choice(["smoke", "quick", "paper"]),
              show_default=True, help="Sizes of the sets (image_bench/profiles.py).")
@click.option("--out", type=click.Path(file_okay=False), default=None,
              help="Output directory [default: the stand-in cache that `resolve` reads, "
                   "$IMAGE_BENCH_CACHE/standin/<profile>-seed<seed>].")
@click.option("--seed", default=0, show_default=True, type=int)
@click.option("--workers", default=None, type=int, help="Processes [default: all cores].")
@click.option("--font-dir", "font_dirs", multiple=True, type=click.Path(file_okay=False),
              help="Extra directory of .ttf/.otf fonts (repeatable).")
@click.option("--set", "sets", multiple=True, type=click.Choice(["synth", "textzoom", "ic15-352"]),
              help="Only these sets (repeatable) [default: all].")
@click.option("--force", is_flag=True, help="Regenerate even if an identical set exists.")
def make(profile, out, seed, workers, font_dirs, sets, force):
    """Generate the stand-in sets: synth/{train,val}, textzoom/{train1,train2,test/*},
    ic15-352, with a manifest.json of counts and content hashes."""
    from image_bench.data.datasets import standin_root
    from image_bench.data.make import SETS, make_all

    out = Path(out) if out else standin_root(profile, seed)
    result = make_all(out, profile, seed, workers, tuple(font_dirs), force, quiet=False,
                      sets=tuple(sets) or SETS)
    for name, manifest in result.items():
        for split, info in manifest["splits"].items():
            label = f"{name}/{split}".rstrip("/.")
            click.echo(f"{label:<22} {info['count']:>8} records  {info['hash'][:16]}")
        click.echo(f"{name:<22} {manifest['seconds']:>8.1f} s  "
                   f"({manifest['pairs_per_second']:.0f} pairs/s on {manifest['workers']} workers)")
    click.echo(f"written under {out} (manifest.json)")


@data.command("import")
@click.argument("image_dir", type=click.Path(exists=True, file_okay=False))
@click.option("--labels", type=click.Path(dir_okay=False), default=None,
              help="filename<TAB>text per line [default: IMAGE_DIR/labels.tsv].")
@click.option("--hr-dir", type=click.Path(exists=True, file_okay=False), default=None,
              help="Folder of HR images with the same file names (else the set is LR-only).")
@click.option("--out", required=True, type=click.Path(file_okay=False),
              help="LMDB environment directory to create.")
@click.option("--allow-unicode", is_flag=True, help="Accept non-ASCII labels.")
@click.option("--overwrite", is_flag=True, help="Replace an existing LMDB at --out.")
def import_(image_dir, labels, hr_dir, out, allow_unicode, overwrite):
    """Build a TextZoom-format LMDB from IMAGE_DIR (the LR images) and labels.tsv."""
    from image_bench.data.importer import import_folder

    try:
        count, digest = import_folder(image_dir, labels, hr_dir, out,
                                      ascii_only=not allow_unicode, overwrite=overwrite)
    except DataError as err:
        click.echo(f"error: {err}", err=True)
        sys.exit(1)
    click.echo(f"{out}: {count} records ({'LR+HR' if hr_dir else 'LR-only'}), hash {digest[:16]}")


@data.command("info")
@click.argument("path", type=click.Path(exists=True))
@click.option("--ascii", "ascii_only", is_flag=True, help="Also require ASCII labels.")
def info(path, ascii_only):
    """Format and counts of every LMDB at or under PATH (TextZoom's format or the STR benchmark
    format, detected); decodes every record, exits 1 on a bad one."""
    from image_bench.charset import normalize
    from image_bench.data.benchmark_lmdb import DESCRIPTIONS, open_lmdb
    from image_bench.data.paths import find_lmdbs
    from image_bench.usage import UsageError

    try:
        envs = list(find_lmdbs(path).values())
    except DataError as err:
        raise UsageError(str(err)) from None
    for env in envs:
        try:
            with open_lmdb(env, ascii_only=ascii_only) as db:
                db.check()
                unscorable = sum(not normalize(rec.label) for rec in db.records())
                kind = "LR+HR" if db.has_hr else "LR-only"
                note = (f"; {unscorable} label(s) normalise to nothing (skipped when used)"
                        if unscorable else "")
                click.echo(f"{env}: {DESCRIPTIONS[db.FORMAT]}, {len(db)} records, {kind}, all "
                           f"decode{note}; hash {db.content_hash()[:16]}")
        except DataError as err:
            click.echo(f"error: {err}", err=True)
            sys.exit(1)


@data.command("show")
@click.argument("name")
@click.option("--profile", default="smoke", show_default=True)
@click.option("--data-root", default=None, help="Real data root [default: $IMAGE_BENCH_DATA].")
@click.option("--seed", default=0, show_default=True, type=int)
@click.option("--n", "count", default=16, show_default=True, help="Samples per split.")
@click.option("--out", default="figures/data", show_default=True, type=click.Path(file_okay=False))
def show(name, profile, data_root, seed, count, out):
    """Write a PNG grid of LR / HR / label samples for every split of NAME: a data set name
    (synth, textzoom, ic15-352) or a path to an LMDB or a folder of them (a grid per subset)."""
    from image_bench.data.datasets import resolve, splits
    from image_bench.data.paths import load_subset, set_name
    from image_bench.data.show import grid
    from image_bench.engine.cli_checks import check_eval_data

    subsets = check_eval_data(name, option="NAME")
    Path(out).mkdir(parents=True, exist_ok=True)
    if subsets is None:
        label = name
        sets = [resolve(name, split, profile, data_root=data_root, seed=seed)
                for split in splits(name)]
    else:
        label = set_name(name)
        for sub in subsets:
            click.echo(sub.describe())
        sets = [load_subset(sub, label) for sub in subsets]
    for ts in sets:
        split = ts.identity["split"]
        stem = label if split == label else f"{label}-{split}"
        path = Path(out) / f"{stem.replace('/', '-')}.png"
        grid(ts, count).save(path)
        click.echo(f"{path}  ({ts.identity['source']}, {ts.identity['count']} samples)")
