"""Candidate digits cut from generated postal crops, labelled by the generator's ground truth.

The reader (digits.segment, digits.reading) cuts a crop into primitives and lets the model
read every run of them that could be a digit; the path whose digits read best wins. That works
when the model reads a well-cut digit confidently, even with a sliver of its neighbour, and
reads a wrong cut (half a digit, two digits, a stray stroke) as no digit in particular. Plain
MNIST teaches neither, so the trainer adds these candidates, cut by the reader's own code from
crops of MNIST *training* digits: a candidate that holds one digit's ink and little else is
that digit; one that holds a small part of a digit, or much of two, is "no digit" and is
trained towards equal probabilities (the theta contract keeps its 10 outputs). Candidates come
from the first of the reader's cuts of a crop (digits.segment.cut), as for the default model.
"""

from __future__ import annotations

import os
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from PIL import Image

from digits.arrays import Bytes, Mask
from digits.images import decode
from digits.ink import clean
from digits.segment import Cut, candidates, cut, fields
from trainer.synth import FORMATS, Crop, make_crop, png_bytes

JUNK = -1  # the label of a candidate that is no digit
OWN_SHARE = 0.75  # a digit: at least this share of the candidate's ink is that digit's ...
WHOLE_SHARE = 0.85  # ... it holds at least this share of the digit's ink ...
STRAY_SHARE = 0.2  # ... and at most this share of any other digit's
JUNK_OWN, JUNK_WHOLE = 0.65, 0.6  # no digit: less of its ink is one digit's, or it holds less of that digit
# Between the two, a candidate is left out: "a digit and a small part of another" looks like a
# digit, and calling it none would teach the model to doubt clean digits (and cost MNIST accuracy).
JUNK_KEPT = 0.15  # share of the no-digit candidates kept, about one for every two digits: a crop has six times
# more of them than digits, and each one pulls the model's MNIST accuracy down a little (docs/training.md)


@dataclass(frozen=True)
class Candidates:
    """Labelled candidate digits: 784 pixels as uint8 (0-255) and a digit 0-9 or JUNK."""

    images: Bytes
    labels: npt.NDArray[np.int8]

    def __len__(self) -> int:
        return len(self.labels)

    def save(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        np.savez_compressed(path, images=self.images, labels=self.labels)

    @classmethod
    def load(cls, path: Path) -> Candidates:
        with np.load(path) as saved:
            return cls(saved["images"], saved["labels"])


def digit_masks(crop: Crop, found: Cut) -> list[Mask]:
    """Each digit's own ink, as full masks at the reader's working size."""
    height, width = found.ink.shape
    masks = []
    for (left, top, right, bottom), mask in zip(crop.boxes, crop.masks, strict=True):
        full = np.zeros(crop.image.shape, dtype=np.float32)
        full[top:bottom, left:right] = mask
        resized = Image.fromarray(full, mode="F").resize((width, height), Image.Resampling.BILINEAR)
        masks.append(np.asarray(resized) > 0.25)  # a hairline stroke must not vanish
    return masks


def judge(shared: npt.NDArray[np.float64], area: float, digit_ink: npt.NDArray[np.float64]
          ) -> tuple[int, bool, bool]:
    """Whose ink a candidate mostly holds, and whether it is that digit, no digit, or neither
    for sure. shared: its pixels of each digit's ink; area: all its pixels; digit_ink: each
    digit's pixels in the whole crop."""
    k = int(shared.argmax())
    own, whole = shared[k] / max(area, 1.0), shared[k] / max(digit_ink[k], 1.0)
    fractions = shared / np.maximum(digit_ink, 1.0)
    stray = float(np.delete(fractions, k).max()) if len(fractions) > 1 else 0.0
    is_digit = own >= OWN_SHARE and whole >= WHOLE_SHARE and stray <= STRAY_SHARE
    is_junk = own < JUNK_OWN or whole < JUNK_WHOLE
    return k, is_digit, is_junk


def label_crop(crop: Crop) -> Candidates:
    """The reader's candidates for one crop, each labelled by whose ink it holds."""
    found = cut(clean(decode(png_bytes(crop))))
    masks = digit_masks(crop, found)
    owned = np.zeros((len(found.primitives), len(masks)))  # primitive x digit: shared pixels
    for p, primitive in enumerate(found.primitives):
        left, top, right, bottom = primitive.box
        for k, mask in enumerate(masks):
            owned[p, k] = (mask[top:bottom, left:right] & primitive.mask).sum()
    areas = np.array([p.area for p in found.primitives], dtype=np.float64)
    digit_ink = owned.sum(axis=0)
    truth = [int(c) for c in crop.code if c.isdigit()]
    spans, _ = candidates(found)
    kept, labels = [], []
    for start, end in spans:
        k, is_digit, is_junk = judge(owned[start:end].sum(axis=0), areas[start:end].sum(), digit_ink)
        if is_digit or is_junk:
            kept.append((start, end))
            labels.append(truth[k] if is_digit else JUNK)
    images = np.round(255 * fields(found, kept)).astype(np.uint8) if kept else np.zeros((0, 784), np.uint8)
    return Candidates(images, np.array(labels, dtype=np.int8))


_DIGITS: tuple[Bytes, Bytes] = (np.zeros((0, 784), np.uint8), np.zeros(0, np.uint8))  # set in each process


def _share(images: Bytes, labels: Bytes) -> None:
    global _DIGITS
    _DIGITS = images, labels


def _chunk(args: tuple[int, int]) -> Candidates:
    count, seed = args
    images, labels = _DIGITS
    rng = np.random.default_rng(seed)
    formats = sorted(FORMATS)
    parts = [label_crop(make_crop(rng, images, labels, formats[int(rng.integers(len(formats)))],
                                  inverted=bool(rng.random() < 0.1)))
             for _ in range(count)]
    found = Candidates(np.concatenate([p.images for p in parts]), np.concatenate([p.labels for p in parts]))
    kept = (found.labels != JUNK) | (rng.random(len(found)) < JUNK_KEPT)
    return Candidates(found.images[kept], found.labels[kept])


def build(images: Bytes, labels: Bytes, crops: int, seed: int, workers: int | None = None) -> Candidates:
    """Labelled candidates from `crops` generated crops (all formats) of the given digits, in
    parallel; the same arguments give the same candidates whatever the number of workers."""
    chunk = 250
    jobs = [(min(chunk, crops - start), seed * 1_000_003 + start // chunk) for start in range(0, crops, chunk)]
    with ProcessPoolExecutor(max_workers=workers or os.cpu_count() or 1, initializer=_share,
                             initargs=(images, labels)) as pool:
        parts = list(pool.map(_chunk, jobs))
    return Candidates(np.concatenate([p.images for p in parts]), np.concatenate([p.labels for p in parts]))


def with_candidates(batches: Any, candidates: Candidates, batch_size: int, seed: int) -> Any:
    """Each MNIST batch (x, one-hot y) joined by `batch_size` candidates: digits with one-hot
    targets, no-digits with equal probabilities for every class."""
    import tensorflow as tf

    targets = np.full((len(candidates), 10), 0.1, dtype=np.float32)
    digits = candidates.labels >= 0
    targets[digits] = np.eye(10, dtype=np.float32)[candidates.labels[digits]]
    def scaled(images: Any, y: Any) -> tuple[Any, Any]:
        return tf.cast(images, tf.float32) / 255.0, y

    def join(mnist: tuple[Any, Any], cut: tuple[Any, Any]) -> tuple[Any, Any]:
        return tf.concat([mnist[0], cut[0]], axis=0), tf.concat([mnist[1], cut[1]], axis=0)

    plain = tf.autograph.experimental.do_not_convert  # plain tensor code: nothing for AutoGraph to rewrite
    pieces = (tf.data.Dataset.from_tensor_slices((candidates.images, targets))
              .shuffle(len(candidates), seed=seed + 1, reshuffle_each_iteration=True)
              .repeat().batch(batch_size, drop_remainder=True).map(plain(scaled)))
    return tf.data.Dataset.zip((batches, pieces)).map(plain(join)).prefetch(2)
