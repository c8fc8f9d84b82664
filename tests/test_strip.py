"""A crop as a strip of ink (digits/strip.py): cleaned, cut to its ink, scaled to the reader's
height, and mapped back to the crop's columns; blank or endless crops refused, saying why."""

from __future__ import annotations

import numpy as np
import pytest

from digits.images import ImageError
from digits.ink import clean
from digits.strip import INK_HEIGHT, MARGIN, STRIP_HEIGHT, strip_of
from tests.conftest import Digits
from trainer.synth import generate


def test_a_crop_becomes_a_strip_of_its_ink_that_maps_back_to_the_crop(mnist_test: Digits) -> None:
    images, labels = mnist_test
    for crop in generate(12, images, labels, formats=("4", "5", "6", "5+4"), seed=11):
        strip = strip_of(clean(crop.image.astype(np.float32) / 255.0))
        pixels = strip.pixels
        assert pixels.shape[0] == STRIP_HEIGHT and pixels.dtype == np.float32
        assert pixels.max() == pytest.approx(1.0) and pixels.min() == 0.0
        above = (STRIP_HEIGHT - INK_HEIGHT) // 2
        assert not pixels[:above].any() and not pixels[above + INK_HEIGHT:].any()  # the ink is INK_HEIGHT rows
        assert not pixels[:, :MARGIN].any() and not pixels[:, -MARGIN:].any()
        assert pixels[:, MARGIN].any() and pixels[:, -MARGIN - 1].any()  # cut to the ink
        first, last = crop.boxes[0], crop.boxes[-1]
        assert strip.crop_column(MARGIN) == pytest.approx(first[0], abs=3)  # the first digit's left edge
        assert strip.crop_column(pixels.shape[1] - MARGIN) == pytest.approx(last[2], abs=3)
        assert strip.top <= min(b[1] for b in crop.boxes) + 3 and strip.bottom >= max(b[3] for b in crop.boxes) - 3


def test_light_ink_on_dark_paper_gives_the_same_strip(mnist_test: Digits) -> None:
    images, labels = mnist_test
    crop = generate(1, images, labels, seed=12)[0]
    grey = crop.image.astype(np.float32) / 255.0
    np.testing.assert_allclose(strip_of(clean(1.0 - grey)).pixels, strip_of(clean(grey)).pixels, atol=0.05)


def test_a_blank_crop_is_refused() -> None:
    with pytest.raises(ImageError, match="no digits found: the crop is blank"):
        strip_of(clean(np.full((60, 200), 0.8, dtype=np.float32)))


def test_ink_far_wider_than_any_code_is_refused() -> None:
    """A row of marks 60 times wider than tall is a line of text or a ruler, not a postal code."""
    grey = np.ones((40, 1300), dtype=np.float32)
    for left in range(20, 1280, 14):
        grey[10:30, left:left + 3] = 0.0
    with pytest.raises(ImageError, match=r"no code found: the ink is \d+ x \d+ pixels, over 24 times wider than tall"):
        strip_of(clean(grey))
