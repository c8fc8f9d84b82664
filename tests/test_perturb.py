"""Perturbed test digits: each perturbation does what its name says, to every image at once."""

from __future__ import annotations

import numpy as np
import pytest

from digits.registry import DEFAULT_MODEL_DIR
from digits.theta import Model, load_dir
from tests.conftest import Digits
from trainer.perturb import PERTURBATIONS, off_centre, robustness, scale, slant, thicker, thinner


def ink(images: np.ndarray) -> float:
    return float(images.astype(np.float64).sum())


def centre_of_mass(images: np.ndarray) -> np.ndarray:
    grid = images.reshape(-1, 28, 28).astype(np.float64)
    ys, xs = np.mgrid[0:28, 0:28]
    mass = grid.sum(axis=(1, 2))
    return np.stack([(grid * xs).sum(axis=(1, 2)) / mass, (grid * ys).sum(axis=(1, 2)) / mass], axis=1)


def test_each_perturbation_keeps_shape_and_changes_the_digits(mnist_test: Digits) -> None:
    images = mnist_test[0][:100]
    for name, perturb in PERTURBATIONS.items():
        out = perturb(images)
        assert out.shape == images.shape and out.dtype == np.uint8, name
        assert (name == "none") == np.array_equal(out, images), name


def test_strokes_scale_and_placement_move_the_ink_as_named(mnist_test: Digits) -> None:
    images = mnist_test[0][:100]
    assert ink(thicker(images)) > 1.5 * ink(images) > 1.5 * 1.5 * ink(thinner(images))
    assert ink(scale(1.2)(images)) > ink(images) > ink(scale(0.8)(images))
    shifts = np.linalg.norm(centre_of_mass(off_centre(images)) - centre_of_mass(images), axis=1)
    assert shifts.mean() == pytest.approx(4.0, abs=0.5)
    assert np.array_equal(slant(0)(images), images) and np.array_equal(scale(1.0)(images), images)


def test_robustness_table_names_every_perturbation(mnist_test: Digits) -> None:
    model = Model(load_dir(DEFAULT_MODEL_DIR))
    table = robustness({"default": model}, mnist_test[0][:500], mnist_test[1][:500])
    assert set(table) == set(PERTURBATIONS)
    assert table["none"]["default"] > 0.95 and table["noise (sigma 0.2)"]["default"] < table["none"]["default"] + 0.01
