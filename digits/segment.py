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

from digits.arrays import Box, Floats, Mask
from digits.images import FIELD, ImageError, centre_many, fit_box
from digits.ink import (
    Cleaned,
    Piece,
    halo,
    is_hyphen,
    is_optional,
    stacks,
    stroke_width,
    union,
)
from digits.seams import seams, split_along

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


def cut(cleaned: Cleaned) -> Cut:
    """The first of a crop's cuts (`cuts`): the one the default model's candidate digits were
    trained on (trainer.crops)."""
    return cuts(cleaned)[0]


def cuts(cleaned: Cleaned, find_hyphens: bool = True) -> list[Cut]:
    """Cut a crop's cleaned ink (digits.ink.clean) into primitives, in one or two ways (`seams`);
    ImageError if it holds no digits. `find_hyphens=False` (a format known to have none) keeps
    every flat mid-band blob as ink: a digit's loose stroke then stays with its digit instead of
    being set aside as a separator."""
    ink, scale, binary, pieces = cleaned.ink, cleaned.scale, cleaned.binary, cleaned.pieces
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


def lattice(cleaned: Cleaned, find_hyphens: bool = True) -> Lattice:
    """The candidate digits of a crop, normalised, with their boxes in the image's pixels: those
    of each of its cuts (`cuts`), one after the other (`Lattice.starts`); a candidate two cuts
    share is normalised once."""
    found_cuts = cuts(cleaned, find_hyphens)
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
    boxes = [original_box(piece.box, shared.scale, cleaned.shape) for piece in merged]
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
    """The candidates' ink, each normalised MNIST-style, as (candidates, 784); those not made yet
    are centred together (digits.images.centre_many). `normalised`, the fields already made by a
    candidate's place and pixels, spares another cut's same candidates."""
    done = {} if normalised is None else normalised
    halos = [halo(p) for p in found.primitives]
    keys: list[tuple[int, int, bytes]] = []
    inks: dict[tuple[int, int, bytes], Floats] = {}  # the new candidates' ink, fitted to the box
    for start, end in spans:
        grown = union(*halos[start:end])
        key = (grown.left, grown.top, bytes(grown.mask.shape) + np.packbits(grown.mask).tobytes())
        if key not in done and key not in inks:
            inks[key] = candidate_ink(grown, found.ink)
        keys.append(key)
    inked = [key for key, ink in inks.items() if ink.any()]
    done.update(zip(inked, centre_many([inks[key] for key in inked]).reshape(-1, FIELD * FIELD), strict=True))
    done.update((key, np.zeros(FIELD * FIELD, dtype=np.float32)) for key, ink in inks.items() if not ink.any())
    return np.stack([done[key] for key in keys])


def candidate_ink(halo: Piece, ink: Floats) -> Floats:
    """The ink under a candidate's halo (its own ink and anti-aliased edge, not its neighbours'
    ink beyond), scaled to fit the MNIST box (digits.images.fit_box); all zero if it has none."""
    height, width = ink.shape
    left, top = max(halo.left, 0), max(halo.top, 0)
    right, bottom = min(halo.box[2], width), min(halo.box[3], height)
    mask = halo.mask[top - halo.top:bottom - halo.top, left - halo.left:right - halo.left]
    crop = ink[top:bottom, left:right] * mask
    peak = float(crop.max())
    if peak <= 0:
        return np.zeros((1, 1), dtype=np.float32)
    return fit_box((crop / peak).astype(np.float32))


def original_box(box: Box, scale: float, shape: tuple[int, ...]) -> Box:
    left, top, right, bottom = box
    height, width = shape[0], shape[1]
    return (max(0, math.floor(left / scale)), max(0, math.floor(top / scale)),
            min(width, math.ceil(right / scale)), min(height, math.ceil(bottom / scale)))
