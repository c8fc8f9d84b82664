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
from digits.pattern import Pattern

Floats = npt.NDArray[np.float32]
Mask = npt.NDArray[np.bool_]
Box = tuple[int, int, int, int]  # left, top, right, bottom (exclusive), in the crop's pixels
Classify = Callable[[Floats], Floats]  # (n, 784) pixels -> (n, 10) probabilities

WORK_HEIGHT = 96  # crops are read at most this tall: each digit ends up 20 pixels high anyway
MIN_THRESHOLD = 0.12  # binarisation never goes below this much ink over the paper
DIGIT_ASPECT = 0.75  # a typical handwritten digit's width over its height
SLANTS = (-0.3, 0.0, 0.3)  # tangents of the cut lines tried when splitting touching digits
SPLIT_FROM = 1.2  # without a hint, pieces narrower than this (x a typical digit width) stay whole ...
SPLIT_SURE = 1.8  # ... and wider ones are always cut; between, a cut must read better than the whole
HINT_WIDTH_PRIOR = 3.0  # with a hint: log-odds that a piece holds two digits, per typical width beyond one
MNIST_STROKE = 0.133  # MNIST's median stroke width, over the longer side of the digit's box
STROKE_STRENGTH = 0.5  # share of the difference from MNIST_STROKE that normalise() takes away
MAX_SHAVE = 0.06  # ... at most this much of the digit's size from each side of a stroke
SPLIT_PRIOR = 4.0  # weight of the width prior against the classifier's log-confidence when cutting


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


def union(a: Piece, b: Piece) -> Piece:
    left, top = min(a.left, b.left), min(a.top, b.top)
    right, bottom = max(a.box[2], b.box[2]), max(a.box[3], b.box[3])
    mask = np.zeros((bottom - top, right - left), dtype=bool)
    for piece in (a, b):
        mask[piece.top - top:piece.box[3] - top, piece.left - left:piece.box[2] - left] |= piece.mask
    return Piece(mask, left, top)


@dataclass(frozen=True)
class Segmentation:
    """The digits of a crop, left to right, and where separators stand between them."""

    fields: Floats  # (n, 784), MNIST-style
    boxes: list[Box]
    separators: dict[int, str] = field(default_factory=dict)  # digit index -> separator written before it


def read_ink(grey: Floats) -> tuple[Floats, float]:
    """Bright ink on a zero background at working size, and the working scale (working / original)."""
    height, width = grey.shape
    scale = min(1.0, WORK_HEIGHT / height)
    if scale < 1.0:
        size = (max(1, round(width * scale)), WORK_HEIGHT)
        grey = np.asarray(Image.fromarray(grey, mode="F").resize(size, Image.Resampling.BILINEAR), dtype=np.float32)
    ink = 1.0 - grey if float(np.median(grey)) > 0.5 else grey  # most of a crop is paper
    stroke = max(3, round(0.2 * ink.shape[0]))  # wider than any pen stroke
    paper = ndimage.uniform_filter(ndimage.grey_opening(ink, size=(stroke, stroke)), size=stroke)
    return np.clip(ink - paper, 0.0, 1.0).astype(np.float32), scale


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
        between = (total_mean * below - total * mean_below) ** 2 / (below * above)
    return float(edges[1:][int(np.nanargmax(np.where(above > 0, between, np.nan)))])


def runs_of(binary: Mask, length: int, axis: int) -> Mask:
    """The pixels on straight runs of ink at least `length` long along `axis` (a 1-D opening)."""
    if length < 2 or length > binary.shape[axis]:
        return np.zeros_like(binary)
    eroded = ndimage.minimum_filter1d(binary.view(np.uint8), length, axis=axis, mode="constant")
    return np.asarray(ndimage.maximum_filter1d(eroded, length, axis=axis, mode="constant"), dtype=bool)


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
    keep = (areas >= 0.04 * areas.max()) | (heights >= 0.4 * heights.max())
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
        hairline = p.width <= max(2, round(0.05 * size)) and p.height >= 3 * p.width  # finer than any pen
        if not (side or rule or hairline):
            kept.append(p)
    return kept


def overlap(a: Box, b: Box) -> int:
    return min(a[2], b[2]) - max(a[0], b[0])


def group(pieces: list[Piece], band: int) -> list[Piece]:
    """Join each fragment (a piece under 60% of the band's height: a detached bar or a broken
    stroke) to the digit it overlaps most, or to the nearest one; order digits left to right."""
    whole = sorted((p for p in pieces if p.height >= 0.6 * band), key=lambda p: p.left)
    fragments = sorted((p for p in pieces if p.height < 0.6 * band), key=lambda p: -p.area)
    for fragment in fragments:
        if not whole:
            whole.append(fragment)
            continue
        distance = [-overlap(fragment.box, p.box) for p in whole]  # a gap is positive, an overlap negative
        nearest = int(np.argmin(distance))
        if distance[nearest] <= 0.3 * band:
            whole[nearest] = union(whole[nearest], fragment)
        else:
            whole.append(fragment)
    return sorted(whole, key=lambda p: p.left)


def split_candidates(piece: Piece) -> list[tuple[Piece, Piece]]:
    """Ways to cut a piece in two: at the thinnest columns of its middle, straight or slanted."""
    width = piece.width
    profile = piece.mask.sum(axis=0).astype(np.float64)
    low, high = round(0.2 * width), round(0.8 * width)
    if high <= low:
        return []
    columns: list[int] = []
    for column in np.argsort(profile[low:high], kind="stable") + low:  # the 3 thinnest, 3 px apart
        if all(abs(column - c) >= 3 for c in columns):
            columns.append(int(column))
        if len(columns) == 3:
            break
    rows, cols = np.indices(piece.mask.shape)
    middle = piece.height / 2
    total = piece.area
    candidates = []
    for column in columns:
        for slant in SLANTS:
            on_left = cols < column + (middle - rows) * slant
            first, second = piece.mask & on_left, piece.mask & ~on_left
            if first.sum() > 0.1 * total and second.sum() > 0.1 * total:
                candidates.append((tight(first, piece.left, piece.top), tight(second, piece.left, piece.top)))
    return candidates


def best_split(piece: Piece, ink: Floats, classify: Classify, typical: float
               ) -> tuple[tuple[Piece, Piece], float, float] | None:
    """The cut whose two halves the classifier reads most confidently, its log-confidence, and the whole's.

    A cut that leaves widths unlike digits' (judged by how many digits the piece is wide) pays a
    penalty, so that a stroke sliced off a digit does not win because it looks like a confident 1.
    """
    candidates = split_candidates(piece)
    if not candidates:
        return None
    fields = np.stack([normalise(piece, ink)] + [normalise(p, ink) for pair in candidates for p in pair])
    confidence = np.log(classify(fields).max(axis=1) + 1e-9)
    share = max(1.0, round(piece.width / typical))  # digits in the piece, at least 2 once split
    share = max(share, 2.0)
    left_widths = np.array([a.box[2] - piece.left for a, _ in candidates], dtype=np.float64) / piece.width
    nearest = np.round(left_widths * share) / share
    penalty = SPLIT_PRIOR * ((left_widths - np.clip(nearest, 1 / share, 1 - 1 / share)) * share) ** 2
    pairs = confidence[1:].reshape(-1, 2).sum(axis=1) - penalty
    best = int(pairs.argmax())
    return candidates[best], float(pairs[best]), float(confidence[0])


def normalise(piece: Piece, ink: Floats, pen: bool = False) -> Floats:
    """The piece's own ink (with its anti-aliased edge, not its neighbours'), MNIST-style, as 784 values.

    With `pen`, the strokes are redrawn towards MNIST's width (restroke): slower, so only for the
    digits finally read, not for the many candidate cuts whose scores only need comparing.
    """
    left, top, right, bottom = piece.box
    height, width = ink.shape
    y0, x0, y1, x1 = max(top - 1, 0), max(left - 1, 0), min(bottom + 1, height), min(right + 1, width)
    grown = np.zeros((y1 - y0, x1 - x0), dtype=bool)
    grown[top - y0:bottom - y0, left - x0:right - x0] = piece.mask
    if pen:
        crop = restroke(grown, max(piece.height, piece.width))
    else:
        crop = ink[y0:y1, x0:x1] * ndimage.maximum_filter(grown, size=3)
    peak = float(crop.max())
    if peak <= 0:
        return np.zeros(FIELD * FIELD, dtype=np.float32)
    return centre(fit_box((crop / peak).astype(np.float32))).reshape(-1)


def stroke_width(mask: Mask) -> float:
    """Mean stroke width in pixels: twice the ink's area over its outline's length."""
    outline = int((mask & ~ndimage.binary_erosion(mask)).sum())
    return 2.0 * float(mask.sum()) / max(outline, 1)


def restroke(mask: Mask, side: int) -> Floats:
    """The piece redrawn, anti-aliased, with its strokes moved towards MNIST's width for its size.

    Pens differ far more between scans than within MNIST, and a pen much bolder or finer than
    the digits the model learnt from costs more accuracy than any other difference (slant, blur).
    """
    pad = math.ceil(MAX_SHAVE * side) + 2
    padded = np.pad(mask, pad)
    inside = ndimage.distance_transform_edt(padded)
    outside = ndimage.distance_transform_edt(~padded)
    signed = inside - outside + 0.5  # > 0 inside the ink, the outline at 0
    shave = STROKE_STRENGTH * (stroke_width(mask) - MNIST_STROKE * side) / 2
    shave = float(np.clip(shave, -MAX_SHAVE * side, MAX_SHAVE * side))
    drawn: Floats = np.clip(signed - shave, 0.0, 1.0).astype(np.float32)
    rows, cols = np.flatnonzero(drawn.any(axis=1)), np.flatnonzero(drawn.any(axis=0))
    if rows.size == 0:
        return drawn
    trimmed: Floats = drawn[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1]
    return trimmed


def is_hyphen(piece: Piece, band_top: int, band_bottom: int) -> bool:
    """A short, flat blob in the middle of the digits' band."""
    band = band_bottom - band_top
    left, top, right, bottom = piece.box
    middle = ((top + bottom) / 2 - band_top) / band
    return (bottom - top) <= 0.3 * band and (right - left) >= 1.5 * (bottom - top) \
        and (right - left) <= 0.9 * band and 0.3 <= middle <= 0.75


def segment(grey: Floats, classify: Classify, expect: Pattern | None = None) -> Segmentation:
    """Cut a crop (greyscale in [0, 1], any polarity) into MNIST-style digits; blank crops raise ImageError."""
    ink, scale = read_ink(grey)
    if float(ink.max()) < MIN_CONTRAST:
        raise ImageError("no digits found: the crop is blank")
    binary = remove_lines(ink > max(otsu(ink[ink > 0.02]) if (ink > 0.02).any() else 1.0, MIN_THRESHOLD))
    pieces = drop_rules(components(binary))
    if not pieces:
        raise ImageError("no digits found: the crop holds only lines or specks")
    tallest = max(p.height for p in pieces)
    band_top = min(p.box[1] for p in pieces if p.height >= 0.5 * tallest)
    band_bottom = max(p.box[3] for p in pieces if p.height >= 0.5 * tallest)
    hyphens = [p for p in pieces if is_hyphen(p, band_top, band_bottom)]
    digits = group([p for p in pieces if not any(p is h for h in hyphens)], band_bottom - band_top)
    if not digits:
        raise ImageError("no digits found")
    digits = split_wide(digits, ink, classify, expect, band_bottom - band_top)
    if expect is not None:
        digits = merge_narrow(digits, expect.digits)
    separators = place_separators(digits, hyphens, expect)
    fields = np.stack([normalise(p, ink, pen=True) for p in digits])
    boxes = [original_box(p.box, scale, grey.shape) for p in digits]
    return Segmentation(fields, boxes, separators)


def split_wide(digits: list[Piece], ink: Floats, classify: Classify, expect: Pattern | None,
               band: int) -> list[Piece]:
    """Split touching digits. Without a hint: a piece too wide for one digit, when the classifier
    reads its two halves more confidently than the whole. With one: up to the expected count,
    each time the piece whose best cut gains most over reading it whole (plus a width prior):
    the widest piece is often a wide 0 or 7 while the touching pair is narrower."""
    typical = DIGIT_ASPECT * band
    settled: set[int] = set()  # id()s of pieces better left whole
    gains: dict[int, tuple[Piece, float]] = {}
    for _ in range(3 * len(digits) + 4):
        if expect is not None and len(digits) >= expect.digits:
            break
        open_ = [i for i in range(len(digits)) if id(digits[i]) not in settled]
        if not open_:
            break
        widest = max(open_, key=lambda i: digits[i].width / max(digits[i].height, 1))
        if expect is not None:
            widest = max(open_, key=lambda i: hinted_gain(digits[i], ink, classify, typical, gains))
        piece = digits[widest]
        if expect is None and piece.width < SPLIT_FROM * typical:
            break
        found = best_split(piece, ink, classify, typical)
        if found is None:
            settled.add(id(piece))
            continue
        halves, split_confidence, whole_confidence = found
        if expect is None and piece.width < SPLIT_SURE * typical and split_confidence < whole_confidence:
            settled.add(id(piece))
            continue
        digits[widest:widest + 1] = sorted(halves, key=lambda p: p.left)
    return digits


def hinted_gain(piece: Piece, ink: Floats, classify: Classify, typical: float,
                gains: dict[int, tuple[Piece, float]]) -> float:
    """How much better a piece reads cut in two than whole, plus a prior for its width. Cached by
    id(), keeping the piece itself so that a reused id of a dropped piece is never mistaken for it."""
    cached = gains.get(id(piece))
    if cached is None or cached[0] is not piece:
        found = best_split(piece, ink, classify, typical) if piece.width >= 0.5 * typical else None
        prior = HINT_WIDTH_PRIOR * (piece.width / typical - 1.0)
        cached = piece, -np.inf if found is None else found[1] - found[2] + prior
        gains[id(piece)] = cached
    return cached[1]


def merge_narrow(digits: list[Piece], count: int) -> list[Piece]:
    """Too many pieces for the expected count: join the closest neighbours (a digit broken sideways)."""
    while len(digits) > count:
        gaps = [digits[i + 1].left - digits[i].box[2] for i in range(len(digits) - 1)]
        i = int(np.argmin(gaps))
        digits[i:i + 2] = [union(digits[i], digits[i + 1])]
    return digits


def place_separators(digits: list[Piece], hyphens: list[Piece], expect: Pattern | None) -> dict[int, str]:
    """Separators by the pattern when given, else where a hyphen stands or a gap is far wider than the rest."""
    if expect is not None:
        positions = np.cumsum(expect.groups)[:-1]
        return {int(p): expect.separator for p in positions if p < len(digits)}
    separators: dict[int, str] = {}
    for hyphen in hyphens:
        centre_x = (hyphen.box[0] + hyphen.box[2]) / 2
        index = sum(1 for p in digits if (p.box[0] + p.box[2]) / 2 < centre_x)
        if 0 < index < len(digits):
            separators[index] = "-"
    if len(digits) >= 3:
        gaps = np.array([digits[i + 1].box[0] - digits[i].box[2] for i in range(len(digits) - 1)])
        widths = np.median([p.width for p in digits])
        for i, gap in enumerate(gaps):
            others = np.delete(gaps, i)
            if gap > max(0.8 * widths, 3 * max(float(np.median(others)), 1.0)) and i + 1 not in separators:
                separators[i + 1] = " "
    return separators


def original_box(box: Box, scale: float, shape: tuple[int, ...]) -> Box:
    left, top, right, bottom = box
    height, width = shape[0], shape[1]
    return (max(0, math.floor(left / scale)), max(0, math.floor(top / scale)),
            min(width, math.ceil(right / scale)), min(height, math.ceil(bottom / scale)))
