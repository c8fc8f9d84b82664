"""Reading a multi-digit crop (a postal code) as a row of MNIST-style digits.

1. Polarity and paper: ink is made bright; the paper's uneven level (a grey opening, wider
   than any stroke) is subtracted.
2. Binarise with Otsu's threshold, or call the crop blank when the ink is too faint.
3. Clean: drop specks, and long thin lines (underlines, box lines) that no digit makes: runs of
   ink longer than any digit, then what is left of them as pieces (a box's sides standing out
   of the digits' band, hairlines finer than any pen).
4. Segment (after Matan et al. 1992): connected components; components stacked over each
   other are one broken digit; a short flat blob at mid-height is a hyphen; a piece too wide
   for one digit is split at the cut, straight or slanted, that the classifier likes best.
5. Normalise each piece the way MNIST was made (digits.images.fit_box and centre), its strokes
   redrawn part of the way towards MNIST's width: pens vary more between scans than in MNIST.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt
from PIL import Image
from scipy import ndimage

from digits.images import FIELD, MIN_CONTRAST, ImageError, centre, fit_box

Floats = npt.NDArray[np.float32]
Mask = npt.NDArray[np.bool_]
Box = tuple[int, int, int, int]  # left, top, right, bottom (exclusive), in the crop's pixels
Classify = Callable[[Floats], Floats]  # (n, 784) pixels -> (n, 10) probabilities

WORK_HEIGHT = 96  # crops are read at most this tall: each digit ends up 20 pixels high anyway
PAPER_WINDOW = 0.75  # the paper's level is read over windows this share of the crop's height ...
PAPER_STEP = 4  # ... on every 4th pixel
MIN_THRESHOLD = 0.12  # binarisation never goes below this much ink over the paper ...
FAINT_SHARE, MIN_FAINT = 0.35, 0.08  # ... except for a fainter pen's strokes, down to this share of Otsu's
LOCAL_WINDOW = 0.08  # a stroke is judged against the strongest ink within this share of the crop's height
CUT_SPACING = 0.25  # cuts stand at least this far apart (x height)
SIDESTEP_COST = 0.05  # a cut path's step sideways costs as much as crossing this share of an ink pixel
NOTCH_REACH, NOTCH_DEPTH = 0.35, 0.15  # an outline's dip: this far (x height) on each side, this deep
MIN_SPLIT = 0.5  # pieces of ink narrower than this (x the digits' height) are never cut ...
CUT_SHARE = 0.4  # ... and wider ones at most width / (this x height) times
MAX_CUT_STROKES = 2.5  # a cut through ink crosses at most this many stroke widths of it
SPECK_AREA = 0.015  # pieces under this share of the largest one's area (and short) are specks, dropped
SMALL_AREA = 0.12  # pieces under this share of a typical digit's area may be left out as noise ...
SLIVER_AREA = 0.03  # ... and so may slivers this small that a cut leaves
MAX_RUN = 6  # a candidate digit joins at most this many primitives
MAX_WIDTH = 2.0  # ... and is at most this wide (x height)
MAX_INNER_GAP = 0.3  # ... with no gap between its primitives wider than this (x height)


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
    grown = ndimage.binary_dilation(np.pad(piece.mask, 1), structure=np.ones((3, 3), dtype=bool))
    return Piece(grown, piece.left - 1, piece.top - 1)


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
    """The threshold that best separates two classes of values in [0, 1]."""
    counts, edges = np.histogram(values, bins=128, range=(0.0, 1.0))
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
    """Connected pieces of ink, without specks: tiny next to the largest piece, and short."""
    labels, count = ndimage.label(binary, structure=np.ones((3, 3), dtype=bool))
    if count == 0:
        return []
    areas = np.bincount(labels.ravel())[1:]
    slices = ndimage.find_objects(labels)
    heights = np.array([rows.stop - rows.start for rows, _ in slices])
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


def is_optional(piece: Piece, size: float, usual_area: float) -> bool:
    """Ink that reading may leave out as noise: small next to the digits, or a hairline finer than
    most pens (what remains of a box line; but a thin pen's 1 looks alike, so it is not dropped)."""
    hairline = piece.width <= max(2, round(0.05 * size)) and piece.height >= 3 * piece.width
    return hairline or piece.area < SMALL_AREA * usual_area


def seams(binary: Mask, band: tuple[int, int], size: float, stroke: float) -> list[npt.NDArray[np.intp]]:
    """Cut paths through the row of digits, top to bottom, each as its column in every row: the
    cheapest path (crossing the least ink, a step sideways costing a little) through the middle
    of the digits' band at the middle of each gap between pieces of ink, however it has to wind,
    and, within pieces of ink, first where the outline dips in deeply from above or below (where
    touching digits meet, however much ink the cut then crosses), then at each column where
    crossing is cheapest locally, at most MAX_CUT_STROKES strokes. A piece of ink takes cuts by
    its width (none under MIN_SPLIT x size), CUT_SPACING x size apart."""
    height = binary.shape[0]
    cost = binary.astype(np.float64)
    forward, backward = np.empty_like(cost), np.empty_like(cost)
    forward[0], backward[-1] = cost[0], cost[-1]
    for row in range(1, height):
        forward[row] = cost[row] + cheapest_step(forward[row - 1])
    for row in range(height - 2, -1, -1):
        backward[row] = cost[row] + cheapest_step(backward[row + 1])
    top, bottom = band
    middle = (top + bottom) // 2
    through = forward[middle] + backward[middle] - cost[middle]  # the cheapest path through each column
    free = np.concatenate([[False], through < 0.5, [False]])  # paths crossing no ink
    starts, ends = np.flatnonzero(free[1:] & ~free[:-1]), np.flatnonzero(free[:-1] & ~free[1:])
    gaps = [int(c) for c in (starts + ends - 1) // 2]
    padded = np.concatenate([[np.inf], through, [np.inf]])
    cheap = (~free[1:-1]) & (through <= padded[:-2]) & (through <= padded[2:]) & (through <= MAX_CUT_STROKES * stroke)
    labels, _ = ndimage.label(binary, structure=np.ones((3, 3), dtype=bool))
    budget = [0] + [round((cols.stop - cols.start) / (CUT_SHARE * size)) if cols.stop - cols.start >= MIN_SPLIT * size
                    else 0 for _, cols in ndimage.find_objects(labels)]  # cuts each piece of ink may take
    paths = list(trace(forward, backward, middle, np.array(gaps, dtype=np.intp)))
    cuts: dict[int, list[npt.NDArray[np.intp]]] = {}  # piece of ink -> the paths cutting it
    rows = slice(top, bottom)
    cheapest = np.array(sorted(np.flatnonzero(cheap), key=lambda c: (through[c], c)), dtype=np.intp)
    straight = [upright(forward, backward, rows_of, column) for rows_of, column in notches(labels, size)]
    for path in straight + list(trace(forward, backward, middle, cheapest)):
        hit = labels[np.arange(height), path]
        piece = int(np.bincount(hit[hit > 0]).argmax()) if (hit > 0).any() else 0
        others = cuts.setdefault(piece, [])
        if len(others) < budget[piece] and all(
                np.abs(path[rows] - other[rows]).mean() >= CUT_SPACING * size for other in others):
            others.append(path)
    return paths + [path for piece_cuts in cuts.values() for path in piece_cuts]


def notches(labels: npt.NDArray[np.int32], size: float) -> list[tuple[slice, int]]:
    """Where a piece's outline dips in by NOTCH_DEPTH x size or more, from above or from below,
    against the outline on both sides within NOTCH_REACH x size (where two round digits meet):
    the piece's rows and the column of the dip."""
    reach, depth = max(2, round(NOTCH_REACH * size)), NOTCH_DEPTH * size
    found = []
    for index, (rows, cols) in enumerate(ndimage.find_objects(labels), start=1):
        if cols.stop - cols.start < MIN_SPLIT * size:
            continue
        mask = labels[rows, cols] == index
        inked = mask.any(axis=0)
        height = mask.shape[0]
        tops = np.where(inked, mask.argmax(axis=0), height)  # first ink row of each column
        bottoms = np.where(inked, height - 1 - mask[::-1].argmax(axis=0), -1)
        for outline in (tops.astype(np.float64), -bottoms.astype(np.float64)):  # a dip is a larger value
            for x in range(reach, len(outline) - reach):
                left, right = outline[x - reach:x].min(), outline[x + 1:x + reach + 1].min()
                window = outline[max(x - 2, 0):x + 3]
                if outline[x] - max(left, right) >= depth and outline[x] >= window.max() and inked[x]:
                    found.append((rows, cols.start + x))
    return found


def upright(forward: npt.NDArray[np.float64], backward: npt.NDArray[np.float64], rows: slice, column: int
            ) -> npt.NDArray[np.intp]:
    """A cut straight down `column` through `rows` (a piece of ink), and the cheapest way on from
    its ends: where two digits meet along a stroke, no cheap path parts them."""
    first, last = trace(forward, backward, rows.start, np.array([column])), trace(
        forward, backward, rows.stop - 1, np.array([column]))
    path = np.full(forward.shape[0], column, dtype=np.intp)
    path[:rows.start], path[rows.stop:] = first[0, :rows.start], last[0, rows.stop:]
    return path


def trace(forward: npt.NDArray[np.float64], backward: npt.NDArray[np.float64], row: int,
          columns: npt.NDArray[np.intp]) -> npt.NDArray[np.intp]:
    """The cheapest paths through (row, each of columns), one per line: up along `forward`, down along `backward`."""
    height = forward.shape[0]
    paths = np.empty((len(columns), height), dtype=np.intp)
    paths[:, row] = columns
    for above in range(row - 1, -1, -1):
        paths[:, above] = cheapest_neighbours(forward[above], paths[:, above + 1])
    for below in range(row + 1, height):
        paths[:, below] = cheapest_neighbours(backward[below], paths[:, below - 1])
    return paths


def cheapest_step(previous: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    """For each column, the cheapest of the previous row's same and neighbouring columns (plus the sideways cost)."""
    cheapest = previous.copy()
    np.minimum(cheapest[1:], previous[:-1] + SIDESTEP_COST, out=cheapest[1:])
    np.minimum(cheapest[:-1], previous[1:] + SIDESTEP_COST, out=cheapest[:-1])
    return cheapest


def cheapest_neighbours(costs: npt.NDArray[np.float64], columns: npt.NDArray[np.intp]) -> npt.NDArray[np.intp]:
    """For each column, the column next to it (or itself) where `costs` is lowest, preferring to go straight."""
    best, lowest = columns.copy(), costs[columns]
    for step in (-1, 1):
        other = columns + step
        inside = (other >= 0) & (other < len(costs))
        cost = np.where(inside, costs[np.clip(other, 0, len(costs) - 1)] + SIDESTEP_COST, np.inf)
        better = cost < lowest
        best = np.where(better, other, best)
        lowest = np.where(better, cost - SIDESTEP_COST, lowest)
    return best


def split_along(kept: Mask, paths: list[npt.NDArray[np.intp]]) -> npt.NDArray[np.intp]:
    """Label the ink's pieces once cut along every path (paths may cross: each piece between them
    is its own): 0 where there is no ink. The ink a path runs over goes to the piece beside it."""
    height = kept.shape[0]
    along = np.zeros_like(kept)
    rows = np.arange(height)
    for path in paths:
        along[rows, path] = True
        low, high = np.minimum(path[1:], path[:-1]), np.maximum(path[1:], path[:-1])
        along[rows[1:], low] = True  # a sideways step leaves no diagonal gap to leak through
        along[rows[1:], high] = True
    labels, _ = ndimage.label(kept & ~along, structure=np.ones((3, 3), dtype=bool))
    for _ in range(2):  # ink under a path: the piece to its left, else right, else above or below
        orphans = kept & (labels == 0)
        if not orphans.any():
            break
        beside = np.zeros_like(labels)
        for shift, axis in ((1, 1), (-1, 1), (1, 0), (-1, 0)):
            moved = np.roll(labels, shift, axis=axis)
            beside = np.where(beside > 0, beside, moved)
        labels = np.where(orphans, beside, labels)
    return np.asarray(labels, dtype=np.intp)


@dataclass(frozen=True)
class Lattice:
    """The ways to read one image as a row of digits: candidate digits, each a run of consecutive
    primitives (pieces of ink, left to right), normalised MNIST-style. Reading classifies all of
    them and keeps the path through the primitives whose digits read best."""

    fields: Floats  # (candidates, 784)
    spans: list[tuple[int, int]]  # each candidate's primitives [start, end)
    boxes: list[Box]  # each candidate's ink box, in the image's pixels
    primitives: int
    hyphens: list[float] = field(default_factory=list)  # centres of hyphens, x in the image's pixels
    optional: frozenset[int] = frozenset()  # primitives that may be left out as noise


@dataclass(frozen=True)
class Cut:
    """A crop cut into primitives: its ink at working size and the pieces reading will join."""

    ink: Floats  # bright ink on zero paper, at working size
    scale: float  # working size over the image's size
    size: float  # the digits' typical height, working pixels
    primitives: list[Piece]  # left to right by centre
    hyphens: list[Piece]
    optional: frozenset[int]  # primitives that reading may leave out as noise


def cut(grey: Floats) -> Cut:
    """Binarise and clean a crop (greyscale in [0, 1], any polarity) and cut its ink into
    primitives; blank crops raise ImageError."""
    ink, scale = read_ink(grey)
    if float(ink.max()) < MIN_CONTRAST:
        raise ImageError("no digits found: the crop is blank")
    binary = remove_lines(binarise(ink))
    pieces = drop_rules(components(binary))
    if not pieces:
        raise ImageError("no digits found: the crop holds only lines or specks")
    tallest = max(p.height for p in pieces)
    band_top = min(p.box[1] for p in pieces if p.height >= 0.5 * tallest)
    band_bottom = max(p.box[3] for p in pieces if p.height >= 0.5 * tallest)
    hyphens = [p for p in pieces if is_hyphen(p, band_top, band_bottom)]
    rest = [p for p in pieces if not any(p is h for h in hyphens)]
    if not rest:
        raise ImageError("no digits found")
    tall = [p for p in rest if p.height >= 0.5 * tallest]
    size = float(np.median([p.height for p in tall]))
    usual_area = float(np.median([p.area for p in tall]))
    kept, optional_ink = np.zeros_like(binary), np.zeros_like(binary)
    for p in rest:
        left, top, right, bottom = p.box
        kept[top:bottom, left:right] |= p.mask
        if is_optional(p, size, usual_area):
            optional_ink[top:bottom, left:right] |= p.mask
    stroke = float(np.median([stroke_width(p.mask) for p in tall]))
    labels = split_along(kept, seams(kept, (band_top, band_bottom), size, stroke))
    parts = []
    for index, (rows, cols) in enumerate(ndimage.find_objects(labels), start=1):
        if rows is None:
            continue
        part = Piece(labels[rows, cols] == index, cols.start, rows.start)
        owned = optional_ink[rows, cols][part.mask]
        parts.append((part, bool(owned.all()) or part.area < SLIVER_AREA * usual_area))
    parts.sort(key=lambda item: item[0].left + item[0].width / 2)
    optional = frozenset(i for i, (_, flag) in enumerate(parts) if flag)
    return Cut(ink, scale, size, [part for part, _ in parts], hyphens, optional)


def lattice(grey: Floats) -> Lattice:
    """The candidate digits of a crop, normalised, with their boxes in the image's pixels."""
    found = cut(grey)
    spans, merged = candidates(found)
    boxes = [original_box(piece.box, found.scale, grey.shape) for piece in merged]
    centres = [((h.box[0] + h.box[2]) / 2) / found.scale for h in found.hyphens]
    return Lattice(fields(found, spans), spans, boxes, len(found.primitives), centres, found.optional)


def candidates(found: Cut) -> tuple[list[tuple[int, int]], list[Piece]]:
    """Every run of up to MAX_RUN neighbouring primitives that could be one digit (not too wide,
    no wide gap inside), as primitive spans [start, end) and their joined ink."""
    primitives, size = found.primitives, found.size
    spans, merged = [], []
    for start in range(len(primitives)):
        piece = primitives[start]
        for end in range(start + 1, min(start + MAX_RUN, len(primitives)) + 1):
            if end > start + 1:  # a lone primitive is always a candidate, so that a path exists
                following = primitives[end - 1]
                if following.left - piece.box[2] > MAX_INNER_GAP * size:
                    break
                piece = union(piece, following)
                if piece.width > MAX_WIDTH * size:
                    break
            spans.append((start, end))
            merged.append(piece)
    return spans, merged


def fields(found: Cut, spans: list[tuple[int, int]]) -> Floats:
    """The candidates' ink, each normalised MNIST-style, as (candidates, 784)."""
    halos = [halo(p) for p in found.primitives]
    return np.stack([normalise(union(*halos[start:end]), found.ink) for start, end in spans])


def normalise(halo: Piece, ink: Floats) -> Floats:
    """The ink under a candidate's halo (its own ink and anti-aliased edge, not its neighbours'
    ink beyond), MNIST-style, as 784 values."""
    height, width = ink.shape
    left, top = max(halo.left, 0), max(halo.top, 0)
    right, bottom = min(halo.box[2], width), min(halo.box[3], height)
    mask = halo.mask[top - halo.top:bottom - halo.top, left - halo.left:right - halo.left]
    crop = ink[top:bottom, left:right] * mask
    peak = float(crop.max())
    if peak <= 0:
        return np.zeros(FIELD * FIELD, dtype=np.float32)
    return centre(fit_box((crop / peak).astype(np.float32))).reshape(-1)


def stroke_width(mask: Mask) -> float:
    """Mean stroke width in pixels: twice the ink's area over its outline's length."""
    outline = int((mask & ~ndimage.binary_erosion(mask)).sum())
    return 2.0 * float(mask.sum()) / max(outline, 1)


def is_hyphen(piece: Piece, band_top: int, band_bottom: int) -> bool:
    """A short, flat blob in the middle of the digits' band."""
    band = band_bottom - band_top
    left, top, right, bottom = piece.box
    middle = ((top + bottom) / 2 - band_top) / band
    return (bottom - top) <= 0.3 * band and (right - left) >= 1.5 * (bottom - top) \
        and (right - left) <= 0.9 * band and 0.3 <= middle <= 0.75


def original_box(box: Box, scale: float, shape: tuple[int, ...]) -> Box:
    left, top, right, bottom = box
    height, width = shape[0], shape[1]
    return (max(0, math.floor(left / scale)), max(0, math.floor(top / scale)),
            min(width, math.ceil(right / scale)), min(height, math.ceil(bottom / scale)))
