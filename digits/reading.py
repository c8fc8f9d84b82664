"""Reading decoded images as codes: a single digit or a row of them (a postal code).

Every piece of every image in a batch goes through one matrix product. A code's confidence is
the product of its digits' probabilities, the chance that the whole code is right if the
digits' errors are independent; below the review threshold it is flagged for a person.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from digits.images import Floats, normalise_with_box
from digits.pattern import Pattern
from digits.segment import Box, Segmentation, segment
from digits.theta import Model

DEFAULT_REVIEW_THRESHOLD = 0.9
SINGLE_ASPECT = 1.3  # an image at most this much wider than tall holds one digit (unless told otherwise)


@dataclass(frozen=True)
class Reading:
    code: str  # digits with separators, e.g. "12345-6789"
    probabilities: Floats  # (digits, 10)
    boxes: list[Box]
    confidence: float
    review: bool

    @property
    def digits(self) -> str:
        return "".join(c for c in self.code if c.isdigit())


def is_single(grey: Floats, expect: Pattern | None) -> bool:
    if expect is not None:
        return expect.digits == 1
    height, width = grey.shape
    return bool(width <= SINGLE_ASPECT * height)


def pieces(grey: Floats, model: Model, expect: Pattern | None = None) -> Segmentation:
    """The MNIST-style digit fields of one decoded image; ImageError if it holds none."""
    if is_single(grey, expect):
        field, box = normalise_with_box(grey)
        return Segmentation(field.reshape(1, -1), [box])
    return segment(grey, model.probabilities, expect)


def read(segmentations: list[Segmentation], model: Model, review_threshold: float,
         expect: Pattern | None = None) -> list[Reading]:
    """Classify the pieces of many images in one batch and assemble each image's code."""
    if not segmentations:
        return []
    probabilities = model.probabilities(np.concatenate([s.fields for s in segmentations]))
    readings = []
    start = 0
    for seg in segmentations:
        probs = probabilities[start:start + len(seg.boxes)]
        start += len(seg.boxes)
        digits = probs.argmax(axis=1)
        code = "".join(seg.separators.get(i, "") + str(d) for i, d in enumerate(digits))
        confidence = float(np.prod(probs.max(axis=1)))
        if expect is not None and len(digits) != expect.digits:
            confidence = 0.0  # the crop could not be cut into the expected number of digits
        readings.append(Reading(code, probs, seg.boxes, confidence, confidence < review_threshold))
    return readings
