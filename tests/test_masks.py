"""Growing and shrinking masks by array shifts (digits/masks.py): the masks scipy makes."""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from digits.masks import grow, shrink


def test_grow_and_shrink_are_scipys_binary_dilation_and_erosion() -> None:
    rng = np.random.default_rng(0)
    square = np.ones((3, 3), dtype=bool)
    for shape in [(1, 1), (1, 9), (7, 1), (2, 2), (30, 41), (96, 313)]:
        for density in (0.05, 0.3, 0.7):
            mask = rng.random(shape) < density
            for times in (1, 2, 3):
                np.testing.assert_array_equal(grow(mask, times), ndimage.binary_dilation(mask, iterations=times))
            np.testing.assert_array_equal(grow(mask, square=True), ndimage.binary_dilation(mask, structure=square))
            np.testing.assert_array_equal(shrink(mask), ndimage.binary_erosion(mask))


def test_the_mask_given_is_left_as_it_was() -> None:
    mask = np.zeros((5, 5), dtype=bool)
    mask[2, 2] = True
    before = mask.copy()
    assert grow(mask, 2).sum() == 13 and grow(mask, square=True).sum() == 9 and not shrink(mask).any()
    np.testing.assert_array_equal(mask, before)
