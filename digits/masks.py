"""Growing and shrinking a binary mask by a pixel, by array shifts.

scipy.ndimage's binary_dilation and binary_erosion give the same masks, but their set-up costs
more than the work on masks the size of a crop or a digit: 0.35 ms against 0.04 to grow a
crop's ink by two pixels, and a reading grows every piece of every cut (`python -m
benchmarks.masks`, docs/benchmarks.md).
"""

from __future__ import annotations

from digits.arrays import Mask


def grow(mask: Mask, times: int = 1, square: bool = False) -> Mask:
    """The mask dilated `times` by the 4-neighbour cross (scipy's default structure), or by the
    3 x 3 square."""
    out = mask.copy()
    for _ in range(times):
        was = out.copy()
        out[1:] |= was[:-1]
        out[:-1] |= was[1:]
        across = out.copy() if square else was  # the square: the cross's columns grown again
        out[:, 1:] |= across[:, :-1]
        out[:, :-1] |= across[:, 1:]
    return out


def shrink(mask: Mask) -> Mask:
    """The mask eroded by the 4-neighbour cross, outside the mask counting as no ink."""
    out = mask.copy()
    out[1:] &= mask[:-1]
    out[:-1] &= mask[1:]
    out[:, 1:] &= mask[:, :-1]
    out[:, :-1] &= mask[:, 1:]
    out[[0, -1]] = False
    out[:, [0, -1]] = False
    return out
