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
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TypedDict, Unpack

import numpy as np
from PIL import Image

from digits.arrays import Box, Bytes, Floats, Mask
from trainer import glyphs
from trainer.glyphs import BOX_COVERAGE, Glyph

FORMATS = {"4": "####", "5": "#####", "6": "######", "5+4": "#####-####"}

# Parameter ranges (all drawn per crop unless marked per digit).
DPI_RANGE = (200, 300)  # when dpi is None: uniform integer
DIGIT_MM = (5.0, 8.0)  # handwritten digit height; at 200-300 dpi this is ~40-90 px
DIGIT_PX = (40, 90)  # the digit height in pixels is clipped to this
SLANT_DEG = 12.0  # writer's slant U(-12, 12) degrees, plus a per-digit wobble, clipped to +-12
SLANT_WOBBLE_DEG = 3.0
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
SPACE_GAP = (0.5, 0.9)  # the space that replaces a hyphen, x digit height
MARGIN_X, MARGIN_Y = (0.1, 0.5), (0.15, 0.4)  # paper around the content, x digit height, >= 2 px
BLUR_SIGMA = (0.3, 0.9)  # px
NOISE_SIGMA = (1.5, 5.0)  # grey levels
JPEG_SHARE = 0.3  # share of crops encoded and decoded as JPEG
JPEG_QUALITY = (60, 90)


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
    if dpi is None:
        dpi = int(rng.integers(DPI_RANGE[0], DPI_RANGE[1] + 1))
    size = float(np.clip(glyphs.uniform(rng, DIGIT_MM) / 25.4 * dpi, *DIGIT_PX))
    writer = _writer(rng, size)
    picks = rng.integers(0, len(images), pattern.count("#"))
    digits, slope = _digits(rng, images[picks], writer)
    marks, separator = _space_out(rng, digits, pattern, writer, slope, touching)
    if rng.random() < box_line:
        marks.extend(glyphs.rule(rng, marks, size))
    image, origin = _render(rng, marks, size, writer.paper)
    if inverted:
        image = 255 - image
    if rng.random() < JPEG_SHARE:
        quality = int(rng.integers(JPEG_QUALITY[0], JPEG_QUALITY[1] + 1))
        image = np.asarray(Image.open(io.BytesIO(_encode(image, "JPEG", quality=quality))).convert("L"))
    boxes, masks = _truth(digits, origin, image.shape)
    labelled = iter(str(int(labels[i])) for i in picks)
    code = "".join(next(labelled) if c == "#" else separator for c in pattern)
    return Crop(image=image, code=code, boxes=boxes, fmt=fmt, masks=masks)


@dataclass(frozen=True)
class _Writer:
    """One crop's writer and paper: slant, usual gap and ink, drawn once per crop."""

    size: float  # digit height, px
    slant: float  # degrees
    gap: float  # px
    paper: float  # paper grey level
    ink: float  # full ink grey level


def _writer(rng: np.random.Generator, size: float) -> _Writer:
    slant = glyphs.uniform(rng, (-SLANT_DEG, SLANT_DEG))
    gap = glyphs.uniform(rng, GAP) * size
    paper = glyphs.uniform(rng, PAPER_LEVEL)
    return _Writer(size, slant, gap, paper, glyphs.uniform(rng, INK_LEVEL))


def _digits(rng: np.random.Generator, pixels: Bytes, writer: _Writer) -> tuple[list[Glyph], float]:
    """Each digit drawn with its own height, slant and ink, its bottom on a jittered, drifting
    baseline (x positions are set by _space_out); and the baseline's drift, px per digit."""
    count, size = len(pixels), writer.size
    heights = size * rng.uniform(1 - glyphs.HEIGHT_JITTER, 1 + glyphs.HEIGHT_JITTER, count)
    slants = np.clip(writer.slant + rng.uniform(-SLANT_WOBBLE_DEG, SLANT_WOBBLE_DEG, count), -SLANT_DEG, SLANT_DEG)
    inks = np.clip(writer.ink + rng.uniform(-8.0, 8.0, count), 5.0, writer.paper - 60.0)
    jitter = max(1, round(BASELINE_JITTER * size))
    lifts = rng.integers(-jitter, jitter + 1, count)
    drawn = [glyphs.digit(rng, digit, float(h), float(s), 1.0 - float(k) / writer.paper)
             for digit, h, s, k in zip(pixels, heights, slants, inks, strict=True)]
    slope = glyphs.uniform(rng, (-BASELINE_SLOPE, BASELINE_SLOPE)) * 0.75 * size  # px per digit
    for index, (glyph, lift) in enumerate(zip(drawn, lifts, strict=True)):
        glyph.y = -glyph.box[3] + int(lift) + round(slope * index)
    return drawn, slope


def _space_out(rng: np.random.Generator, digits: list[Glyph], pattern: str, writer: _Writer, slope: float,
               touching: float) -> tuple[list[Glyph], str]:
    """Place the digits left to right: the usual gap, or touching ink, or the hyphen or space of a
    ZIP+4. Returns every mark inked and the separator the code shows."""
    size, count = writer.size, len(digits)
    marks = list(digits)
    touches = rng.random(count) < touching
    split = pattern.find("-")  # digits before the hyphen, or -1
    separator = "-"
    for index in range(1, count):
        glyph, before = digits[index], digits[index - 1]
        before_right = before.x + before.box[2]
        if index == split:
            if rng.random() < HYPHEN_SHARE:
                hyphen = glyphs.hyphen(rng, size, writer.ink / writer.paper, before_right, round(slope * (index - 0.5)))
                marks.append(hyphen)
                before_right = hyphen.x + hyphen.box[2] + max(2, round(glyphs.uniform(rng, glyphs.HYPHEN_GAP) * size))
            else:
                before_right += round(glyphs.uniform(rng, SPACE_GAP) * size)
                separator = " "  # what the reader writes for a wide gap
            glyph.x = before_right - glyph.box[0]
            continue
        glyph.x = before_right + max(2, round(writer.gap * rng.uniform(1 - GAP_JITTER, 1 + GAP_JITTER))) - glyph.box[0]
        if touches[index]:
            contact = glyphs.contact(before, glyph)
            if contact is not None:
                overlap = int(rng.integers(TOUCH_OVERLAP_PX[0], TOUCH_OVERLAP_PX[1] + 1))
                narrow = min(before.box[2] - before.box[0], glyph.box[2] - glyph.box[0])
                least = before_right - round(TOUCH_MAX_BOX_OVERLAP * narrow) - glyph.box[0]
                glyph.x = max(before.x + contact + 1 - overlap, least)
    return marks, separator


def _truth(digits: list[Glyph], origin: tuple[int, int], shape: tuple[int, ...]) -> tuple[list[Box], list[Mask]]:
    """Each digit's ink box in the image and its own ink within it, even where touched."""
    height, width = shape[0], shape[1]
    boxes, masks = [], []
    for glyph in digits:
        x, y = glyph.x - origin[0], glyph.y - origin[1]
        left, top, right, bottom = glyph.box
        left, right = (min(max(v + x, 0), width) for v in (left, right))
        top, bottom = (min(max(v + y, 0), height) for v in (top, bottom))
        boxes.append((left, top, right, bottom))
        masks.append(glyph.cover[top - y:bottom - y, left - x:right - x] >= BOX_COVERAGE)
    return boxes, masks


def _render(rng: np.random.Generator, marks: Sequence[glyphs.Glyph], size: float,
            paper_level: float) -> tuple[Bytes, tuple[int, int]]:
    """Ink the marks onto paper with margins; blur, add scan noise. Returns the image and its layout origin."""
    left, top, right, bottom = glyphs.extent(marks)
    margin_x = [max(2, round(glyphs.uniform(rng, MARGIN_X) * size)) for _ in range(2)]
    margin_y = [max(2, round(glyphs.uniform(rng, MARGIN_Y) * size)) for _ in range(2)]
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
    scan = _blur(paper * (1.0 - absorb), glyphs.uniform(rng, BLUR_SIGMA))
    scan += rng.standard_normal((height, width), dtype=np.float32) * glyphs.uniform(rng, NOISE_SIGMA)
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
