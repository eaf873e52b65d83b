"""``image-bench read RUN IMAGE_OR_DIR...``: a trained run reads a user's own images.

Each image (any size, any mode PIL opens: grey, RGBA, palette, 16-bit) is read as the suite's LR
input exactly as evaluation reads a data set (``lmdb_format.decode_image``: RGB, PIL bicubic to
64x16, aspect not kept). One ``PATH<TAB>TEXT`` line per image goes to stdout: the labels file that
``image-bench data import . --labels FILE`` takes back after correction (the paths are as found,
so relative to the current folder). An SR model (read by ``--recognizer RUN``) and IMAGE write
their SR image per input under ``--out`` (``<name>.sr.png``, 128x32); IMAGE with ``--steps`` also
writes each iteration's I_i (``<name>.I_<i>.png``) and the text p_i of each iteration
(``steps.tsv``). A file that cannot be read is named on stderr and skipped; the exit status is
then 1.
"""

from __future__ import annotations

import sys
from pathlib import Path

import click
import numpy as np

# what a folder is searched for; a file named on the command line is tried whatever its suffix
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".jfif", ".bmp", ".gif", ".tif", ".tiff", ".webp",
                  ".pgm", ".ppm", ".pbm", ".pnm", ".tga"}


def find_images(inputs: tuple[str, ...]) -> list[tuple[Path, Path]]:
    """(path, output stem) per image: a file as given, a folder's images at any depth, sorted.

    The stem (the path inside the folder given, or the file's name, without suffix) names the
    outputs under --out; where two inputs share one, later ones get -2, -3, ...
    """
    found = []
    for arg in inputs:
        path = Path(arg)
        if path.is_dir():
            found += [(f, f.relative_to(path).with_suffix("")) for f in sorted(path.rglob("*"))
                      if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES]
        else:
            found.append((path, Path(path.stem)))
    taken, out = set(), []
    for path, stem in found:
        unique, n = stem, 1
        while unique in taken:
            n += 1
            unique = stem.with_name(f"{stem.name}-{n}")
        taken.add(unique)
        out.append((path, unique))
    return out


def load_lr(path: Path) -> np.ndarray:
    """The LR input (uint8 16x64x3) of one image file; DataError or OSError if unreadable."""
    from image_bench.data.lmdb_format import LR_SIZE, DataError, decode_image

    if "\t" in str(path) or "\n" in str(path):
        raise DataError(path, None, "a tab or newline in the name cannot be written as TSV")
    return decode_image(path.read_bytes(), LR_SIZE, path=path)


def save_png(image, path: Path) -> None:
    """A (3, H, W) float image in [0, 1] (clamped) as an 8-bit RGB PNG."""
    from PIL import Image

    array = image.detach().float().clamp(0, 1).mul(255).round().byte().permute(1, 2, 0)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array.cpu().numpy(), "RGB").save(path)


def check_roles(model_kind: str, rec_kind: str | None, out, steps: bool) -> None:
    """Which options fit which kind of model; a mismatch is a usage error before any work."""
    from image_bench.usage import UsageError

    if model_kind == "aux":
        raise UsageError("RUN is a helper network, not a method that reads images")
    if model_kind == "sr" and rec_kind is None:
        raise UsageError("RUN is an SR model: give --recognizer RUN to read its output")
    if model_kind != "sr" and rec_kind is not None:
        raise UsageError(f"--recognizer: RUN is a {model_kind} model and reads by itself")
    if rec_kind is not None and rec_kind != "recognizer":
        raise UsageError(f"--recognizer: that run is a {rec_kind} model, not a recognizer")
    if model_kind == "recognizer" and out is not None:
        raise UsageError("--out: RUN is a recognizer and makes no SR image")
    if steps and (model_kind != "joint" or out is None):
        raise UsageError("--steps: needs IMAGE (a joint model) and --out")


def _load_run(run_dir: Path, device: str):
    from image_bench.engine.checkpoint import load_model
    from image_bench.engine.cli import _run_inputs

    cfg, helpers = _run_inputs(run_dir)
    return cfg, load_model(cfg, run_dir / "best.pt", device=device, helper_checkpoints=helpers)


@click.command("read")
@click.argument("run_dir", metavar="RUN", type=click.Path(exists=True, file_okay=False,
                                                          path_type=Path))
@click.argument("inputs", metavar="IMAGE_OR_DIR...", nargs=-1, required=True)
@click.option("--recognizer", "rec_dir", type=click.Path(exists=True, file_okay=False,
                                                         path_type=Path), default=None,
              help="Run folder of the recognizer that reads an SR model's output.")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Folder for the SR image of each input (<name>.sr.png), for SR models and "
                   "IMAGE.")
@click.option("--steps", is_flag=True,
              help="IMAGE: also write each iteration's I_i (<name>.I_<i>.png) and its text p_i "
                   "(steps.tsv) under --out.")
@click.option("--batch-size", default=64, show_default=True, type=click.IntRange(min=1))
@click.option("--device", default=None, help="cpu, cuda, cuda:1 (default: cuda if present).")
def read(run_dir, inputs, rec_dir, out, steps, batch_size, device):
    """Read the text in each image of IMAGE_OR_DIR... (files, or folders searched at any depth)
    with the trained run RUN; prints PATH<TAB>TEXT per image, the labels file that `image-bench
    data import . --labels FILE` takes.

    Every model reads an image as the suite's LR input: RGB, resized with PIL bicubic to 64x16,
    aspect not kept, as evaluation reads its data sets. Unreadable files are named on stderr and
    skipped (exit 1 at the end).
    """
    import torch

    from image_bench.data.lmdb_format import DataError
    from image_bench.engine.cli import _run_inputs
    from image_bench.engine.cli_checks import check_model
    from image_bench.engine.evaluate import default_device, forward_method
    from image_bench.usage import UsageError

    cfg, _ = _run_inputs(run_dir)
    rec_kind = None if rec_dir is None else getattr(check_model(_run_inputs(rec_dir)[0].model),
                                                    "kind", "sr")
    check_roles(getattr(check_model(cfg.model), "kind", "sr"), rec_kind, out, steps)
    images = find_images(inputs)
    if not images:
        raise UsageError(f"no images ({', '.join(sorted(IMAGE_SUFFIXES))}) in "
                         f"{', '.join(inputs)}")
    dev = device or str(default_device())
    _, model = _load_run(run_dir, dev)
    recognizer = None if rec_dir is None else _load_run(rec_dir, dev)[1]
    failed = 0
    step_rows = []
    for start in range(0, len(images), batch_size):
        batch, arrays = [], []
        for path, stem in images[start:start + batch_size]:
            try:
                arrays.append(load_lr(path))
                batch.append((path, stem))
            except (DataError, OSError) as err:
                failed += 1
                reason = err.message if isinstance(err, DataError) else err.strerror or err
                click.echo(f"image-bench read: skipped {path}: {reason}", err=True)
        if not batch:
            continue
        lr = torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).to(dev).float().div_(255)
        res = forward_method(model, lr, recognizer)
        for i, (path, stem) in enumerate(batch):
            click.echo(f"{path}\t{res['texts'][i]}")
            if out is not None and res["sr"] is not None:
                save_png(res["sr"][i], out / f"{stem}.sr.png")
            if steps:
                for name, value in res["steps"].items():
                    if name.startswith("I_"):
                        save_png(value[i], out / f"{stem}.{name}.png")
                step_names = [k for k in res["steps"] if k.startswith("p_")]
                texts = [res["steps"][k][i] for k in step_names]
                step_rows.append("\t".join([str(path), *texts, res["texts"][i]]))
        sys.stdout.flush()
    if steps and step_rows:
        header = "\t".join(["# path", *step_names, "final"])
        (out / "steps.tsv").write_text("\n".join([header, *step_rows]) + "\n")
    if failed:
        click.echo(f"image-bench read: {failed} of {len(images)} file(s) could not be read",
                   err=True)
        sys.exit(1)
