"""Which reader reads a decoded image: one place, for the worker and for the benchmarks that
measure what it does.

A crop is read by the model version's strip reader where it has one (one pass across the crop,
digits/sweep.py); a single digit, and every image of a version without a strip reader, is cut
into a lattice of candidate digits that the digit model reads (digits/reading.py), the
candidates of all those images in one product.
"""

from __future__ import annotations

from digits.arrays import Floats
from digits.images import ImageError
from digits.network import Recogniser
from digits.pattern import Pattern
from digits.reading import Reading, is_single, lattices_of, read
from digits.segment import Lattice
from digits.sweep import StripReader, read_crop


def read_images(greys: list[Floats], model: Recogniser, strips: StripReader | None, review_threshold: float,
                expect: Pattern | None = None) -> list[Reading | ImageError]:
    """Each decoded image's reading, or the ImageError that says why it holds no code, in order."""
    found: dict[int, Reading | ImageError] = {}
    cut: list[int] = []  # the images read by cutting
    for index, grey in enumerate(greys):
        if strips is None or is_single(grey, expect):
            cut.append(index)
            continue
        try:
            found[index] = read_crop(grey, strips, model, review_threshold, expect)
        except ImageError as exc:
            found[index] = exc
    lattices: list[Lattice] = []
    latticed: list[int] = []
    for index, lattice in zip(cut, lattices_of([greys[i] for i in cut], expect), strict=True):
        if isinstance(lattice, ImageError):
            found[index] = lattice
        else:
            lattices.append(lattice)
            latticed.append(index)
    found.update(zip(latticed, read(lattices, model, review_threshold, expect), strict=True))
    return [found[index] for index in range(len(greys))]
