"""Which reader reads an image (digits/readers.py): crops by the strip reader where the version
has one, single digits (and everything else without one) by cutting, each image's outcome in its
place, a bad image failing alone."""

from __future__ import annotations

import numpy as np

from digits.arrays import Floats
from digits.images import ImageError, decode
from digits.network import load_model_dir
from digits.readers import read_images
from digits.reading import Reading, lattices_of, read
from digits.registry import DEFAULT_MODEL_DIR
from digits.segment import Lattice
from digits.sweep import load_strip_reader, read_crop
from tests.conftest import SEED_PAIR, STRIP_LAYERS, Digits, random_strips
from trainer.synth import generate, png_bytes

THRESHOLD = 0.9


def images(mnist_test: Digits) -> list[Floats]:
    """Two single digits, a blank page (no digit: an error), and two 5-digit crops, mixed."""
    digits, labels = mnist_test
    crops = [decode(png_bytes(crop)) for crop in generate(2, digits, labels, seed=5)]
    singles = [digits[i].reshape(28, 28).astype(np.float32) / 255.0 for i in range(2)]
    blank = np.ones((40, 200), dtype=np.float32)  # white paper: neither reader finds ink
    return [singles[0], crops[0], blank, singles[1], crops[1]]


def same(found: Reading | ImageError, expected: Reading) -> bool:
    return (isinstance(found, Reading) and found.code == expected.code and found.review == expected.review
            and abs(found.confidence - expected.confidence) < 1e-9)


def cut(greys: list[Floats]) -> list[Reading]:
    """Each image read by cutting alone, as digits.reading reads it."""
    lattices = [found for found in lattices_of(greys) if isinstance(found, Lattice)]
    assert len(lattices) == len(greys)
    return read(lattices, load_model_dir(DEFAULT_MODEL_DIR), THRESHOLD)


def test_without_a_strip_reader_every_image_is_cut_and_a_blank_one_fails_in_its_place(mnist_test: Digits) -> None:
    greys = images(mnist_test)
    found = read_images(greys, load_model_dir(DEFAULT_MODEL_DIR), None, THRESHOLD)
    assert len(found) == 5 and isinstance(found[2], ImageError)
    expected = cut([greys[i] for i in (0, 1, 3, 4)])
    assert all(same(found[i], reading) for i, reading in zip((0, 1, 3, 4), expected, strict=True))
    codes = [reading.code for reading in found if isinstance(reading, Reading)]
    assert codes[0] == str(mnist_test[1][0]) and codes[2] == str(mnist_test[1][1])  # the digits read right


def test_with_a_strip_reader_crops_are_swept_and_single_digits_still_cut(mnist_test: Digits) -> None:
    model = load_model_dir(DEFAULT_MODEL_DIR)
    strips = load_strip_reader({**SEED_PAIR, **random_strips()}, {"strip_layers": STRIP_LAYERS}, "v")
    assert strips is not None
    greys = images(mnist_test)
    found = read_images(greys, model, strips, THRESHOLD)
    assert isinstance(found[2], ImageError)
    singles = cut([greys[0], greys[3]])
    assert same(found[0], singles[0]) and same(found[3], singles[1])
    for i in (1, 4):  # a random strip reader is unsure of everything: cutting is asked too, as read_crop does
        assert same(found[i], read_crop(greys[i], strips, model, THRESHOLD))
    assert not any(same(found[i], reading) for i, reading in zip((1, 4), cut([greys[1], greys[4]]), strict=True))
