"""Labelled candidate digits for training: whose ink a candidate holds decides its label."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tests.conftest import Digits
from trainer.crops import JUNK, Candidates, build, judge, label_crop, with_candidates
from trainer.synth import generate


def test_judge_names_digits_no_digits_and_the_doubtful() -> None:
    ink = np.array([100.0, 100.0])  # two digits of 100 pixels each
    assert judge(np.array([98.0, 0.0]), 100.0, ink) == (0, True, False)  # digit 0, cleanly cut
    assert judge(np.array([0.0, 95.0]), 105.0, ink) == (1, True, False)  # digit 1 and a sliver of paper
    assert judge(np.array([50.0, 0.0]), 50.0, ink) == (0, False, True)  # half a digit
    assert judge(np.array([100.0, 60.0]), 160.0, ink) == (0, False, True)  # a digit and most of the next
    assert judge(np.array([80.0, 0.0]), 80.0, ink) == (0, False, False)  # most of a digit: left out
    small = np.array([100.0, 30.0])  # the second digit is small (a faint 1)
    assert judge(np.array([100.0, 25.0]), 125.0, small) == (0, False, False)  # a digit and most of it: left out


def test_a_clean_crop_gives_every_digit_and_some_no_digits(mnist_test: Digits) -> None:
    images, labels = mnist_test
    for crop in generate(4, images, labels, seed=21, touching=0.0, box_line=0.0):
        found = label_crop(crop)
        assert found.images.dtype == np.uint8 and found.images.shape == (len(found), 784)
        digits = {int(label) for label in found.labels if label != JUNK}
        assert digits == {int(c) for c in crop.code}, (crop.code, found.labels)
        assert (found.labels == JUNK).any() and found.labels.min() >= JUNK and found.labels.max() <= 9


def test_build_is_reproducible_whatever_the_processes(mnist_test: Digits) -> None:
    images, labels = mnist_test
    one = build(images, labels, 6, seed=2, workers=1)
    two = build(images, labels, 6, seed=2, workers=2)
    assert len(one) > 30 and (one.images == two.images).all() and (one.labels == two.labels).all()


def test_candidates_join_each_batch_with_their_targets() -> None:
    tf = pytest.importorskip("tensorflow")
    candidates = Candidates(np.full((4, 784), 255, np.uint8), np.array([3, JUNK, 3, JUNK], np.int8))
    mnist = tf.data.Dataset.from_tensors((np.zeros((2, 784), np.float32), np.eye(10, dtype=np.float32)[[1, 2]]))
    x, y = next(iter(with_candidates(mnist.repeat(), candidates, 2, seed=0)))
    assert x.shape == (4, 784) and y.shape == (4, 10)
    assert float(x[2:].numpy().max()) == 1.0 and float(x[:2].numpy().max()) == 0.0
    for target in y[2:].numpy():
        assert np.allclose(target, 0.1) or (target.max() == 1.0 and target.argmax() == 3)


def test_candidates_survive_a_save_and_load(tmp_path: Path) -> None:
    candidates = Candidates(np.arange(2 * 784, dtype=np.uint8).reshape(2, 784), np.array([7, JUNK], np.int8))
    candidates.save(tmp_path / "resume" / "candidates.npz")
    again = Candidates.load(tmp_path / "resume" / "candidates.npz")
    assert (again.images == candidates.images).all() and (again.labels == candidates.labels).all()
