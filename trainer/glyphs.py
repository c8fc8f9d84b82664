"""The marks a pen makes on a synthetic postal-code crop (trainer/synth.py): MNIST digits with
their own size, slant and pen, a hyphen, a box or an underline, each as ink coverage in [0, 1]
placed in layout coordinates. All randomness comes from the caller's generator."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageFilter

from digits.arrays import Box, Bytes, Floats

HEIGHT_JITTER = 0.08  # per digit: height x U(1 - j, 1 + j)
ASPECT_JITTER = 0.12  # per digit: width x U(1 - j, 1 + j)
STROKE_GROW, STROKE_THIN = 0.3, 0.3  # per digit: chance of growing / thinning strokes by ~1 px
INK_EDGE = (90.0, 165.0)  # per digit: the upscaled MNIST level at which ink is half covering
INK_EDGE_WIDTH = 70.0  # ... and the level range over which coverage ramps from 0 to 1
HYPHEN_LENGTH = (0.25, 0.5)  # x digit height
HYPHEN_THICKNESS = (0.07, 0.13)  # x digit height, at least 2 px
HYPHEN_GAP = (0.1, 0.25)  # space either side of the hyphen, x digit height
LINE_PAD = (0.12, 0.3)  # box line / underline distance from the digits' ink, x digit height, >= 3 px
LINE_WIDTH_PX = (1.0, 3.0)
LINE_ABSORB = (0.45, 0.85)  # share of the paper's light a box line absorbs
BOX_COVERAGE = 0.25  # a pixel counts towards a digit's ink box where ink covers this share of it


@dataclass
class Glyph:
    """Ink coverage in [0, 1] of one mark, placed with its top-left corner at (x, y)."""

    cover: Floats
    absorb: float  # share of the paper's light full coverage absorbs
    box: Box  # ink box in the glyph's own pixels, right/bottom exclusive
    x: int = 0
    y: int = 0


def uniform(rng: np.random.Generator, bounds: tuple[float, float]) -> float:
    return float(rng.uniform(bounds[0], bounds[1]))


def ink_box(cover: Floats) -> Box:
    rows = np.flatnonzero((cover >= BOX_COVERAGE).any(axis=1))
    cols = np.flatnonzero((cover >= BOX_COVERAGE).any(axis=0))
    if rows.size == 0:  # too faint to box: fall back to any ink at all
        rows = np.flatnonzero((cover > 0).any(axis=1))
        cols = np.flatnonzero((cover > 0).any(axis=0))
    return int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1


def digit(rng: np.random.Generator, pixels: Bytes, height: float, slant: float, absorb: float) -> Glyph:
    """Upscale one MNIST digit's ink box to `height` px and give it its own pen and slant."""
    field = pixels.reshape(28, 28)
    rows = np.flatnonzero((field > 30).any(axis=1))
    cols = np.flatnonzero((field > 30).any(axis=0))
    if rows.size == 0:
        rows = cols = np.arange(4, 24)
    ink = np.pad(field[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1], 2)
    scale = height / (rows[-1] - rows[0] + 1)
    aspect = 1.0 + uniform(rng, (-ASPECT_JITTER, ASPECT_JITTER))
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
    edge = uniform(rng, INK_EDGE)
    cover = np.clip((level - (edge - INK_EDGE_WIDTH / 2)) / INK_EDGE_WIDTH, 0.0, 1.0)
    if not cover.any():  # a faint digit thinned by the pen to below the ink's edge: keep its strokes as they are
        cover = np.clip(level / max(float(level.max()), 1.0), 0.0, 1.0)
    left, top, right, bottom = ink_box(cover)
    cover = cover[top:bottom, left:right]  # trims to the ink box: glyph box is the whole array
    box = ink_box(cover)
    return Glyph(np.ascontiguousarray(cover), absorb, box)


def segment(length: float, thickness: float, angle: float) -> Floats:
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


def line_glyph(x0: float, y0: float, x1: float, y1: float, thickness: float, absorb: float) -> Glyph:
    """A straight line from (x0, y0) to (x1, y1), as a glyph placed in layout coordinates."""
    cover = segment(math.hypot(x1 - x0, y1 - y0), thickness, math.atan2(y1 - y0, x1 - x0))
    height, width = cover.shape
    x = round((x0 + x1) / 2 - width / 2)
    y = round((y0 + y1) / 2 - height / 2)
    return Glyph(cover, absorb, ink_box(cover), x, y)


def contact(left: Glyph, right: Glyph) -> int | None:
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


def hyphen(rng: np.random.Generator, size: float, ink: float, after: int, baseline: int) -> Glyph:
    """A short, thick, nearly level stroke at mid-height, a little after x = `after`."""
    thickness = max(2.0, uniform(rng, HYPHEN_THICKNESS) * size)
    cover = segment(uniform(rng, HYPHEN_LENGTH) * size, thickness, math.radians(uniform(rng, (-5.0, 5.0))))
    box = ink_box(cover)
    x = after + max(2, round(uniform(rng, HYPHEN_GAP) * size)) - box[0]
    middle = baseline - uniform(rng, (0.4, 0.6)) * size
    y = round(middle - (box[1] + box[3]) / 2)
    return Glyph(cover, 1.0 - ink, box, x, y)


def extent(marks: Sequence[Glyph]) -> Box:
    """Union of the marks' ink boxes in layout coordinates."""
    return (min(m.x + m.box[0] for m in marks), min(m.y + m.box[1] for m in marks),
            max(m.x + m.box[2] for m in marks), max(m.y + m.box[3] for m in marks))


def rule(rng: np.random.Generator, marks: Sequence[Glyph], size: float) -> list[Glyph]:
    """A thin box around the marks (half the time) or a line under them, clear of the ink."""
    left, top, right, bottom = extent(marks)
    thickness = uniform(rng, LINE_WIDTH_PX)
    absorb = uniform(rng, LINE_ABSORB)

    def pad() -> float:
        return max(3.0, uniform(rng, LINE_PAD) * size) + thickness / 2

    def wobble() -> float:
        return uniform(rng, (-1.5, 1.5))

    if rng.random() < 0.5:
        y = bottom + pad()
        return [line_glyph(left - pad(), y + wobble(), right + pad(), y + wobble(), thickness, absorb)]
    x0, y0, x1, y1 = left - pad(), top - pad(), right + pad(), bottom + pad()
    corners = [(x0 + wobble(), y0 + wobble()), (x1 + wobble(), y0 + wobble()),
               (x1 + wobble(), y1 + wobble()), (x0 + wobble(), y1 + wobble())]
    return [line_glyph(*a, *b, thickness, absorb) for a, b in zip(corners, corners[1:] + corners[:1], strict=True)]
