"""Sample grids of a TensorSet: LR (shown at 2x, nearest, so its pixels stay visible), HR, label."""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw

from image_bench.data.render import _font, bundled_font_dir


def grid(ts, count: int = 16, columns: int = 2) -> Image.Image:
    n = min(count, len(ts))
    cell_w, cell_h = 128 * 2 + 8 + 12, 32 + 18  # LR x2 | HR, label line below
    rows = -(-n // columns)
    title_h = 18
    canvas = Image.new("RGB", (columns * cell_w + 8, rows * cell_h + title_h + 6), "white")
    draw = ImageDraw.Draw(canvas)
    font = _font(str(bundled_font_dir() / "DejaVuSans.ttf"), 11)
    ident = ts.identity
    draw.text((4, 3), f"{ident.get('name')}/{ident.get('split')}  ({ident.get('source')}, "
                      f"{ident.get('count')} samples)   left: LR 16x64 at 2x   right: HR 32x128",
              fill="black", font=font)
    for i in range(n):
        x = 4 + (i % columns) * cell_w
        y = title_h + (i // columns) * cell_h
        lr = Image.fromarray(ts.lr[i].permute(1, 2, 0).numpy().astype(np.uint8), "RGB")
        canvas.paste(lr.resize((128, 32), Image.NEAREST), (x, y))
        if ts.hr is not None:
            hr = Image.fromarray(ts.hr[i].permute(1, 2, 0).numpy().astype(np.uint8), "RGB")
            canvas.paste(hr, (x + 128 + 4, y))
        draw.text((x, y + 33), repr(ts.labels[i]), fill="black", font=font)
    return canvas
