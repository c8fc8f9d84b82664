"""Cut paths through a row of digits, top to bottom, each as its column in every row: where a
crop (digits/segment.py) is cut into primitives. Paths cross the least ink they can, winding as
they must, and where two round digits meet they go straight down from the outline's dip."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
from scipy import ndimage

from digits.arrays import Mask

CUT_SPACING = 0.25  # cuts stand at least this far apart (x height)
SIDESTEP_COST = 0.05  # a cut path's step sideways costs as much as crossing this share of an ink pixel
NOTCH_REACH, NOTCH_DEPTH = 0.35, 0.15  # an outline's dip: this far (x height) on each side, this deep
MIN_SPLIT = 0.5  # pieces of ink narrower than this (x the digits' height) are never cut ...
CUT_SHARE = 0.4  # ... and wider ones at most width / (this x height) times
MAX_CUT_STROKES = 2.5  # a cut through ink crosses at most this many stroke widths of it


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
