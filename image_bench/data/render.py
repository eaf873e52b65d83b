"""Synthetic scene-text crops: word sampling and clean (HR) rendering.

Fonts are the ones matplotlib ships (DejaVu, STIX, Computer Modern: the same files on every
machine, so a seed gives the same pixels everywhere), plus any ``.ttf``/``.otf`` under extra font
directories. Words come from wordfreq's English list, mixed with numbers and alphanumeric codes.

The HR image is the clean render of a tight text crop at its natural aspect, about 32-44 px high,
as TextZoom's HR crops are later resized to 32x128 at load time. Everything is drawn with PIL and
numpy on small arrays; one sample costs well under a millisecond.
"""

from __future__ import annotations

import math
import os
import string
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
from PIL import Image, ImageFont

# matplotlib's bundled text faces with full ASCII coverage. Symbol/math faces (cmex, cmmi, cmsy,
# STIXNonUni, STIXSiz*, LastResort) map letters to other glyphs and are left out on purpose.
BUNDLED_FACES = (
    "DejaVuSans.ttf", "DejaVuSans-Bold.ttf", "DejaVuSans-Oblique.ttf", "DejaVuSans-BoldOblique.ttf",
    "DejaVuSansMono.ttf", "DejaVuSansMono-Bold.ttf", "DejaVuSerif.ttf", "DejaVuSerif-Bold.ttf",
    "DejaVuSerif-Italic.ttf", "DejaVuSerif-BoldItalic.ttf", "STIXGeneral.ttf", "STIXGeneralBol.ttf",
    "STIXGeneralItalic.ttf", "cmr10.ttf", "cmss10.ttf", "cmtt10.ttf", "cmb10.ttf",
)
MAX_CHARS = 20
# Kept out of the lexicon: the stand-in crops end up in committed figures.
BLOCKLIST = frozenset("""
anal anus arse ass asshole bastard bitch bitches blowjob boob boobs butt clit cock cocks cum cunt
dick dicks dildo dildos fag faggot fuck fucked fucker fuckers fucking fucks horny jizz milf nazi
nigga nigger niggas orgasm penis piss porn porno pussy rape raped rapist retard sex sexy shit
shits shitty slut sluts tit tits titties twat vagina whore whores
""".split())


def bundled_font_dir() -> Path:
    import matplotlib

    return Path(matplotlib.get_data_path()) / "fonts" / "ttf"


def font_paths(font_dirs: tuple[str, ...] = ()) -> tuple[str, ...]:
    """matplotlib's text faces, then every .ttf/.otf under ``font_dirs`` (sorted, so stable)."""
    base = bundled_font_dir()
    paths = [str(base / name) for name in BUNDLED_FACES if (base / name).is_file()]
    for directory in font_dirs:
        if not Path(directory).is_dir():
            raise FileNotFoundError(f"--font-dir {directory!r} is not a directory")
        found = sorted(str(p) for p in Path(directory).rglob("*")
                       if p.suffix.lower() in (".ttf", ".otf"))
        if not found:
            raise FileNotFoundError(f"--font-dir {directory!r} holds no .ttf/.otf fonts")
        paths.extend(found)
    if not paths:
        raise FileNotFoundError(f"no fonts: matplotlib's {base} is missing and no --font-dir given")
    return tuple(paths)


@lru_cache(maxsize=512)
def _font(path: str, size: int) -> ImageFont.FreeTypeFont:
    return ImageFont.truetype(path, size)


@dataclass(frozen=True)
class Glyph:
    mask: np.ndarray  # float32 coverage in [0,1]
    left: int  # offset from the pen position
    top: int  # offset from the line top (ascender line)
    advance: float


def _mask_array(core) -> np.ndarray:
    w, h = core.size
    return np.frombuffer(bytes(core), np.uint8).reshape(h, w)


@lru_cache(maxsize=65536)
def _glyph(path: str, size: int, ch: str, stroke: int) -> Glyph:
    """One glyph's coverage straight from FreeType (``getmask2``), without an ImageDraw canvas:
    a cache miss costs about half as much, and a short run misses often (17 faces x 13 sizes x 2
    weights x ~70 symbols)."""
    font = _font(path, size)
    core, (left, top) = font.getmask2(ch, "L", stroke_width=stroke)
    if core.size[0] == 0 or core.size[1] == 0:  # a blank glyph (e.g. a space) is one empty pixel
        return Glyph(np.zeros((1, 1), np.float32), left, top, font.getlength(ch) + stroke)
    mask = _mask_array(core).astype(np.float32)
    if stroke:  # faux bold: the stroked outline composited with the plain fill over it
        fill, (fl, ft) = font.getmask2(ch, "L")
        if fill.size[0] and fill.size[1]:
            inner = _mask_array(fill).astype(np.float32)
            region = mask[ft - top:ft - top + inner.shape[0], fl - left:fl - left + inner.shape[1]]
            region += inner * (1 - region * (1 / 255))
    mask *= 1 / 255
    return Glyph(mask, left, top, font.getlength(ch) + stroke)


GLYPH_SYMBOLS = string.ascii_letters + string.digits + "#$'+,-.:"  # every symbol sample_text emits


def warm_glyphs(fonts: tuple[str, ...], sizes: range, symbols: str = GLYPH_SYMBOLS) -> int:
    """Fill the glyph cache for every (font, size, weight, symbol): the steady state of a long run,
    where every glyph has been drawn once. Returns the number of glyphs."""
    n = 0
    for path in fonts:
        for size in sizes:
            for stroke in (0, 1):
                for ch in symbols:
                    _glyph(path, size, ch, stroke)
                    n += 1
    return n


# ----------------------------------------------------------------------------------------------
# words
# ----------------------------------------------------------------------------------------------
@lru_cache(maxsize=4)
def lexicon(n: int = 30000) -> tuple[tuple[str, ...], np.ndarray]:
    """wordfreq's top-n English words (ASCII only, <= MAX_CHARS) and their sampling CDF.

    Weights are rank^-0.6 rather than raw Zipf frequency (rank^-1): raw frequencies would make
    'the' 5% of all crops. wordfreq ships its lists inside the wheel, so this works offline.
    """
    import wordfreq

    words = [w for w in wordfreq.top_n_list("en", n) if w.isascii() and 0 < len(w) <= MAX_CHARS
             and any(c.isalnum() for c in w) and w.replace("'", "") not in BLOCKLIST
             and w.rstrip("s") not in BLOCKLIST]
    weights = np.arange(1, len(words) + 1, dtype=np.float64) ** -0.6
    cdf = np.cumsum(weights)
    return tuple(words), cdf / cdf[-1]


def _case(word: str, rng: np.random.Generator) -> str:
    u = rng.random()
    if u < 0.45:
        return word.lower()
    if u < 0.75:
        return word[:1].upper() + word[1:].lower()
    return word.upper()


def sample_text(rng: np.random.Generator) -> str:
    """A label: 70% lexicon word, 12% number, 13% alphanumeric code, 5% two short words."""
    words, cdf = lexicon()
    u = rng.random()
    if u < 0.70:
        text = _case(words[int(np.searchsorted(cdf, rng.random()))], rng)
    elif u < 0.82:
        digits = "".join(rng.choice(list(string.digits), size=int(rng.integers(1, 8))))
        v = rng.random()
        if v < 0.15 and len(digits) >= 3:  # prices, decimals, times
            cut = int(rng.integers(1, len(digits)))
            text = digits[:cut] + rng.choice([".", ",", ":"]) + digits[cut:]
        elif v < 0.25:
            text = rng.choice(["$", "#", "No", "+"]) + digits
        else:
            text = digits
    elif u < 0.95:
        alphabet = string.ascii_uppercase + string.digits
        n = int(rng.integers(2, 9))
        code = "".join(rng.choice(list(alphabet), size=n))
        if rng.random() < 0.3 and n >= 4:
            cut = int(rng.integers(1, n))
            code = code[:cut] + "-" + code[cut:]
        text = code if rng.random() < 0.8 else code.lower()
    else:
        a = words[int(np.searchsorted(cdf, rng.random()))]
        b = words[int(np.searchsorted(cdf, rng.random()))]
        text = _case(a + b if rng.random() < 0.5 else a + "-" + b, rng)
    text = text[:MAX_CHARS]
    if not any(c.isalnum() for c in text):  # a label must survive normalisation to [0-9a-z]
        text = "x" + text
    return text


# ----------------------------------------------------------------------------------------------
# backgrounds and colours
# ----------------------------------------------------------------------------------------------
def _luma(rgb: np.ndarray) -> float:
    return float(rgb @ np.array([0.299, 0.587, 0.114]))


def colour_pair(rng: np.random.Generator, min_contrast: float) -> tuple[np.ndarray, np.ndarray]:
    """(background, text) RGB in [0,1] whose luminances differ by at least ``min_contrast``."""
    for _ in range(20):
        bg = rng.random(3)
        if rng.random() < 0.5:  # desaturate: signs are often grey/white/black
            bg = np.full(3, bg.mean()) * 0.6 + bg * 0.4
        fg = rng.random(3)
        if rng.random() < 0.6:
            fg = np.full(3, 1.0 if _luma(bg) < 0.5 else 0.0) * 0.7 + fg * 0.3
        if abs(_luma(bg) - _luma(fg)) >= min_contrast:
            return bg, fg
    return (np.array([0.92, 0.92, 0.9]), np.array([0.08, 0.08, 0.1]))


def _ramp(start: float, stop: float, n: int) -> np.ndarray:
    """float32 np.linspace(start, stop, n) without linspace's per-call overhead (~10 us)."""
    step = (stop - start) / (n - 1) if n > 1 else 0.0
    return np.arange(n, dtype=np.float32) * np.float32(step) + np.float32(start)


def _zero_pad(a: np.ndarray, top: int, bottom: int, left: int, right: int) -> np.ndarray:
    """np.pad with zeros for 2-D arrays, without np.pad's per-call overhead."""
    out = np.zeros((a.shape[0] + top + bottom, a.shape[1] + left + right), a.dtype)
    out[top:top + a.shape[0], left:left + a.shape[1]] = a
    return out


def background(rng: np.random.Generator, h: int, w: int, base: np.ndarray,
               texture_weight: float = 1.0) -> np.ndarray:
    """float32 (h, w, 3) or broadcastable: flat, linear gradient or smooth texture."""
    kind = rng.random()
    base = base.astype(np.float32)
    if kind < 0.35:
        return base  # flat: broadcasts against (h, w, 3)
    if kind < 0.7:
        other = np.clip(base + rng.normal(0, 0.18, 3), 0, 1).astype(np.float32)
        angle = rng.uniform(0, 2 * math.pi)
        tx = _ramp(0, math.cos(angle), w)[None, :]
        ty = _ramp(0, math.sin(angle) * h / max(w, 1) * 3, h)[:, None]
        t = tx + ty
        t -= t.min()
        t *= 1 / max(float(t.max()), 1e-6)
        return base + t[..., None] * (other - base)
    # smooth texture: a coarse random grid upsampled bicubically, plus fine grain
    gh, gw = int(rng.integers(2, 6)), int(rng.integers(3, 16))
    grid = rng.normal(0, 0.12 * texture_weight, (gh, gw, 1)) + rng.normal(
        0, 0.03 * texture_weight, (gh, gw, 3))  # mostly luminance, a little chroma
    grid = np.clip(base + grid, 0, 1) * 255
    coarse = Image.fromarray(grid.astype(np.uint8), "RGB").resize((w, h), Image.BICUBIC)
    img = np.asarray(coarse, np.float32) * (1 / 255)
    return img + rng.normal(0, 0.02 * texture_weight, (h, w, 1)).astype(np.float32)


# ----------------------------------------------------------------------------------------------
# geometry
# ----------------------------------------------------------------------------------------------
def _perspective_coeffs(src: np.ndarray, dst: np.ndarray) -> tuple[float, ...]:
    """PIL PERSPECTIVE coefficients mapping output corners ``dst`` to input corners ``src``."""
    a = []
    for (x, y), (u, v) in zip(dst, src):
        a.append([x, y, 1, 0, 0, 0, -u * x, -u * y])
        a.append([0, 0, 0, x, y, 1, -v * x, -v * y])
    return tuple(np.linalg.solve(np.array(a, np.float64), src.reshape(8)).tolist())


def warp_mask(mask: Image.Image, rng: np.random.Generator, rotate_deg: float,
              perspective: float) -> Image.Image:
    """Slight rotation + perspective of the text mask in one resampling."""
    w, h = mask.size
    src = np.array([[0, 0], [w, 0], [w, h], [0, h]], np.float64)
    # jitter each corner (perspective) then rotate about the centre
    jitter = rng.uniform(-perspective, perspective, (4, 2)) * np.array([h, h])
    dst = src + jitter
    theta = math.radians(rotate_deg)
    c, s = math.cos(theta), math.sin(theta)
    centre = np.array([w / 2, h / 2])
    dst = (dst - centre) @ np.array([[c, -s], [s, c]]).T + centre
    # fit the output canvas to the warped corners
    lo = dst.min(0)
    dst -= lo
    size = np.ceil(dst.max(0)).astype(int) + 1
    coeffs = _perspective_coeffs(src, dst)
    return mask.transform((int(size[0]), int(size[1])), Image.PERSPECTIVE, coeffs, Image.BILINEAR)


def curve_mask(mask: np.ndarray, rng: np.random.Generator, amount: float) -> np.ndarray:
    """Bend the text along a parabola or half-sine: shift each column vertically (linear interp)."""
    h, w = mask.shape
    x = _ramp(-1, 1, w)
    shape = x * x if rng.random() < 0.6 else np.sin(x * math.pi / 2)
    offset = amount * h * shape * (1 if rng.random() < 0.5 else -1)
    offset -= offset.min()
    out_h = h + int(math.ceil(float(offset.max()))) + 1
    # gather: output row r of column c reads source row r - offset[c]
    src = np.arange(out_h, dtype=np.float32)[:, None] - offset[None, :]
    base = np.floor(src)
    frac = src - base
    base = base.astype(np.int64)
    padded = _zero_pad(mask, 1, 2, 0, 0)  # zero rows so out-of-range reads give 0
    lo = np.clip(base + 1, 0, h + 2)
    hi = np.clip(base + 2, 0, h + 2)
    cols = np.arange(w)[None, :]
    return padded[lo, cols] * (1 - frac) + padded[hi, cols] * frac


# ----------------------------------------------------------------------------------------------
# the renderer
# ----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Style:
    """Ranges of the clean render. ``ic15`` widens them for the IC15-352-like set."""

    font_size: tuple[int, int] = (22, 34)
    min_contrast: float = 0.3
    rotate_deg: float = 3.0
    perspective: float = 0.08  # corner jitter, fraction of the text height
    warp_prob: float = 0.6  # the rest are fronto-parallel, as most TextZoom crops are
    curve_prob: float = 0.15
    curve_amount: float = 0.25
    spacing_prob: float = 0.25
    stroke_prob: float = 0.12
    shadow_prob: float = 0.12
    texture_weight: float = 1.0
    margin: tuple[float, float] = (0.05, 0.25)  # crop margin, fraction of the text height


DEFAULT_STYLE = Style()
IC15_STYLE = Style(font_size=(20, 40), min_contrast=0.3, rotate_deg=8.0, perspective=0.25,
                   warp_prob=0.9, curve_prob=0.1, texture_weight=1.5, margin=(0.1, 0.4))


class Renderer:
    def __init__(self, font_dirs: tuple[str, ...] = (), style: Style = DEFAULT_STYLE):
        self.fonts = font_paths(tuple(font_dirs))
        self.style = style

    def text_mask(self, text: str, rng: np.random.Generator) -> np.ndarray:
        """float32 (h, w) coverage in [0,1] of ``text`` drawn in a random font, weight, spacing.

        Words are laid out from cached glyph masks (kerning is ignored): drawing each word with
        FreeType costs more than the rest of the pipeline.
        """
        st = self.style
        path = self.fonts[int(rng.integers(len(self.fonts)))]
        size = int(rng.integers(st.font_size[0], st.font_size[1] + 1))
        stroke = 1 if rng.random() < st.stroke_prob else 0  # faux bold
        spacing = 0.0
        if rng.random() < st.spacing_prob and len(text) > 1:
            spacing = float(rng.uniform(-0.04, 0.35)) * size
        glyphs = [_glyph(path, size, ch, stroke) for ch in text]
        ascent, descent = _font(path, size).getmetrics()
        lefts = []
        x = 0.0
        for g in glyphs:
            lefts.append(int(round(x)) + g.left)
            x += g.advance + spacing
        x0 = -min(min(lefts), 0) + 2
        width = max(lft + g.mask.shape[1] for lft, g in zip(lefts, glyphs)) + x0 + 2
        top = min(min(g.top for g in glyphs), 0)
        height = max(max(g.top + g.mask.shape[0] for g in glyphs), ascent + descent) - top + 4
        mask = np.zeros((height, max(width, 4)), np.float32)
        for lft, g in zip(lefts, glyphs):
            gh, gw = g.mask.shape
            y = g.top - top + 2
            region = mask[y:y + gh, lft + x0:lft + x0 + gw]
            np.maximum(region, g.mask, out=region)
        if rng.random() < st.warp_prob:
            pad = height // 4
            canvas = Image.fromarray((_zero_pad(mask, pad, pad, pad, pad) * 255).astype(np.uint8),
                                     "L")
            canvas = warp_mask(canvas, rng, float(rng.uniform(-st.rotate_deg, st.rotate_deg)),
                               float(rng.uniform(0, st.perspective)))
            mask = np.asarray(canvas, np.float32) * (1 / 255)
        if rng.random() < st.curve_prob:
            mask = curve_mask(mask, rng, float(rng.uniform(0.05, st.curve_amount)))
        return np.clip(mask, 0, 1)

    def render(self, text: str, rng: np.random.Generator) -> np.ndarray:
        """The clean HR crop of ``text``: uint8 (H, W, 3), tight box plus a random margin."""
        st = self.style
        mask = self.text_mask(text, rng)
        rows = np.flatnonzero(mask.max(1) > 0.05)
        cols = np.flatnonzero(mask.max(0) > 0.05)
        if rows.size == 0:
            raise ValueError(f"text {text!r} rendered empty")
        text_h = rows[-1] - rows[0] + 1
        # margins: top, bottom, left, right
        m = [int(round(text_h * rng.uniform(*st.margin))) for _ in range(4)]
        pad = max(m)
        mask = _zero_pad(mask, pad, pad, pad, pad)
        alpha = mask[rows[0] + pad - m[0]:rows[-1] + 1 + pad + m[1],
                     cols[0] + pad - m[2]:cols[-1] + 1 + pad + m[3]]
        h, w = alpha.shape
        # the optics of even a good camera: a faint [a, 1-2a, a] blur of the glyph edges, so HR
        # is not razor sharp (applied to the coverage, which holds all the sharp edges)
        a = float(rng.uniform(0.0, 0.2))
        if a > 0.02:
            soft = alpha * (1 - 2 * a)
            soft[1:] += a * alpha[:-1]
            soft[:-1] += a * alpha[1:]
            alpha = soft * (1 - 2 * a)
            alpha[:, 1:] += a * soft[:, :-1]
            alpha[:, :-1] += a * soft[:, 1:]
        bg_rgb, fg_rgb = colour_pair(rng, st.min_contrast)
        img = background(rng, h, w, bg_rgb, st.texture_weight)
        if rng.random() < st.shadow_prob:  # drop shadow in a darker/lighter tone
            dy, dx = int(rng.integers(1, 3)), int(rng.integers(-2, 3))
            shadow = np.zeros_like(alpha)
            shadow[dy:, max(dx, 0):w + min(dx, 0)] = alpha[:h - dy, max(-dx, 0):w - max(dx, 0)]
            tone = np.clip(bg_rgb * 0.35 if _luma(fg_rgb) > 0.5 else bg_rgb * 0.4 + 0.55, 0, 1)
            img = img + shadow[..., None] * (tone.astype(np.float32) - img)
        fg = background(rng, h, w, fg_rgb, 0.3) if rng.random() < 0.3 else fg_rgb.astype(np.float32)
        img = img + alpha[..., None] * (fg - img)
        # soft illumination falloff across the crop (sign or curved surface)
        if rng.random() < 0.4:
            light = float(rng.uniform(-0.2, 0.2)) * _ramp(-255, 255, w) + 255
            img *= light[None, :, None]  # the falloff and the scale to [0, 255] in one pass
        else:
            img *= 255
        img += 0.5
        np.clip(img, 0, 255, out=img)
        return img.astype(np.uint8)

    def sample(self, rng: np.random.Generator) -> tuple[str, np.ndarray]:
        text = sample_text(rng)
        return text, self.render(text, rng)


def env_font_dirs() -> tuple[str, ...]:
    """Extra font directories from IMAGE_BENCH_FONT_DIRS (os.pathsep-separated), if set."""
    raw = os.environ.get("IMAGE_BENCH_FONT_DIRS", "")
    return tuple(p for p in raw.split(os.pathsep) if p)
