"""``image-bench data``: make, import, check and show TextZoom-format data sets."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from image_bench.data.lmdb_format import DataError


@click.group("data")
def data():
    """Make, import, check and show TextZoom-format data sets."""


@data.command("make")
@click.option("--profile", default="smoke", type=click.Choice(["smoke", "quick", "paper"]),
              show_default=True, help="Sizes of the sets (experiments/profiles.py).")
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
    """Counts of every LMDB at or under PATH; decodes every record, exits 1 on a bad one."""
    from image_bench.data.lmdb_format import TextZoomLMDB

    root = Path(path)
    envs = [root] if (root / "data.mdb").is_file() else sorted(
        p.parent for p in root.rglob("data.mdb"))
    if not envs:
        click.echo(f"error: {root}: no LMDB environment (data.mdb) at or under it", err=True)
        sys.exit(1)
    for env in envs:
        try:
            with TextZoomLMDB(env, ascii_only=ascii_only) as db:
                db.check()
                kind = "LR+HR" if db.has_hr else "LR-only"
                click.echo(f"{env}: {len(db)} records, {kind}, all decode; "
                           f"hash {db.content_hash()[:16]}")
        except DataError as err:
            click.echo(f"error: {err}", err=True)
            sys.exit(1)


@data.command("show")
@click.argument("name", type=click.Choice(["synth", "textzoom", "ic15-352"]))
@click.option("--profile", default="smoke", show_default=True)
@click.option("--data-root", default=None, help="Real data root [default: $IMAGE_BENCH_DATA].")
@click.option("--seed", default=0, show_default=True, type=int)
@click.option("--n", "count", default=16, show_default=True, help="Samples per split.")
@click.option("--out", default="figures/data", show_default=True, type=click.Path(file_okay=False))
def show(name, profile, data_root, seed, count, out):
    """Write a PNG grid of LR / HR / label samples for every split of NAME."""
    from image_bench.data.datasets import resolve, splits
    from image_bench.data.show import grid

    Path(out).mkdir(parents=True, exist_ok=True)
    for split in splits(name):
        ts = resolve(name, split, profile, data_root=data_root, seed=seed)
        path = Path(out) / f"{name}-{split.replace('/', '-')}.png"
        grid(ts, count).save(path)
        click.echo(f"{path}  ({ts.identity['source']}, {ts.identity['count']} samples)")
