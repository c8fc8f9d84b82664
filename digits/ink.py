"""From a scanned crop to its ink: bright strokes on nothing, in pieces, without paper or rules.

1. Polarity and paper: ink is made bright; the paper's uneven level (a grey opening wider than
   any blot of ink, even a bold digit's filled loop) is subtracted.
2. Binarise each stroke against the strongest ink near it (between a floor and Otsu's threshold
   for the crop), so that a finer or fainter pen's digit survives beside bold ones; a crop whose
   ink is too faint is blank.
3. Clean: drop specks, and the long thin lines no digit makes: runs of ink longer than any
   digit (underlines, box lines, allowed to drift by a pixel), then what is left of them as
   pieces (a box's sides standing out of the digits' band).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from PIL import Image
from scipy import ndimage

from digits.arrays import Box, Floats, Mask
from digits.defaults import MAX_PIECES
from digits.images import MIN_CONTRAST, ImageError
from digits.masks import grow, shrink

WORK_HEIGHT = 96  # crops are read at most this tall: each digit ends up 20 pixels high anyway
PAPER_WINDOW = 0.75  # the paper's level is read over windows this share of the crop's height ...
PAPER_STEP = 4  # ... on every 4th pixel
MIN_THRESHOLD = 0.12  # binarisation never goes below this much ink over the paper ...
FAINT_SHARE, MIN_FAINT = 0.35, 0.08  # ... except for a fainter pen's strokes, down to this share of Otsu's
LOCAL_WINDOW = 0.08  # a stroke is judged against the strongest ink within this share of the crop's height
SPECK_AREA = 0.015  # pieces under this share of the largest one's area (and short) are specks, dropped
BREAK_GAP = 2  # a fine pen's stroke broken by binarising: fragments this close (pixels) are judged together
HYPHEN_CROWDED = 0.5  # a hyphen has other ink above or below it in at most this share of its columns
SMALL_AREA = 0.12  # pieces under this share of a typical digit's area may be left out as noise ...


@dataclass(frozen=True)
class Piece:
    """One digit's (or fragment's) pixels: a tight mask placed at (left, top) in the working image."""

    mask: Mask
    left: int
    top: int

    @property
    def box(self) -> Box:
        height, width = self.mask.shape
        return self.left, self.top, self.left + width, self.top + height

    @property
    def width(self) -> int:
        return int(self.mask.shape[1])

    @property
    def height(self) -> int:
        return int(self.mask.shape[0])

    @property
    def area(self) -> int:
        return int(self.mask.sum())



def tight(mask: Mask, left: int, top: int) -> Piece:
    """The piece of `mask` placed at (left, top), cropped to its ink."""
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    return Piece(mask[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1], left + int(cols[0]), top + int(rows[0]))



def union(*pieces: Piece) -> Piece:
    """The pieces' ink together, as one piece."""
    left, top = min(p.left for p in pieces), min(p.top for p in pieces)
    right, bottom = max(p.box[2] for p in pieces), max(p.box[3] for p in pieces)
    mask = np.zeros((bottom - top, right - left), dtype=bool)
    for piece in pieces:
        mask[piece.top - top:piece.box[3] - top, piece.left - left:piece.box[2] - left] |= piece.mask
    return Piece(mask, left, top)



def halo(piece: Piece) -> Piece:
    """The piece grown by a pixel all round: its ink with the anti-aliased edge around it."""
    grown = grow(np.pad(piece.mask, 1), square=True)
    return Piece(grown, piece.left - 1, piece.top - 1)



@dataclass(frozen=True)
class Cleaned:
    """A crop's ink, cleaned: what cutting (digits.segment) and the strip (digits.strip) start from,
    so that a crop read both ways (digits.sweep.read_crop) is cleaned once."""

    shape: tuple[int, int]  # the crop's (rows, columns), before working size
    ink: Floats  # bright ink on zero paper, at working size
    scale: float  # working size over the image's size
    binary: Mask  # the ink binarised, lines removed
    pieces: list[Piece]  # its pieces, without specks and rules


def clean(grey: Floats) -> Cleaned:
    """Steps 1-3 above on a crop (greyscale in [0, 1], any polarity); ImageError for a blank crop,
    one holding only lines or specks, or one in more than MAX_PIECES pieces (noise, or a page)."""
    ink, scale = read_ink(grey)
    if float(ink.max()) < MIN_CONTRAST:
        raise ImageError("no digits found: the crop is blank")
    binary = remove_lines(binarise(ink))
    pieces = drop_rules(components(binary))
    if not pieces:
        raise ImageError("no digits found: the crop holds only lines or specks")
    if len(pieces) > MAX_PIECES:
        raise ImageError(f"no code found: {len(pieces)} separate pieces of ink, over the limit of {MAX_PIECES} "
                         f"(noise, or a page rather than a crop)")
    return Cleaned((grey.shape[0], grey.shape[1]), ink, scale, binary, pieces)


def read_ink(grey: Floats) -> tuple[Floats, float]:
    """Bright ink on a zero background at working size, and the working scale (working / original)."""
    height, width = grey.shape
    scale = min(1.0, WORK_HEIGHT / height)
    if scale < 1.0:
        size = (max(1, round(width * scale)), WORK_HEIGHT)
        grey = np.asarray(Image.fromarray(grey, mode="F").resize(size, Image.Resampling.BILINEAR), dtype=np.float32)
    ink = 1.0 - grey if float(np.median(grey)) > 0.5 else grey  # most of a crop is paper
    return np.clip(ink - paper_level(ink), 0.0, 1.0).astype(np.float32), scale



def paper_level(ink: Floats) -> Floats:
    """The paper's own level under the ink: a grey opening wider than any blot of ink (a bold
    digit's filled loop is far wider than a pen stroke), on a quarter-size copy for speed."""
    height, width = ink.shape
    small = ink[::PAPER_STEP, ::PAPER_STEP]
    window = max(3, round(PAPER_WINDOW * small.shape[0]))
    level = ndimage.uniform_filter(ndimage.grey_opening(small, size=(window, window)), size=window, mode="nearest")
    full = Image.fromarray(level.astype(np.float32), mode="F").resize((width, height), Image.Resampling.BILINEAR)
    return np.asarray(full, dtype=np.float32)



def otsu(values: Floats) -> float:
    """The threshold that best separates two classes of values in [0, 1], over 128 levels."""
    levels = 128  # np.histogram's bins over [0, 1], counted by bincount: the same counts in a third of the time
    edges = np.linspace(0.0, 1.0, levels + 1)
    counts = np.bincount(np.minimum((values * levels).astype(np.intp), levels - 1), minlength=levels)
    weights = counts.astype(np.float64)
    centres = (edges[:-1] + edges[1:]) / 2
    below = np.cumsum(weights)
    mean_below = np.cumsum(weights * centres)
    total, total_mean = below[-1], mean_below[-1]
    above = total - below
    with np.errstate(divide="ignore", invalid="ignore"):
        between = np.where((above > 0) & (below > 0), (total_mean * below - total * mean_below) ** 2 / (below * above),
                           np.nan)
    if np.isnan(between).all():  # one level only (a clean two-tone image): halfway to it
        return 0.5 * float(values.max())
    return float(edges[1:][int(np.nanargmax(between))])



def binarise(ink: Floats) -> Mask:
    """Ink above half the strongest ink around it, between a floor and Otsu's threshold for the
    crop: a single threshold would lose a digit written with a finer or fainter pen than the rest,
    whose thin strokes never reach the level of the bold ones."""
    faint = ink > 0.02
    if not faint.any():
        return np.zeros_like(faint)
    threshold = max(otsu(ink[faint]), MIN_THRESHOLD)
    floor = max(FAINT_SHARE * threshold, MIN_FAINT)
    window = max(3, round(LOCAL_WINDOW * ink.shape[0]))
    local = np.clip(0.5 * ndimage.maximum_filter(ink, size=window), floor, threshold)
    return np.asarray(ink > local, dtype=bool)



def runs_of(binary: Mask, length: int, axis: int) -> Mask:
    """The pixels on runs of ink at least `length` long along `axis` (a 1-D opening), allowing a
    ruled line to drift by a pixel across it (a hand-ruled or slightly rotated box)."""
    if length < 2 or length > binary.shape[axis]:
        return np.zeros_like(binary)
    grown = ndimage.maximum_filter1d(binary.view(np.uint8), 3, axis=1 - axis)
    eroded = ndimage.minimum_filter1d(grown, length, axis=axis, mode="constant")
    runs = ndimage.maximum_filter1d(eroded, length, axis=axis, mode="constant")
    return np.asarray(runs.astype(bool) & binary, dtype=bool)



def remove_lines(binary: Mask) -> Mask:
    """Drop underlines and box lines: horizontal runs longer than any digit, vertical ones at the edges."""
    height, width = binary.shape
    lines = runs_of(binary, round(1.6 * height), axis=1)
    uprights = runs_of(binary, round(0.85 * height), axis=0)
    edge = max(2, width // 12)
    uprights[:, edge:width - edge] = False
    drop = ndimage.maximum_filter(lines | uprights, size=3)
    return np.asarray(binary & ~drop, dtype=bool)



def components(binary: Mask) -> list[Piece]:
    """Connected pieces of ink, without specks: tiny next to the largest piece, and short. Pieces
    within BREAK_GAP pixels of each other are judged together: a fine pen's stroke that
    binarising left in dashes is as tall as a digit, though each dash is as small as a speck."""
    eight_way = np.ones((3, 3), dtype=bool)
    labels, count = ndimage.label(binary, structure=eight_way)
    if count == 0:
        return []
    near, _ = ndimage.label(grow(binary, BREAK_GAP), structure=eight_way)
    slices = ndimage.find_objects(labels)
    group_of = np.array([near[rows, cols][labels[rows, cols] == index + 1][0]
                         for index, (rows, cols) in enumerate(slices)])
    areas = np.bincount(group_of, weights=np.bincount(labels.ravel())[1:])[group_of]  # each piece's group's ink
    group_rows = [rows for rows, _ in ndimage.find_objects(near)]
    heights = np.array([group_rows[group - 1].stop - group_rows[group - 1].start for group in group_of])
    keep = (areas >= SPECK_AREA * areas.max()) | (heights >= 0.4 * heights.max())
    return [Piece(labels[rows, cols] == index + 1, cols.start, rows.start)
            for index, (rows, cols) in enumerate(slices) if keep[index]]



def drop_rules(pieces: list[Piece]) -> list[Piece]:
    """Drop what is left of box lines and underlines that a digit never makes: pieces far longer
    than the digits are tall and thin across, standing out of the digits' band (a box's sides) or
    lying along it (an underline, a box's top and bottom)."""
    if not pieces:
        return pieces
    upright = [p for p in pieces if p.width > 0.2 * p.height and p.height > 0.2 * p.width] or pieces
    size = float(np.median([p.height for p in upright if p.height >= 0.5 * max(q.height for q in upright)]))
    top, bottom = min(p.box[1] for p in upright), max(p.box[3] for p in upright)
    kept = []
    for p in pieces:
        side = p.height >= 1.15 * size and p.width <= 0.2 * p.height and p.box[1] < top and p.box[3] > bottom
        rule = p.width >= 1.6 * size and p.height <= 0.2 * p.width
        if not (side or rule):
            kept.append(p)
    return kept



def stacks(pieces: list[Piece], max_gap: float = math.inf) -> list[Piece]:
    """The pieces joined where one stands over the other (overlapping across by half the narrower's
    width or more, apart up and down by at most max_gap pixels, and overlapping up and down by
    less than half the shorter's height): a digit broken across is one piece again. Digits in a
    row never stand over one another."""
    joined = sorted(pieces, key=lambda p: p.left)
    merged = True
    while merged:
        merged = False
        for i in range(len(joined)):
            for j in range(i + 1, len(joined)):
                a, b = joined[i], joined[j]
                across = min(a.box[2], b.box[2]) - max(a.left, b.left)
                down = min(a.box[3], b.box[3]) - max(a.top, b.top)  # negative: the gap between them
                if across >= 0.5 * min(a.width, b.width) and -max_gap <= down < 0.5 * min(a.height, b.height):
                    joined[i] = union(a, joined.pop(j))
                    merged = True
                    break
            if merged:
                break
    return joined



def is_optional(piece: Piece, size: float, usual_area: float) -> bool:
    """Ink that reading may leave out as noise: small next to the digits, or a hairline finer than
    most pens (what remains of a box line; but a thin pen's 1 looks alike, so it is not dropped)."""
    hairline = piece.width <= max(2, round(0.05 * size)) and piece.height >= 3 * piece.width
    return hairline or piece.area < SMALL_AREA * usual_area



def is_hyphen(piece: Piece, band_top: int, band_bottom: int, ink: Mask) -> bool:
    """A short, flat blob in the middle of the digits' band, standing in a gap: in most of its
    columns no other ink (`ink`: all of the crop's) above or below it in the band. Without
    the gap, a digit's loose stroke (a 5's flag, a 3's top) was read as a hyphen: on 5-digit
    crops of validation digits, whole codes 85.6% -> 86.7% with it (docs/benchmarks.md)."""
    band = band_bottom - band_top
    left, top, right, bottom = piece.box
    middle = ((top + bottom) / 2 - band_top) / band
    if not ((bottom - top) <= 0.3 * band and (right - left) >= 1.5 * (bottom - top)
            and (right - left) <= 0.9 * band and 0.3 <= middle <= 0.75):
        return False
    others = ink[band_top:band_bottom, left:right].copy()
    others[top - band_top:bottom - band_top] &= ~piece.mask
    return float(others.any(axis=0).mean()) <= HYPHEN_CROWDED


def stroke_width(mask: Mask) -> float:
    """Mean stroke width in pixels: twice the ink's area over its outline's length."""
    outline = int((mask & ~shrink(mask)).sum())
    return 2.0 * float(mask.sum()) / max(outline, 1)
