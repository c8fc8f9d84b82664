"""Synthetic scanned postal-code crops built from MNIST test digits, with per-digit ink boxes.

Each crop imitates a handwritten postal code cut out of a 200-300 dpi scan: dark ink on
off-white, unevenly lit paper; digits 5-8 mm tall with their own slant, size, stroke width,
spacing and baseline jitter; some adjacent pairs touching; an optional box or underline; a
hyphen (or a space) in the middle of a ZIP+4; slight blur, Gaussian scan noise and, on a share
of crops, JPEG artefacts. The true code and every digit's ink box come with the image, so a
segmenter or reader can be scored digit by digit.

Only numpy and Pillow are used. All randomness comes from the caller's `numpy.random.Generator`,
so `generate(count, ..., seed=s)` is reproducible.
"""

from __future__ import annotations

import io
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TypedDict, Unpack

import numpy as np
import numpy.typing as npt
from PIL import Image, ImageFilter

Bytes = npt.NDArray[np.uint8]
Mask = npt.NDArray[np.bool_]
Floats = npt.NDArray[np.float32]
Box = tuple[int, int, int, int]

FORMATS = {"4": "####", "5": "#####", "6": "######", "5+4": "#####-####"}

# Parameter ranges (all drawn per crop unless marked per digit).
DPI_RANGE = (200, 300)  # when dpi is None: uniform integer
DIGIT_MM = (5.0, 8.0)  # handwritten digit height; at 200-300 dpi this is ~40-90 px
DIGIT_PX = (40, 90)  # the digit height in pixels is clipped to this
HEIGHT_JITTER = 0.08  # per digit: height x U(1 - j, 1 + j)
ASPECT_JITTER = 0.12  # per digit: width x U(1 - j, 1 + j)
SLANT_DEG = 12.0  # writer's slant U(-12, 12) degrees, plus a per-digit wobble, clipped to +-12
SLANT_WOBBLE_DEG = 3.0
STROKE_GROW, STROKE_THIN = 0.3, 0.3  # per digit: chance of growing / thinning strokes by ~1 px
INK_EDGE = (90.0, 165.0)  # per digit: the upscaled MNIST level at which ink is half covering
INK_EDGE_WIDTH = 70.0  # ... and the level range over which coverage ramps from 0 to 1
INK_LEVEL = (20.0, 80.0)  # grey level of full ink on the paper (per crop, +-8 per digit)
PAPER_LEVEL = (200.0, 245.0)  # mean paper grey level
PAPER_TILT = 8.0  # linear illumination gradient: up to +-8 grey levels across the crop
PAPER_BLOTCH = 3.0  # smooth unevenness: sigma of a coarse random grid, bicubically upsampled
GAP = (0.08, 0.35)  # writer's usual gap between digits' ink boxes, x digit height
GAP_JITTER = 0.3  # per pair: gap x U(1 - j, 1 + j), at least 2 px
TOUCH_OVERLAP_PX = (0, 2)  # a touching pair: ink overlaps by 0..2 px (0 = adjacent pixels)
TOUCH_MAX_BOX_OVERLAP = 0.35  # ... but ink boxes overlap by at most this share of the narrower box
BASELINE_JITTER = 0.05  # per digit: baseline moves up to +-5 % of the digit height (>= 1 px)
BASELINE_SLOPE = 0.025  # the written line drifts up or down by up to 2.5 % of its length
HYPHEN_SHARE = 0.8  # a 5+4 code has a hyphen (else a wider space, and the code has " " there)
HYPHEN_LENGTH = (0.25, 0.5)  # x digit height
HYPHEN_THICKNESS = (0.07, 0.13)  # x digit height, at least 2 px
HYPHEN_GAP = (0.1, 0.25)  # space either side of the hyphen, x digit height
SPACE_GAP = (0.5, 0.9)  # the space that replaces a hyphen, x digit height
LINE_PAD = (0.12, 0.3)  # box line / underline distance from the digits' ink, x digit height, >= 3 px
LINE_WIDTH_PX = (1.0, 3.0)
LINE_ABSORB = (0.45, 0.85)  # share of the paper's light a box line absorbs
MARGIN_X, MARGIN_Y = (0.1, 0.5), (0.15, 0.4)  # paper around the content, x digit height, >= 2 px
BLUR_SIGMA = (0.3, 0.9)  # px
NOISE_SIGMA = (1.5, 5.0)  # grey levels
JPEG_SHARE = 0.3  # share of crops encoded and decoded as JPEG
JPEG_QUALITY = (60, 90)
BOX_COVERAGE = 0.25  # a pixel counts towards a digit's ink box where ink covers this share of it


@dataclass(frozen=True)
class Crop:
    """One synthetic postal-code crop and its ground truth."""

    image: Bytes  # (height, width) greyscale scan, dark ink on light paper unless inverted
    code: str  # the digits left to right with the separator drawn, e.g. "12345-6789" or "12345 6789"
    boxes: list[Box]  # (left, top, right, bottom) of each digit's ink, right/bottom exclusive, in code order
    fmt: str  # key of FORMATS
    masks: list[Mask]  # each digit's own ink within its box (where it covers BOX_COVERAGE), even where touched


class CropOptions(TypedDict, total=False):
    """The keyword options of make_crop, as generate() passes them on."""

    dpi: int | None
    touching: float
    box_line: float
    inverted: bool


@dataclass
class _Glyph:
    """Ink coverage in [0, 1] of one mark, placed with its top-left corner at (x, y)."""

    cover: Floats
    absorb: float  # share of the paper's light full coverage absorbs
    box: Box  # ink box in the glyph's own pixels, right/bottom exclusive
    x: int = 0
    y: int = 0


def _uniform(rng: np.random.Generator, bounds: tuple[float, float]) -> float:
    return float(rng.uniform(bounds[0], bounds[1]))


def _ink_box(cover: Floats) -> Box:
    rows = np.flatnonzero((cover >= BOX_COVERAGE).any(axis=1))
    cols = np.flatnonzero((cover >= BOX_COVERAGE).any(axis=0))
    if rows.size == 0:  # too faint to box: fall back to any ink at all
        rows = np.flatnonzero((cover > 0).any(axis=1))
        cols = np.flatnonzero((cover > 0).any(axis=0))
    return int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1


def _digit(rng: np.random.Generator, pixels: Bytes, height: float, slant: float, absorb: float) -> _Glyph:
    """Upscale one MNIST digit's ink box to `height` px and give it its own pen and slant."""
    field = pixels.reshape(28, 28)
    rows = np.flatnonzero((field > 30).any(axis=1))
    cols = np.flatnonzero((field > 30).any(axis=0))
    if rows.size == 0:
        rows = cols = np.arange(4, 24)
    ink = np.pad(field[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1], 2)
    scale = height / (rows[-1] - rows[0] + 1)
    aspect = 1.0 + _uniform(rng, (-ASPECT_JITTER, ASPECT_JITTER))
    size = (max(3, round(ink.shape[1] * scale * aspect)), max(3, round(ink.shape[0] * scale)))
    image = Image.fromarray(ink).resize(size, Image.Resampling.BICUBIC)
    pen = rng.random()
    if pen < STROKE_GROW:
        image = image.filter(ImageFilter.MaxFilter(3))
    elif pen < STROKE_GROW + STROKE_THIN:
        image = image.filter(ImageFilter.MinFilter(3))
    shear = math.tan(math.radians(slant))  # > 0: the top leans right
    if abs(shear) > 1e-3:
        width, tall = image.size
        extra = math.ceil(abs(shear) * tall)
        shift = max(0.0, -shear * (tall - 1))
        # Pillow maps output to input: x_in = x + shear * y - shear * (tall - 1) - shift.
        image = image.transform((width + extra, tall), Image.Transform.AFFINE,
                                (1.0, shear, -shear * (tall - 1) - shift, 0.0, 1.0, 0.0),
                                resample=Image.Resampling.BICUBIC)
    level = np.asarray(image, dtype=np.float32)
    edge = _uniform(rng, INK_EDGE)
    cover = np.clip((level - (edge - INK_EDGE_WIDTH / 2)) / INK_EDGE_WIDTH, 0.0, 1.0)
    left, top, right, bottom = _ink_box(cover)
    cover = cover[top:bottom, left:right]  # trims to the ink box: glyph box is the whole array
    box = _ink_box(cover)
    return _Glyph(np.ascontiguousarray(cover), absorb, box)


def _segment(length: float, thickness: float, angle: float) -> Floats:
    """Anti-aliased coverage of a straight stroke with round ends, tilted by `angle` radians."""
    dx, dy = math.cos(angle) * length / 2, math.sin(angle) * length / 2
    half = thickness / 2
    width = math.ceil(2 * abs(dx) + thickness) + 2
    height = math.ceil(2 * abs(dy) + thickness) + 2
    ys = np.arange(height, dtype=np.float32)[:, None] + 0.5 - height / 2
    xs = np.arange(width, dtype=np.float32)[None, :] + 0.5 - width / 2
    seg2 = 4 * (dx * dx + dy * dy)
    t = np.clip(((xs + dx) * 2 * dx + (ys + dy) * 2 * dy) / max(seg2, 1e-6), 0.0, 1.0)
    distance = np.hypot(xs + dx - t * 2 * dx, ys + dy - t * 2 * dy)
    return np.clip(half - distance + 0.5, 0.0, 1.0).astype(np.float32)


def _line_glyph(x0: float, y0: float, x1: float, y1: float, thickness: float, absorb: float) -> _Glyph:
    """A straight line from (x0, y0) to (x1, y1), as a glyph placed in layout coordinates."""
    cover = _segment(math.hypot(x1 - x0, y1 - y0), thickness, math.atan2(y1 - y0, x1 - x0))
    height, width = cover.shape
    x = round((x0 + x1) / 2 - width / 2)
    y = round((y0 + y1) / 2 - height / 2)
    return _Glyph(cover, absorb, _ink_box(cover), x, y)


def _contact(left: _Glyph, right: _Glyph) -> int | None:
    """Smallest x offset of `right` from `left` at which their ink (in rows both have) would overlap."""
    top = max(left.y, right.y)
    bottom = min(left.y + left.cover.shape[0], right.y + right.cover.shape[0])
    if bottom <= top:
        return None
    a = left.cover[top - left.y:bottom - left.y] >= BOX_COVERAGE
    b = right.cover[top - right.y:bottom - right.y] >= BOX_COVERAGE
    rows = a.any(axis=1) & b.any(axis=1)
    if not rows.any():
        return None
    last = a.shape[1] - 1 - np.argmax(a[rows, ::-1], axis=1)  # rightmost ink of the left glyph
    first = np.argmax(b[rows], axis=1)  # leftmost ink of the right glyph
    return int((last - first).max())


def _blur(image: Floats, sigma: float) -> Floats:
    """Separable Gaussian blur with a 5-tap kernel (sigma < ~1 px), edges replicated."""
    taps = np.exp(-0.5 * (np.arange(-2, 3) / sigma) ** 2).astype(np.float32)
    taps /= taps.sum()
    padded = np.pad(image, 2, mode="edge")
    rows = np.zeros((padded.shape[0], image.shape[1]), dtype=np.float32)
    for k, weight in enumerate(taps):
        rows += weight * padded[:, k:k + image.shape[1]]
    out = np.zeros_like(image)
    for k, weight in enumerate(taps):
        out += weight * rows[k:k + image.shape[0]]
    return out


def _paper(rng: np.random.Generator, height: int, width: int, level: float) -> Floats:
    """Off-white paper around grey `level`, with a linear illumination gradient and smooth blotches."""
    ys = np.linspace(-0.5, 0.5, height, dtype=np.float32)[:, None]
    xs = np.linspace(-0.5, 0.5, width, dtype=np.float32)[None, :]
    gx, gy = rng.uniform(-PAPER_TILT, PAPER_TILT, 2)
    grid = rng.normal(0.0, PAPER_BLOTCH, (3, 4)).astype(np.float32)
    blotch: Floats = np.asarray(Image.fromarray(grid, mode="F").resize((width, height), Image.Resampling.BICUBIC),
                                dtype=np.float32)
    paper = level + float(gx) * xs + float(gy) * ys + blotch
    return np.clip(paper, PAPER_LEVEL[0] - 5, PAPER_LEVEL[1] + 5).astype(np.float32)


def make_crop(rng: np.random.Generator, images: Bytes, labels: Bytes, fmt: str = "5", *,
              dpi: int | None = None, touching: float = 0.15, box_line: float = 0.1,
              inverted: bool = False) -> Crop:
    """One scanned handwritten postal code in format `fmt`, its digits drawn from `images`.

    images: MNIST digits (n, 784) uint8, ink bright on black; labels: (n,) their digits.
    dpi: the scan's resolution (uniform in 200..300 when None); touching: the share of adjacent
    digit pairs whose ink touches or slightly overlaps; box_line: the chance of a thin box around
    the digits or a line under them; inverted: light ink on dark paper.
    """
    if fmt not in FORMATS:
        raise ValueError(f"unknown format {fmt!r}; expected one of {sorted(FORMATS)}")
    if images.ndim != 2 or images.shape[1] != 784 or len(images) != len(labels) or len(images) == 0:
        raise ValueError(f"images must be (n, 784) with n labels, got {images.shape} and {labels.shape}")
    if not (0.0 <= touching <= 1.0 and 0.0 <= box_line <= 1.0):
        raise ValueError("touching and box_line are probabilities in [0, 1]")
    pattern = FORMATS[fmt]
    count = pattern.count("#")
    if dpi is None:
        dpi = int(rng.integers(DPI_RANGE[0], DPI_RANGE[1] + 1))
    size = float(np.clip(_uniform(rng, DIGIT_MM) / 25.4 * dpi, *DIGIT_PX))

    # The writer: slant, spacing, ink; then each digit, bottoms on a jittered, drifting baseline.
    slant = _uniform(rng, (-SLANT_DEG, SLANT_DEG))
    gap = _uniform(rng, GAP) * size
    paper_level = _uniform(rng, PAPER_LEVEL)
    ink = _uniform(rng, INK_LEVEL)
    picks = rng.integers(0, len(images), count)
    heights = size * rng.uniform(1 - HEIGHT_JITTER, 1 + HEIGHT_JITTER, count)
    slants = np.clip(slant + rng.uniform(-SLANT_WOBBLE_DEG, SLANT_WOBBLE_DEG, count), -SLANT_DEG, SLANT_DEG)
    inks = np.clip(ink + rng.uniform(-8.0, 8.0, count), 5.0, paper_level - 60.0)
    jitter = max(1, round(BASELINE_JITTER * size))
    lifts = rng.integers(-jitter, jitter + 1, count)
    glyphs = [_digit(rng, images[i], float(h), float(s), 1.0 - float(k) / paper_level)
              for i, h, s, k in zip(picks, heights, slants, inks, strict=True)]
    slope = _uniform(rng, (-BASELINE_SLOPE, BASELINE_SLOPE)) * 0.75 * size  # px per digit
    for index, (glyph, lift) in enumerate(zip(glyphs, lifts, strict=True)):
        glyph.y = -glyph.box[3] + int(lift) + round(slope * index)

    # Left to right: the usual gap, or touching ink, or the hyphen / space of a ZIP+4.
    marks: list[_Glyph] = list(glyphs)  # everything inked
    touches = rng.random(count) < touching
    split = pattern.find("-")  # digits before the hyphen, or -1
    separator = "-"
    for index in range(1, count):
        glyph, before = glyphs[index], glyphs[index - 1]
        before_right = before.x + before.box[2]
        if index == split:
            if rng.random() < HYPHEN_SHARE:
                hyphen = _hyphen(rng, size, ink / paper_level, before_right, round(slope * (index - 0.5)))
                marks.append(hyphen)
                before_right = hyphen.x + hyphen.box[2] + max(2, round(_uniform(rng, HYPHEN_GAP) * size))
            else:
                before_right += round(_uniform(rng, SPACE_GAP) * size)
                separator = " "  # what the reader writes for a wide gap
            glyph.x = before_right - glyph.box[0]
            continue
        glyph.x = before_right + max(2, round(gap * rng.uniform(1 - GAP_JITTER, 1 + GAP_JITTER))) - glyph.box[0]
        if touches[index]:
            contact = _contact(before, glyph)
            if contact is not None:
                overlap = int(rng.integers(TOUCH_OVERLAP_PX[0], TOUCH_OVERLAP_PX[1] + 1))
                narrow = min(before.box[2] - before.box[0], glyph.box[2] - glyph.box[0])
                least = before_right - round(TOUCH_MAX_BOX_OVERLAP * narrow) - glyph.box[0]
                glyph.x = max(before.x + contact + 1 - overlap, least)

    if rng.random() < box_line:
        marks.extend(_rule(rng, marks, size))
    image, origin = _render(rng, marks, size, paper_level)
    if inverted:
        image = 255 - image
    if rng.random() < JPEG_SHARE:
        quality = int(rng.integers(JPEG_QUALITY[0], JPEG_QUALITY[1] + 1))
        image = np.asarray(Image.open(io.BytesIO(_encode(image, "JPEG", quality=quality))).convert("L"))
    height, width = image.shape
    boxes, masks = [], []
    for glyph in glyphs:
        x, y = glyph.x - origin[0], glyph.y - origin[1]
        left, top, right, bottom = glyph.box
        left, right = (min(max(v + x, 0), width) for v in (left, right))
        top, bottom = (min(max(v + y, 0), height) for v in (top, bottom))
        boxes.append((left, top, right, bottom))
        masks.append(glyph.cover[top - y:bottom - y, left - x:right - x] >= BOX_COVERAGE)
    digits = iter(str(int(labels[i])) for i in picks)
    code = "".join(next(digits) if c == "#" else separator for c in pattern)
    return Crop(image=image, code=code, boxes=boxes, fmt=fmt, masks=masks)


def _hyphen(rng: np.random.Generator, size: float, ink: float, after: int, baseline: int) -> _Glyph:
    """A short, thick, nearly level stroke at mid-height, a little after x = `after`."""
    thickness = max(2.0, _uniform(rng, HYPHEN_THICKNESS) * size)
    cover = _segment(_uniform(rng, HYPHEN_LENGTH) * size, thickness, math.radians(_uniform(rng, (-5.0, 5.0))))
    box = _ink_box(cover)
    x = after + max(2, round(_uniform(rng, HYPHEN_GAP) * size)) - box[0]
    middle = baseline - _uniform(rng, (0.4, 0.6)) * size
    y = round(middle - (box[1] + box[3]) / 2)
    return _Glyph(cover, 1.0 - ink, box, x, y)


def _extent(marks: Sequence[_Glyph]) -> Box:
    """Union of the marks' ink boxes in layout coordinates."""
    return (min(m.x + m.box[0] for m in marks), min(m.y + m.box[1] for m in marks),
            max(m.x + m.box[2] for m in marks), max(m.y + m.box[3] for m in marks))


def _rule(rng: np.random.Generator, marks: Sequence[_Glyph], size: float) -> list[_Glyph]:
    """A thin box around the marks (half the time) or a line under them, clear of the ink."""
    left, top, right, bottom = _extent(marks)
    thickness = _uniform(rng, LINE_WIDTH_PX)
    absorb = _uniform(rng, LINE_ABSORB)

    def pad() -> float:
        return max(3.0, _uniform(rng, LINE_PAD) * size) + thickness / 2

    def wobble() -> float:
        return _uniform(rng, (-1.5, 1.5))

    if rng.random() < 0.5:
        y = bottom + pad()
        return [_line_glyph(left - pad(), y + wobble(), right + pad(), y + wobble(), thickness, absorb)]
    x0, y0, x1, y1 = left - pad(), top - pad(), right + pad(), bottom + pad()
    corners = [(x0 + wobble(), y0 + wobble()), (x1 + wobble(), y0 + wobble()),
               (x1 + wobble(), y1 + wobble()), (x0 + wobble(), y1 + wobble())]
    return [_line_glyph(*a, *b, thickness, absorb) for a, b in zip(corners, corners[1:] + corners[:1], strict=True)]


def _render(rng: np.random.Generator, marks: Sequence[_Glyph], size: float,
            paper_level: float) -> tuple[Bytes, tuple[int, int]]:
    """Ink the marks onto paper with margins; blur, add scan noise. Returns the image and its layout origin."""
    left, top, right, bottom = _extent(marks)
    margin_x = [max(2, round(_uniform(rng, MARGIN_X) * size)) for _ in range(2)]
    margin_y = [max(2, round(_uniform(rng, MARGIN_Y) * size)) for _ in range(2)]
    origin = (left - margin_x[0], top - margin_y[0])
    width = right - left + sum(margin_x)
    height = bottom - top + sum(margin_y)
    absorb = np.zeros((height, width), dtype=np.float32)
    for mark in marks:
        x, y = mark.x - origin[0], mark.y - origin[1]
        h, w = mark.cover.shape
        x0, y0, x1, y1 = max(x, 0), max(y, 0), min(x + w, width), min(y + h, height)
        if x1 <= x0 or y1 <= y0:
            continue
        region = absorb[y0:y1, x0:x1]
        np.maximum(region, mark.absorb * mark.cover[y0 - y:y1 - y, x0 - x:x1 - x], out=region)
    paper = _paper(rng, height, width, paper_level)
    scan = _blur(paper * (1.0 - absorb), _uniform(rng, BLUR_SIGMA))
    scan += rng.standard_normal((height, width), dtype=np.float32) * _uniform(rng, NOISE_SIGMA)
    return np.clip(scan + 0.5, 0, 255).astype(np.uint8), origin


def _encode(image: Bytes, kind: str, **params: int) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(image, mode="L").save(buffer, kind, **params)
    return buffer.getvalue()


def png_bytes(crop: Crop) -> bytes:
    """The crop's image as a greyscale PNG."""
    return _encode(crop.image, "PNG")


def jpeg_bytes(crop: Crop, quality: int) -> bytes:
    """The crop's image as a greyscale JPEG at `quality` (1-95)."""
    if not 1 <= quality <= 95:
        raise ValueError(f"JPEG quality must be 1-95, got {quality}")
    return _encode(crop.image, "JPEG", quality=quality)


def generate(count: int, images: Bytes, labels: Bytes, *, formats: Sequence[str] = ("5",), seed: int = 0,
             **options: Unpack[CropOptions]) -> list[Crop]:
    """`count` crops, each in a format drawn uniformly from `formats`; the same seed gives the same crops."""
    if not formats or any(f not in FORMATS for f in formats):
        raise ValueError(f"formats must be a non-empty selection of {sorted(FORMATS)}, got {list(formats)}")
    rng = np.random.default_rng(seed)
    return [make_crop(rng, images, labels, formats[int(rng.integers(len(formats)))], **options)
            for _ in range(count)]
