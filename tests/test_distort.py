"""Training distortions: whole batches at once, seeded, and the identity when switched off."""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from tests.conftest import Digits
from trainer.distort import Distortion, distort, distorted_batches, restroke


def test_distortion_is_seeded_and_changes_every_image(mnist_test: Digits) -> None:
    images = tf.constant(mnist_test[0][:64].astype(np.float32) / 255.0)
    first = distort(images, tf.random.Generator.from_seed(3), Distortion()).numpy()
    again = distort(images, tf.random.Generator.from_seed(3), Distortion()).numpy()
    assert first.shape == (64, 784) and np.array_equal(first, again)
    changed = np.abs(first - images.numpy()).sum(axis=1)
    assert (changed > 1.0).all()
    assert 0.5 < first.sum() / images.numpy().sum() < 1.5  # bent, not erased or smeared over the frame


def test_no_distortion_is_the_identity(mnist_test: Digits) -> None:
    images = tf.constant(mnist_test[0][:8].astype(np.float32) / 255.0)
    still = Distortion(alpha=0.0, rotate_degrees=0.0, scale=0.0, shear=0.0)
    out = distort(images, tf.random.Generator.from_seed(0), still).numpy()
    assert np.allclose(out, images.numpy(), atol=1e-5)


def test_batches_are_distorted_afresh_each_time(mnist_test: Digits) -> None:
    """A 32-image set in batches of 32: each batch is the same images, bent a new way."""
    x = mnist_test[0][:32].astype(np.float32) / 255.0
    y = np.eye(10, dtype=np.float32)[mnist_test[1][:32]]
    batches = iter(distorted_batches(x, y, 32, seed=0, d=Distortion()))
    (a, labels_a), (b, labels_b) = next(batches), next(batches)
    assert a.shape == (32, 784)
    digits = sorted(mnist_test[1][:32])
    assert sorted(labels_a.numpy().argmax(axis=1)) == sorted(labels_b.numpy().argmax(axis=1)) == digits
    assert abs(float(a.numpy().sum()) - float(b.numpy().sum())) > 1.0


def test_restroke_makes_pens_bolder_or_finer(mnist_test: Digits) -> None:
    grid = tf.constant(mnist_test[0][:64].astype(np.float32).reshape(-1, 28, 28) / 255.0)
    ink = grid.numpy().sum(axis=(1, 2))
    bolder = restroke(grid, tf.fill([64, 1, 1, 1], 1.0)).numpy()
    finer = restroke(grid, tf.fill([64, 1, 1, 1], -1.0)).numpy()
    assert np.allclose(restroke(grid, tf.zeros([64, 1, 1, 1])).numpy(), grid.numpy())
    assert (bolder.sum(axis=(1, 2)) > 1.3 * ink).all()
    assert (finer.sum(axis=(1, 2)) < 0.7 * ink).all()
    assert bolder.max() <= 1.0 and finer.min() >= 0.0


def test_stroke_distortion_varies_the_pen_per_image(mnist_test: Digits) -> None:
    images = tf.constant(mnist_test[0][:64].astype(np.float32) / 255.0)
    pens = Distortion(alpha=0.0, rotate_degrees=0.0, scale=0.0, shear=0.0, stroke=1.0)
    out = distort(images, tf.random.Generator.from_seed(5), pens).numpy()
    ratio = out.sum(axis=1) / images.numpy().sum(axis=1)
    assert (ratio > 1.1).sum() >= 10 and (ratio < 0.9).sum() >= 10  # some bolder, some finer
