"""Reading decoded images as codes: a single digit or a row of them (a postal code).

Every candidate digit of every image in a batch goes through one matrix product. Each image's
code is then the path through its lattice (digits.segment) whose digits read best: the sum of
their log-probabilities, so that a wrong cut (half a digit, two digits as one) loses to the
right one, because the model reads such pieces as no digit in particular. A code's confidence
is the product of its digits' probabilities, the chance that the whole code is right if the
digits' errors are independent; below the review threshold it is flagged for a person.

The model reads every candidate twice, as normalised and shrunk a little (SHRUNK), and its
probabilities are the mean of the two readings: two looks at a digit err less than one.
Measured on crops of MNIST validation digits, whole codes read right went from 80.8% to 83.8%
(85.4% to 87.4% with the hint); on MNIST test digits from 99.32% to 99.43%. It costs a second
pass of the hidden layer, a few per cent of a crop's time (docs/postal.md). An image of one
digit (a form's box, an MNIST digit) gets its second look only when the first is unsure (below
SURE_FIRST_LOOK): on MNIST validation digits, 80% are read surer than that, and sparing them
the second look changed no answer and no unflagged error (docs/benchmarks.md); it is most of
the time an MNIST digit spends being classified. A crop's candidates always get both looks: there the
mean sets the scores that choose the cut.

Once the path is chosen, a digit on it read less surely than CLOSER_BELOW gets a closer look:
ten more views (CLOSER_VIEWS: turned, scaled, sheared, moved by a pixel), and its probabilities
become the mean of all twelve. It re-decides doubtful digits and makes their probabilities
rank errors better, where the cut is already made (on every candidate, more looks would also
sway the choice of cut, and cost five times as much). On crops of validation digits with the
hint, whole codes 89.7% -> 90.5% and the error at 10% rejected 5.78% -> 5.22%; on MNIST test
digits 99.43% -> 99.57% (docs/benchmarks.md has the commands).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from digits.arrays import Box, Floats
from digits.images import ImageError, View, normalise_many, viewed
from digits.ink import clean
from digits.network import Recogniser
from digits.pattern import Pattern
from digits.segment import Lattice, lattice

DIGIT_BONUS = 0.0  # score per digit read (these weights: tuned on crops of validation digits, docs/postal.md)
WIDE_FROM, WIDE_PENALTY = 0.9, 1.0  # candidates wider than this (x the digits' height) pay this per height
SHORT_FROM, SHORT_PENALTY = 0.6, 2.0  # ... and shorter than this, this per height
GAP_PENALTY = 2.0  # ... and this per height of blank columns inside it (two digits side by side)
SKIP_SCORE = -1.5  # log-score of leaving an optional primitive out (a digit read as no digit scores about -2.3)
SINGLE_ASPECT = 1.3  # an image at most this much wider than tall holds one digit (unless told otherwise)
ZIP4, ZIP4_SPACE = (5, 4), 1.5  # without a hint, a space is read only in a ZIP+4 (place_separators)
SHRUNK = View(scale=0.9)  # the second look at every candidate ...
SURE_FIRST_LOOK = 0.99  # ... but a lone digit's first look this sure is its reading (chosen on validation digits)
CLOSER_BELOW = 0.9  # a chosen digit read less surely than this gets a closer look ...
CLOSER_VIEWS = (View(turn=10), View(turn=-10), View(scale=0.8), View(scale=1.1), View(shear=0.2), View(shear=-0.2),
                View(right=1), View(right=-1), View(down=1), View(down=-1))  # ... in these views too

Classifier = Callable[[Floats], Floats]  # (n, 784) fields -> (n, 10) probabilities: a model's, or Keras's


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


def lattice_of(grey: Floats, expect: Pattern | None = None) -> Lattice:
    """The candidate digits of one decoded image; ImageError if it holds none. A hint without a
    hyphen (`5`, `#####`, `### ###`) means no blob is a hyphen: its ink stays with the digits."""
    found = lattices_of([grey], expect)[0]
    if isinstance(found, ImageError):
        raise found
    return found


def lattices_of(greys: list[Floats], expect: Pattern | None = None) -> list[Lattice | ImageError]:
    """`lattice_of` for many decoded images, each one's ImageError in its place; single digits of
    one size are normalised together (digits.images.normalise_many)."""
    found: dict[int, Lattice | ImageError] = {}
    singles: dict[tuple[int, ...], list[int]] = {}
    for index, grey in enumerate(greys):
        if is_single(grey, expect):
            singles.setdefault(grey.shape, []).append(index)
            continue
        try:
            found[index] = lattice(clean(grey), find_hyphens=finds_hyphens(expect))
        except ImageError as exc:
            found[index] = exc
    for indices in singles.values():
        for index, normalised in zip(indices, normalise_many(np.stack([greys[i] for i in indices])), strict=True):
            found[index] = normalised if isinstance(normalised, ImageError) else single_lattice(*normalised)
    return [found[index] for index in range(len(greys))]


def finds_hyphens(expect: Pattern | None) -> bool:
    """Whether cutting sets flat mid-band blobs aside as hyphens: not for a hint without one."""
    return expect is None or expect.hyphenated


def single_lattice(field: Floats, box: Box) -> Lattice:
    """The lattice of an image that holds one digit: one candidate, the whole image's ink."""
    left, top, right, bottom = box
    width = np.array([(right - left) / (bottom - top)], dtype=np.float32)
    return Lattice(field.reshape(1, -1), [(0, 1)], [box], width, np.ones(1, np.float32), 1)


def read(lattices: list[Lattice], model: Recogniser, review_threshold: float,
         expect: Pattern | None = None) -> list[Reading]:
    """Classify the candidates of many images in one batch and read each image's best code."""
    if not lattices:
        return []
    return assemble(lattices, classify(lattices, model.probabilities), model.probabilities, review_threshold, expect)


def classify(lattices: list[Lattice], classifier: Classifier, sure_first: float = SURE_FIRST_LOOK) -> Floats:
    """The probabilities of every candidate of every image, in lattice order: the mean of its two
    looks, as cut and SHRUNK, all in one product (the model multiplies BLOCK_ROWS rows at a time;
    the worker bounds how many images it holds). A lone digit whose first look is at least
    `sure_first` keeps it; the unsure ones get their second look in a second product."""
    fields = np.concatenate([lat.fields for lat in lattices])
    lone = np.concatenate([np.full(len(lat.spans), is_one_digit(lat)) for lat in lattices])
    both = np.flatnonzero(~lone)
    seen = np.asarray(classifier(np.concatenate([fields, viewed(fields[both], SHRUNK)])), dtype=np.float32)
    probabilities = seen[:len(fields)]
    probabilities[both] = (probabilities[both] + seen[len(fields):]) / 2
    unsure = np.flatnonzero(lone & (probabilities.max(axis=1) < sure_first))
    if len(unsure):
        probabilities[unsure] = (probabilities[unsure] + classifier(viewed(fields[unsure], SHRUNK))) / 2
    return probabilities


def looks(fields: Floats, classifier: Classifier, views: tuple[View, ...]) -> Floats:
    """The mean of the classifier's probabilities for the fields as they are and in each view,
    classified in one call: a closer look at a few doubtful digits is 11 views of them, and one
    call reads the model's weights once instead of 11 times."""
    seen = classifier(np.concatenate([fields, *(viewed(fields, view) for view in views)]))
    by_view = np.asarray(seen, dtype=np.float32).reshape(1 + len(views), len(fields), -1)
    return np.asarray(by_view.sum(axis=0) / (1 + len(views)), dtype=np.float32)


def assemble(lattices: list[Lattice], probabilities: Floats, classifier: Classifier, review_threshold: float,
             expect: Pattern | None = None) -> list[Reading]:
    """Each image's best code, given the probabilities of all its candidates (in lattice order);
    its doubtful digits looked at closer by the classifier, all images' at once."""
    if not lattices:
        return []
    paths, rows = [], []  # each image's path; each chosen digit's row in `probabilities`
    start = 0
    for lat in lattices:
        path = [0] if is_one_digit(lat) else choose_path(lat, probabilities[start:start + len(lat.spans)], expect)
        paths.append(path)
        rows += [start + i for i in path]
        start += len(lat.spans)
    digits = probabilities[rows]
    doubtful = np.flatnonzero(digits.max(axis=1) < CLOSER_BELOW)
    if len(doubtful):
        owners = [(lat, i) for lat, path in zip(lattices, paths, strict=True) for i in path]
        fields = np.stack([owners[d][0].fields[owners[d][1]] for d in doubtful])
        digits[doubtful] = looks(fields, classifier, (SHRUNK, *CLOSER_VIEWS))
    classes, sure = digits.argmax(axis=1).tolist(), digits.max(axis=1)  # once for the batch, not per image
    readings = []
    first = 0
    for lat, path in zip(lattices, paths, strict=True):
        last = first + len(path)
        boxes = [lat.boxes[i] for i in path]
        separators = place_separators(boxes, lat.hyphens, expect)
        code = "".join(separators.get(i, "") + str(d) for i, d in enumerate(classes[first:last]))
        confidence = float(sure[first] if len(path) == 1 else np.prod(sure[first:last]))
        if expect is not None and len(path) != expect.digits:
            confidence = 0.0  # the crop could not be cut into the expected number of digits
        readings.append(Reading(code, digits[first:last], boxes, confidence, confidence < review_threshold))
        first = last
    return readings


def is_one_digit(lat: Lattice) -> bool:
    """A lattice of one candidate on one primitive that cannot be left out (a single digit): its
    only path is that candidate, whatever its score or the hint, so scoring and searching (about
    20 µs, as much as classifying an MNIST digit) are skipped."""
    return len(lat.spans) == 1 and lat.primitives == 1 and not lat.optional


def choose_path(lat: Lattice, probabilities: Floats, expect: Pattern | None) -> list[int]:
    """The candidates of the image's best code: of the expected count when given and possible."""
    scores = candidate_scores(lat, probabilities)
    path = best_path(lat, scores, expect.digits if expect else None)
    if path is None:  # no cut gives the expected count: read the best code of any length
        path = best_path(lat, scores, None)
    assert path is not None
    return path


def candidate_scores(lat: Lattice, probabilities: Floats) -> npt.NDArray[np.float64]:
    """How well each candidate reads as one digit: the log of its most likely class's
    probability, plus DIGIT_BONUS, minus WIDE_PENALTY per digit height of width beyond WIDE_FROM,
    SHORT_PENALTY per digit height it falls short of SHORT_FROM and GAP_PENALTY per digit height
    of blank columns inside it (normalising a candidate to 20 pixels hides that it is as wide as
    two digits, a fragment of one, or two with paper between them: a thin 1 beside a 3 reads as a
    sure 3 and adds little width). The gap term, on crops of validation digits: whole codes
    87.7% -> 88.4% (90.5% -> 90.8% with the hint), mixed formats 85.6% -> 86.3% (docs/benchmarks.md)."""
    wide = np.maximum(lat.widths.astype(np.float64) - WIDE_FROM, 0.0)
    short = np.maximum(SHORT_FROM - lat.heights.astype(np.float64), 0.0)
    blank = np.zeros(len(lat.spans)) if lat.gaps is None else lat.gaps.astype(np.float64)
    likely = np.log(probabilities.max(axis=1).astype(np.float64) + 1e-12)
    return np.asarray(likely + DIGIT_BONUS - WIDE_PENALTY * wide - SHORT_PENALTY * short - GAP_PENALTY * blank,
                      dtype=np.float64)


def best_path(lat: Lattice, scores: npt.NDArray[np.floating], count: int | None) -> list[int] | None:
    """The candidates, left to right, that cover every primitive of one of the lattice's cuts once
    (optional ones may be left out) with the highest total score; exactly `count` of them when
    given (None if impossible)."""
    ends = [*lat.starts[1:], lat.primitives]
    found = [chain_path(lat, scores, count, first, last) for first, last in zip(lat.starts, ends, strict=True)]
    best = max(found, key=lambda score_and_path: score_and_path[0])
    return best[1] if np.isfinite(best[0]) else None


def chain_path(lat: Lattice, scores: npt.NDArray[np.floating], count: int | None, first: int, last: int
               ) -> tuple[float, list[int]]:
    """best_path within one cut, primitives [first, last): its total score (-inf if impossible) and path."""
    most = last - first if count is None else count
    best = np.full((last - first + 1, most + 1), -np.inf)  # [end, n]: the cut's primitives before end as n digits
    best[0, 0] = 0.0
    came: dict[tuple[int, int], int] = {}  # (end, n) -> the last candidate, or -1: primitive end - 1 left out
    ending: dict[int, list[int]] = {}
    for index, (start, end) in enumerate(lat.spans):
        if first <= start and end <= last:
            ending.setdefault(end - first, []).append(index)
    for end in range(1, last - first + 1):
        if first + end - 1 in lat.optional:
            best[end] = best[end - 1] + SKIP_SCORE
            came.update(((end, n), -1) for n in range(most + 1))
        for index in ending.get(end, []):
            totals = best[lat.spans[index][0] - first, :-1] + scores[index]
            better = totals > best[end, 1:]
            best[end, 1:][better] = totals[better]
            came.update(((end, int(n) + 1), index) for n in np.flatnonzero(better))
    n = int(np.argmax(best[-1])) if count is None else count
    total = float(best[-1, n])
    if not np.isfinite(total):
        return total, []
    path, end = [], last - first
    while end > 0:
        index = came[end, n]
        if index < 0:
            end -= 1
        else:
            path.append(index)
            end, n = lat.spans[index][0] - first, n - 1
    return total, path[::-1]


def place_separators(boxes: list[Box], hyphens: list[float], expect: Pattern | None) -> dict[int, str]:
    """Separators by the pattern when given; without one, only those of a ZIP+4 (nine digits,
    after the fifth): a hyphen standing there, else a space where that gap is the widest and
    ZIP4_SPACE times the others' usual gap. Elsewhere a wide gap is only uneven writing and a
    hyphen most likely a digit's loose stroke (a 4's bar, a 5's flag): a rule on gaps alone wrote
    spaces that were not there and missed half of those that were (on mixed crops of validation
    digits, whole codes read right went from 81.6% to 83.3% with this rule), and hyphens written
    wherever they stood were wrong in 13 of 2,000 five-digit crops of validation digits (whole
    codes 87.3% -> 87.7%, mixed formats 85.1% -> 85.6% without them; docs/benchmarks.md). Other
    formats with separators need the hint, e.g. '##-###'."""
    if expect is not None:
        positions = np.cumsum(expect.groups)[:-1]
        return {int(p): expect.separator for p in positions if p < len(boxes)}
    if len(boxes) != ZIP4[0] + ZIP4[1]:
        return {}
    if any(sum(1 for box in boxes if (box[0] + box[2]) / 2 < centre_x) == ZIP4[0] for centre_x in hyphens):
        return {ZIP4[0]: "-"}
    gaps = np.array([boxes[i + 1][0] - boxes[i][2] for i in range(len(boxes) - 1)])
    between = ZIP4[0] - 1  # the gap after the fifth digit
    usual = max(float(np.median(np.delete(gaps, between))), 1.0)
    if gaps[between] == gaps.max() and gaps[between] > ZIP4_SPACE * usual:
        return {ZIP4[0]: " "}
    return {}
