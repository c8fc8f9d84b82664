"""The postal-crop generator: reproducible, the formats asked for, and ground truth that matches the ink."""

from __future__ import annotations

import numpy as np
import pytest

from tests.conftest import Digits
from trainer.synth import FORMATS, generate, make_crop


def test_same_seed_same_crops(mnist_test: Digits) -> None:
    images, labels = mnist_test
    first, again = generate(4, images, labels, seed=3), generate(4, images, labels, seed=3)
    other = generate(4, images, labels, seed=4)
    assert all((a.image == b.image).all() and a.code == b.code for a, b in zip(first, again, strict=True))
    assert any(a.image.shape != b.image.shape or a.code != b.code for a, b in zip(first, other, strict=True))


@pytest.mark.parametrize("fmt", sorted(FORMATS))
def test_codes_follow_the_format(fmt: str, mnist_test: Digits) -> None:
    images, labels = mnist_test
    for crop in generate(6, images, labels, formats=(fmt,), seed=5):
        pattern = FORMATS[fmt]
        assert len(crop.code) == len(pattern) and crop.fmt == fmt
        assert all(c.isdigit() if p == "#" else c in "- " for c, p in zip(crop.code, pattern, strict=True))
        assert len(crop.boxes) == len(crop.masks) == pattern.count("#")


@pytest.mark.parametrize("inverted", [False, True])
def test_each_digits_mask_lies_on_its_own_ink(inverted: bool, mnist_test: Digits) -> None:
    images, labels = mnist_test
    for crop in generate(10, images, labels, formats=("5", "5+4"), seed=6, inverted=inverted):
        paper = float(np.median(crop.image))
        height, width = crop.image.shape
        lefts = [box[0] for box in crop.boxes]
        assert lefts == sorted(lefts)
        for (left, top, right, bottom), mask in zip(crop.boxes, crop.masks, strict=True):
            assert 0 <= left < right <= width and 0 <= top < bottom <= height
            assert mask.shape == (bottom - top, right - left) and mask.any()
            ink = float(crop.image[top:bottom, left:right][mask].mean())
            assert (ink > paper + 40) if inverted else (ink < paper - 40)


def test_bad_arguments_are_refused(mnist_test: Digits) -> None:
    images, labels = mnist_test
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match="unknown format '7'"):
        make_crop(rng, images, labels, "7")
    with pytest.raises(ValueError, match="probabilities"):
        make_crop(rng, images, labels, touching=1.5)
    with pytest.raises(ValueError, match=r"\(n, 784\)"):
        make_crop(rng, images[:, :100], labels)


def test_a_faint_digit_thinned_below_the_inks_edge_still_makes_a_glyph() -> None:
    """A faint MNIST digit (strokes at level 40) under every pen and edge: its glyph keeps its
    strokes instead of losing them all (which once stopped a long `digits-trainer strips` run)."""
    from trainer.glyphs import digit

    pixels = np.zeros((28, 28), dtype=np.uint8)
    pixels[6:22, 12:15] = 40
    for seed in range(20):
        glyph = digit(np.random.default_rng(seed), pixels.ravel(), 60.0, 5.0, 0.8)
        assert glyph.cover.any() and glyph.cover.shape[0] >= 40
