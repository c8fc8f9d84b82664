"""Cutting a crop (a postal code) into candidate digits, after Matan et al. 1992 and Burges et al. 1992.

The crop's ink (digits.ink) is cut into primitives along paths from top to bottom: through
every gap between pieces of ink (winding as it must), and through pieces wide enough to hold
two digits, first where their outline dips in from above or below (where round digits touch),
then wherever a path crosses little ink. There are more cuts than digit boundaries on purpose.
Every run of neighbouring primitives that could be one digit is a candidate, normalised the
way MNIST was made (digits.images.fit_box and centre); reading (digits.reading) lets the model
score them all and keeps the best path through them.

A piece takes only so many cuts, so the order in which they are proposed decides which it
gets. Straight cuts down from an outline's dip suit round digits meeting side by side; winding
cheapest paths suit slanted digits that touch along a stroke. A crop is cut both ways when the
two differ, and reading keeps the cut whose digits read best: on crops of MNIST validation
digits, whole codes read right went from 83.8% to 85.5% (87.5% to 89.4% with the hint), for
about a fifth more time per crop (docs/postal.md).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt
from scipy import ndimage

from digits.images import FIELD, MIN_CONTRAST, ImageError, centre, fit_box
from digits.ink import (
    Box,
    Floats,
    Mask,
    Piece,
    binarise,
    components,
    drop_rules,
    halo,
    is_hyphen,
    is_optional,
    read_ink,
    remove_lines,
    stacks,
    stroke_width,
    union,
)

CUT_SPACING = 0.25  # cuts stand at least this far apart (x height)
SIDESTEP_COST = 0.05  # a cut path's step sideways costs as much as crossing this share of an ink pixel
NOTCH_REACH, NOTCH_DEPTH = 0.35, 0.15  # an outline's dip: this far (x height) on each side, this deep
MIN_SPLIT = 0.5  # pieces of ink narrower than this (x the digits' height) are never cut ...
CUT_SHARE = 0.4  # ... and wider ones at most width / (this x height) times
MAX_CUT_STROKES = 2.5  # a cut through ink crosses at most this many stroke widths of it
SLIVER_AREA = 0.03  # a sliver a cut leaves, under this share of a typical digit's area, may be left out as noise
STACK_GAP = 0.1  # pieces one over the other, at most this far apart (x height), are one digit's broken strokes
MAX_RUN = 6  # a candidate digit joins at most this many primitives
MAX_WIDTH = 2.0  # ... and is at most this wide (x height)
MAX_INNER_GAP = 0.3  # ... with no gap between its primitives wider than this (x height)


@dataclass(frozen=True)
class Lattice:
    """The ways to read one image as a row of digits: candidate digits, each a run of consecutive
    primitives (pieces of ink, left to right), normalised MNIST-style. Reading classifies all of
    them and keeps the path through the primitives whose digits read best."""

    fields: Floats  # (candidates, 784)
    spans: list[tuple[int, int]]  # each candidate's primitives [start, end)
    boxes: list[Box]  # each candidate's ink box, in the image's pixels
    widths: Floats  # each candidate's width over the digits' usual height: normalising hides it ...
    heights: Floats  # ... and its height
    primitives: int
    hyphens: list[float] = field(default_factory=list)  # centres of hyphens, x in the image's pixels
    optional: frozenset[int] = frozenset()  # primitives that may be left out as noise
    starts: tuple[int, ...] = (0,)  # the first primitive of each alternative cut (see `cuts`)
    gaps: Floats | None = None  # each candidate's columns without ink, over the digits' height; None: none



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
    """The first of a crop's cuts (`cuts`): the one the default model's candidate digits were
    trained on (trainer.crops)."""
    return cuts(grey)[0]


def cuts(grey: Floats, find_hyphens: bool = True) -> list[Cut]:
    """Binarise and clean a crop (greyscale in [0, 1], any polarity) and cut its ink into
    primitives, in one or two ways (`seams`); blank crops raise ImageError. `find_hyphens=False`
    (a format known to have none) keeps every flat mid-band blob as ink: a digit's loose stroke
    then stays with its digit instead of being set aside as a separator."""
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
    separators = [p for p in pieces if find_hyphens and is_hyphen(p, band_top, band_bottom, binary)]
    rest = [p for p in pieces if not any(p is h for h in separators)]
    if not rest:
        raise ImageError("no digits found")
    whole = stacks(rest)  # broken digits joined, for measuring
    tall = [p for p in whole if p.height >= 0.5 * max(p.height for p in whole)]
    size = float(np.median([p.height for p in tall]))
    usual_area = float(np.median([p.area for p in tall]))
    kept, optional_ink = np.zeros_like(binary), np.zeros_like(binary)
    for p in rest:
        left, top, right, bottom = p.box
        kept[top:bottom, left:right] |= p.mask
        if is_optional(p, size, usual_area):
            optional_ink[top:bottom, left:right] |= p.mask
    stroke = float(np.median([stroke_width(p.mask) for p in tall]))
    return [cut_pieces(split_along(kept, paths), ink, scale, size, separators, optional_ink, usual_area)
            for paths in seams(kept, (band_top, band_bottom), size, stroke)]


def cut_pieces(labels: npt.NDArray[np.intp], ink: Floats, scale: float, size: float, hyphens: list[Piece],
               optional_ink: Mask, usual_area: float) -> Cut:
    """The cut's pieces of ink, left to right, broken strokes joined, slivers and noise optional."""
    parts = []
    for index, (rows, cols) in enumerate(ndimage.find_objects(labels), start=1):
        if rows is None:
            continue
        part = Piece(labels[rows, cols] == index, cols.start, rows.start)
        owned = optional_ink[rows, cols][part.mask]
        parts.append((part, bool(owned.all()) or part.area < SLIVER_AREA * usual_area))
    solid = stacks([part for part, noise in parts if not noise], STACK_GAP * size)  # broken strokes joined
    parts = [(part, False) for part in solid] + [(part, True) for part, noise in parts if noise]
    parts.sort(key=lambda item: item[0].left + item[0].width / 2)
    optional = frozenset(i for i, (_, flag) in enumerate(parts) if flag)
    return Cut(ink, scale, size, [part for part, _ in parts], hyphens, optional)



def lattice(grey: Floats, find_hyphens: bool = True) -> Lattice:
    """The candidate digits of a crop, normalised, with their boxes in the image's pixels: those
    of each of its cuts (`cuts`), one after the other (`Lattice.starts`); a candidate two cuts
    share is normalised once."""
    found_cuts = cuts(grey, find_hyphens)
    shared = found_cuts[0]  # the cuts differ only in their primitives: same ink, scale, size, hyphens
    spans: list[tuple[int, int]] = []
    merged: list[Piece] = []
    rows: list[Floats] = []
    normalised: dict[tuple[int, int, bytes], Floats] = {}
    starts: list[int] = []
    optional: set[int] = set()
    total = 0  # primitives so far
    for found in found_cuts:
        starts.append(total)
        found_spans, found_merged = candidates(found)
        rows += list(fields(found, found_spans, normalised))
        spans += [(total + start, total + end) for start, end in found_spans]
        merged += found_merged
        optional |= {total + index for index in found.optional}
        total += len(found.primitives)
    boxes = [original_box(piece.box, shared.scale, grey.shape) for piece in merged]
    centres = [((h.box[0] + h.box[2]) / 2) / shared.scale for h in shared.hyphens]
    widths = np.array([piece.width / shared.size for piece in merged], dtype=np.float32)
    heights = np.array([piece.height / shared.size for piece in merged], dtype=np.float32)
    gaps = np.array([(~piece.mask.any(axis=0)).sum() / shared.size for piece in merged], dtype=np.float32)
    return Lattice(np.stack(rows), spans, boxes, widths, heights, total, centres, frozenset(optional), tuple(starts),
                   gaps)



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



def fields(found: Cut, spans: list[tuple[int, int]],
           normalised: dict[tuple[int, int, bytes], Floats] | None = None) -> Floats:
    """The candidates' ink, each normalised MNIST-style, as (candidates, 784). `normalised`, the
    fields already made by a candidate's place and pixels, spares another cut's same candidates."""
    done = {} if normalised is None else normalised
    halos = [halo(p) for p in found.primitives]
    rows = []
    for start, end in spans:
        grown = union(*halos[start:end])
        key = (grown.left, grown.top, bytes(grown.mask.shape) + np.packbits(grown.mask).tobytes())
        if key not in done:
            done[key] = normalise(grown, found.ink)
        rows.append(done[key])
    return np.stack(rows)



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



def seams(binary: Mask, band: tuple[int, int], size: float, stroke: float) -> list[list[npt.NDArray[np.intp]]]:
    """Cut paths through the row of digits, top to bottom, each as its column in every row: the
    cheapest path (crossing the least ink, a step sideways costing a little) through the middle
    of the digits' band at the middle of each gap between pieces of ink, however it has to wind,
    and, within pieces of ink, first where the outline dips in deeply from above or below (where
    touching digits meet, however much ink the cut then crosses), then at each column where
    crossing is cheapest locally, at most MAX_CUT_STROKES strokes. A piece of ink takes cuts by
    its width (none under MIN_SPLIT x size), CUT_SPACING x size apart. The dips' cuts proposed
    first, then the same with the winding cuts first: one set of paths, or two where they differ."""
    height = binary.shape[0]
    cost = binary.astype(np.float64)
    forward, backward = np.empty_like(cost), np.empty_like(cost)
    forward[0], backward[-1] = cost[0], cost[-1]
    for row in range(1, height):
        forward[row] = cost[row] + cheapest_step(forward[row - 1])
    for row in range(height - 2, -1, -1):
        backward[row] = cost[row] + cheapest_step(backward[row + 1])
    up, down = cheapest_moves(forward), cheapest_moves(backward)
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
    paths = list(trace(up, down, middle, np.array(gaps, dtype=np.intp)))
    rows = slice(top, bottom)
    cheapest = np.array(sorted(np.flatnonzero(cheap), key=lambda c: (through[c], c)), dtype=np.intp)
    straight = [path for rows_of, columns in notches(labels, size) for path in upright(up, down, rows_of, columns)]
    winding = list(trace(up, down, middle, cheapest))
    ways: list[list[npt.NDArray[np.intp]]] = []
    seen: set[frozenset[bytes]] = set()  # the cuts of each way so far
    for proposed in (straight + winding, winding + straight):
        cuts: dict[int, list[npt.NDArray[np.intp]]] = {}  # piece of ink -> the paths cutting it
        for path in proposed:
            hit = labels[np.arange(height), path]
            piece = int(np.bincount(hit[hit > 0]).argmax()) if (hit > 0).any() else 0
            others = cuts.setdefault(piece, [])
            if len(others) < budget[piece] and all(
                    np.abs(path[rows] - other[rows]).mean() >= CUT_SPACING * size for other in others):
                others.append(path)
        chosen = [path for piece_cuts in cuts.values() for path in piece_cuts]
        same_as = frozenset(path.tobytes() for path in chosen)
        if same_as not in seen:
            seen.add(same_as)
            ways.append(paths + chosen)
    return ways



def notches(labels: npt.NDArray[np.int32], size: float) -> list[tuple[slice, list[int]]]:
    """Where a piece's outline dips in by NOTCH_DEPTH x size or more, from above or from below,
    against the outline on both sides within NOTCH_REACH x size (where two round digits meet):
    each piece's rows and the columns of its dips."""
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
        columns: list[int] = []
        for outline in (tops.astype(np.float64), -bottoms.astype(np.float64)):  # a dip is a larger value
            for x in range(reach, len(outline) - reach):
                left, right = outline[x - reach:x].min(), outline[x + 1:x + reach + 1].min()
                window = outline[max(x - 2, 0):x + 3]
                if outline[x] - max(left, right) >= depth and outline[x] >= window.max() and inked[x] \
                        and cols.start + x not in columns:
                    columns.append(cols.start + x)
        if columns:
            found.append((rows, columns))
    return found



def upright(up: npt.NDArray[np.intp], down: npt.NDArray[np.intp], rows: slice, columns: list[int]
            ) -> npt.NDArray[np.intp]:
    """Cuts straight down each column through `rows` (a piece of ink), and the cheapest way on
    from their ends, one per line: where two digits meet along a stroke, no cheap path parts them."""
    at = np.array(columns, dtype=np.intp)
    above, below = trace(up, down, rows.start, at), trace(up, down, rows.stop - 1, at)
    paths = np.repeat(at[:, None], up.shape[0], axis=1)
    paths[:, :rows.start], paths[:, rows.stop:] = above[:, :rows.start], below[:, rows.stop:]
    return paths


def trace(up: npt.NDArray[np.intp], down: npt.NDArray[np.intp], row: int, columns: npt.NDArray[np.intp]
          ) -> npt.NDArray[np.intp]:
    """The cheapest paths through (row, each of columns), one per line, following the moves."""
    height = up.shape[0]
    paths = np.empty((len(columns), height), dtype=np.intp)
    paths[:, row] = columns
    for above in range(row - 1, -1, -1):
        paths[:, above] = up[above, paths[:, above + 1]]
    for below in range(row + 1, height):
        paths[:, below] = down[below, paths[:, below - 1]]
    return paths


def cheapest_step(previous: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    """For each column, the cheapest of the previous row's same and neighbouring columns (plus the sideways cost)."""
    cheapest = previous.copy()
    np.minimum(cheapest[1:], previous[:-1] + SIDESTEP_COST, out=cheapest[1:])
    np.minimum(cheapest[:-1], previous[1:] + SIDESTEP_COST, out=cheapest[:-1])
    return cheapest


def cheapest_moves(costs: npt.NDArray[np.float64]) -> npt.NDArray[np.intp]:
    """For each pixel, the column a path coming from it takes in that pixel's row: itself, or the
    neighbour where `costs` (the cheapest way on) is lower by more than a sideways step costs."""
    height, width = costs.shape
    columns = np.broadcast_to(np.arange(width, dtype=np.intp), costs.shape)
    wall = np.full((height, 1), np.inf)
    left, right = np.hstack([wall, costs[:, :-1]]), np.hstack([costs[:, 1:], wall])
    go_left = left + SIDESTEP_COST < costs
    lowest = np.where(go_left, left, costs)
    go_right = right + SIDESTEP_COST < lowest
    return np.asarray(np.where(go_right, columns + 1, np.where(go_left, columns - 1, columns)), dtype=np.intp)


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
        padded = np.pad(labels, 1)
        sides = ((slice(1, -1), slice(0, -2)), (slice(1, -1), slice(2, None)),  # left, right
                 (slice(0, -2), slice(1, -1)), (slice(2, None), slice(1, -1)))  # above, below
        for near_rows, near_cols in sides:
            beside = np.where(beside > 0, beside, padded[near_rows, near_cols])
        labels = np.where(orphans, beside, labels)
    return np.asarray(labels, dtype=np.intp)



def original_box(box: Box, scale: float, shape: tuple[int, ...]) -> Box:
    left, top, right, bottom = box
    height, width = shape[0], shape[1]
    return (max(0, math.floor(left / scale)), max(0, math.floor(top / scale)),
            min(width, math.ceil(right / scale)), min(height, math.ceil(bottom / scale)))
