"""Choosing a code from a lattice of candidate digits: the best path, the count hint, noise left
out, separators. Hand-made lattices, so each expectation is worked out by hand."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from digits.images import viewed
from digits.pattern import parse_pattern
from digits.reading import (
    CLOSER_BELOW,
    CLOSER_VIEWS,
    GAP_PENALTY,
    SHRUNK,
    SKIP_SCORE,
    SURE_FIRST_LOOK,
    assemble,
    best_path,
    candidate_scores,
    classify,
    looks,
    place_separators,
)
from digits.segment import Lattice
from digits.theta import BLOCK_ROWS, Model, pack


def lattice(spans: list[tuple[int, int]], primitives: int, optional: frozenset[int] = frozenset(),
            hyphens: list[float] | None = None) -> Lattice:
    boxes = [(10 * start, 0, 10 * end - 2, 20) for start, end in spans]
    widths, heights = np.full(len(spans), 0.5, np.float32), np.ones(len(spans), np.float32)
    return Lattice(np.zeros((len(spans), 784), np.float32), spans, boxes, widths, heights, primitives, hyphens or [],
                   optional)


def test_the_path_with_the_best_total_wins() -> None:
    # Three primitives: read as one digit, as 1 + 2, or as 1 + 1 + 1.
    lat = lattice([(0, 3), (0, 1), (1, 3), (1, 2), (2, 3)], 3)
    assert best_path(lat, np.log([0.9, 0.99, 0.99, 0.3, 0.3]), None) == [1, 2]
    assert best_path(lat, np.log([0.99, 0.5, 0.5, 0.5, 0.5]), None) == [0]
    assert best_path(lat, np.log([0.99, 0.5, 0.5, 0.6, 0.6]), 3) == [1, 3, 4]  # told three digits


def test_a_path_keeps_to_one_cut() -> None:
    """Two cuts of one crop: primitives 0-1 (a digit cut in two) and 2 (the same ink whole).
    The path reads one cut or the other, never a mixture, and the better one wins."""
    spans = [(0, 1), (1, 2), (0, 2), (2, 3)]
    lat = Lattice(np.zeros((4, 784), np.float32), spans, [(0, 0, 9, 20)] * 4, np.full(4, 0.5, np.float32),
                  np.ones(4, np.float32), 3, starts=(0, 2))
    assert best_path(lat, np.log([0.9, 0.9, 0.5, 0.7]), None) == [0, 1]  # 0.81 > 0.7
    assert best_path(lat, np.log([0.9, 0.9, 0.5, 0.95]), None) == [3]
    assert best_path(lat, np.log([0.9, 0.9, 0.5, 0.95]), 2) == [0, 1]  # only the first cut has two digits
    assert best_path(lat, np.log([0.9, 0.9, 0.5, 0.95]), 3) is None


def test_paper_inside_a_candidate_costs_it_the_path() -> None:
    """A 3 and a thin 1 beside it, a gap between: joined, they read as a sure 3 hardly wider
    than one digit; the blank columns inside make the two digits win."""
    spans = [(0, 1), (1, 2), (0, 2)]
    probabilities = np.full((3, 10), 0.001, np.float32)
    probabilities[0, 3], probabilities[1, 1], probabilities[2, 3] = 0.97, 0.97, 0.99
    joined = Lattice(np.zeros((3, 784), np.float32), spans, [(0, 0, 9, 20)] * 3, np.full(3, 0.8, np.float32),
                     np.ones(3, np.float32), 2)
    assert best_path(joined, candidate_scores(joined, probabilities), None) == [2]  # no gaps known: one 3
    apart = replace(joined, gaps=np.array([0.0, 0.0, 0.15], np.float32))
    scores = candidate_scores(apart, probabilities)
    assert scores[2] == pytest.approx(np.log(0.99) - GAP_PENALTY * 0.15)
    assert best_path(apart, scores, None) == [0, 1]


def test_an_impossible_count_gives_none() -> None:
    lat = lattice([(0, 1), (1, 2)], 2)
    assert best_path(lat, np.zeros(2), 3) is None
    assert best_path(lat, np.zeros(2), 2) == [0, 1]


def test_optional_noise_is_left_out_only_when_that_reads_better() -> None:
    # Primitive 1 is a speck: it may join digit 0, stand as a digit of its own, or be left out.
    lat = lattice([(0, 1), (0, 2), (1, 2), (2, 3)], 3, optional=frozenset({1}))
    speck_as_no_digit = np.log([0.99, 0.2, 0.1, 0.99])
    assert best_path(lat, speck_as_no_digit, None) == [0, 3]  # left out: SKIP_SCORE beats log 0.2
    assert np.log(0.2) < SKIP_SCORE
    speck_belongs = np.log([0.99, 0.98, 0.1, 0.99])
    assert best_path(lat, speck_belongs, None) == [1, 3]


def test_every_primitive_is_covered_once() -> None:
    rng = np.random.default_rng(0)
    spans = [(s, e) for s in range(6) for e in range(s + 1, min(s + 3, 6) + 1)]
    lat = lattice(spans, 6)
    for _ in range(50):
        path = best_path(lat, np.log(rng.uniform(0.05, 1.0, len(spans))), None)
        assert path is not None
        covered = [p for index in path for p in range(*spans[index])]
        assert covered == list(range(6))


def test_classify_keeps_every_candidate_in_order_across_blocks() -> None:
    """Candidates go to the model a block of lattices at a time; the probabilities still come
    back one row per candidate, in lattice order, as one product over all of them gives."""
    rng = np.random.default_rng(4)
    model = Model(pack(rng.normal(size=8), rng.normal(size=(784, 8)), rng.normal(size=10), rng.normal(size=(8, 10))))
    lattices = []
    for count in (700, 1, 500, 30, BLOCK_ROWS + 3, 2):
        lat = lattice([(i, i + 1) for i in range(count)], count)
        lattices.append(Lattice(rng.uniform(size=(count, 784)).astype(np.float32), lat.spans, lat.boxes,
                                lat.widths, lat.heights, count))
    expected = looks(np.concatenate([lat.fields for lat in lattices]), model.probabilities, (SHRUNK,))
    # blocks of other sizes round the last bits differently, hence a tolerance
    np.testing.assert_allclose(classify(lattices, model.probabilities), expected, rtol=0, atol=1e-5)


def test_two_looks_average_the_field_and_its_shrunk_copy() -> None:
    rng = np.random.default_rng(5)
    model = Model(pack(rng.normal(size=8), rng.normal(size=(784, 8)), rng.normal(size=10), rng.normal(size=(8, 10))))
    fields = rng.uniform(size=(6, 784)).astype(np.float32)
    two = looks(fields, model.probabilities, (SHRUNK,))
    as_they_are, shrunk = model.probabilities(fields), model.probabilities(viewed(fields, SHRUNK))
    np.testing.assert_allclose(two, (as_they_are + shrunk) / 2, rtol=0, atol=1e-6)
    assert not np.allclose(two, as_they_are, atol=1e-3)  # the second look does change the reading
    np.testing.assert_allclose(two.sum(axis=1), 1.0, atol=1e-5)


def test_a_lone_digit_read_surely_at_first_keeps_its_first_look() -> None:
    """Of two lone digits, the one read surely at first (SURE_FIRST_LOOK) keeps that reading and
    the unsure one gets the mean of both looks; a crop's candidates always get both, sure or not."""
    rng = np.random.default_rng(8)
    model = Model(pack(rng.normal(size=8), rng.normal(size=(784, 8)), rng.normal(size=10),
                       8 * rng.normal(size=(8, 10))))
    pool = rng.uniform(size=(400, 784)).astype(np.float32)
    first = model.probabilities(pool)
    sure, unsure = pool[first.max(axis=1) >= SURE_FIRST_LOOK][:3], pool[first.max(axis=1) < 0.9][:1]
    assert len(sure) == 3 and len(unsure) == 1
    lone_sure, lone_unsure = (replace(lattice([(0, 1)], 1), fields=f[np.newaxis]) for f in (sure[0], unsure[0]))
    crop = replace(lattice([(0, 1), (1, 2)], 2), fields=sure[1:])  # two sure candidates of a crop
    found = classify([lone_sure, crop, lone_unsure], model.probabilities)
    as_seen = np.concatenate([sure[:1], sure[1:], unsure])
    both = looks(as_seen, model.probabilities, (SHRUNK,))
    np.testing.assert_allclose(found[0], model.probabilities(sure[:1])[0], rtol=0, atol=1e-6)
    np.testing.assert_allclose(found[1:], both[1:], rtol=0, atol=1e-6)
    assert not np.allclose(found[0], both[0], atol=1e-7)  # the second look would have moved it


def test_only_doubtful_chosen_digits_get_a_closer_look() -> None:
    """Of a path's two digits, the sure one keeps its probabilities; the doubtful one's become
    the mean over twelve looks, which decide its digit and the code's confidence."""
    rng = np.random.default_rng(6)
    model = Model(pack(rng.normal(size=8), rng.normal(size=(784, 8)), rng.normal(size=10), rng.normal(size=(8, 10))))
    spans = [(0, 1), (1, 2), (0, 2)]
    lat = lattice(spans, 2)
    lat = Lattice(rng.uniform(size=(3, 784)).astype(np.float32), spans, lat.boxes, lat.widths, lat.heights, 2)
    probabilities = np.full((3, 10), 0.01, np.float32)
    probabilities[0, 7], probabilities[1, 3], probabilities[2, 1] = 0.95, CLOSER_BELOW - 0.05, 0.5
    seen: list[int] = []

    def classifier(fields: np.ndarray) -> np.ndarray:
        seen.append(len(fields))
        return model.probabilities(fields)

    reading = assemble([lat], probabilities, classifier, review_threshold=0.5)[0]
    closer = looks(lat.fields[1:2], model.probabilities, (SHRUNK, *CLOSER_VIEWS))
    assert seen == [2 + len(CLOSER_VIEWS)]  # the doubtful digit alone, in every view, in one call
    np.testing.assert_array_equal(reading.probabilities[0], probabilities[0])
    np.testing.assert_allclose(reading.probabilities[1], closer[0], atol=1e-6)
    assert reading.code == "7" + str(int(closer.argmax()))
    assert reading.confidence == np.float32(0.95) * closer.max()


def never_called(fields: np.ndarray) -> np.ndarray:
    raise AssertionError("every chosen digit is sure: no closer look")


def test_assemble_reads_codes_with_hyphen_and_confidence() -> None:
    lat = lattice([(0, 1), (1, 2), (0, 2)], 2, hyphens=[9.0])
    probabilities = np.full((3, 10), 0.01, np.float32)
    probabilities[0, 4], probabilities[1, 2], probabilities[2, 8] = 0.91, 0.91, 0.5
    reading = assemble([lat], probabilities, never_called, review_threshold=0.9)[0]
    assert reading.code == "42" and reading.digits == "42"  # without a hint, a hyphen only in a ZIP+4
    assert assemble([lat], probabilities, never_called, 0.9, parse_pattern("#-#"))[0].code == "4-2"
    assert reading.confidence == np.float32(0.91) ** 2 and reading.review  # 0.83 < 0.9
    assert reading.boxes == [lat.boxes[0], lat.boxes[1]]
    hinted = assemble([lat], probabilities, never_called, 0.5, parse_pattern("3"))[0]
    assert hinted.confidence == 0.0 and hinted.review  # could not be cut into three digits


def test_a_single_digit_is_read_as_itself_whatever_its_score_or_the_hint() -> None:
    single = lattice([(0, 1)], 1)
    unsure = np.full((1, 10), 0.1, np.float32)  # scores far below a skip, but nothing can be skipped

    def closer_look(fields: np.ndarray) -> np.ndarray:  # every view of the doubtful digit reads a sure 7
        probabilities = np.full((len(fields), 10), 0.01, np.float32)
        probabilities[:, 7] = 0.91
        return probabilities

    reading = assemble([single], unsure, closer_look, 0.9)[0]
    assert reading.code == "7" and reading.boxes == single.boxes  # read, and its doubt looked at closer
    hinted = assemble([single], unsure, closer_look, 0.5, parse_pattern("5"))[0]
    assert hinted.digits == "7" and hinted.confidence == 0.0 and hinted.review  # not the 5 digits asked for
    speck = lattice([(0, 1)], 1, optional=frozenset({0}))  # a lone optional primitive is still searched
    assert assemble([speck], unsure, closer_look, 0.9)[0].code == ""


def test_separators_follow_the_pattern_or_the_page() -> None:
    boxes = [(0, 0, 8, 20), (10, 0, 18, 20), (20, 0, 28, 20), (60, 0, 68, 20), (70, 0, 78, 20)]
    assert place_separators(boxes, [], None) == {}  # a wide gap in five digits: uneven writing
    assert place_separators(boxes, [44.0], None) == {}  # a hyphen in five digits: a digit's loose stroke
    zip4 = [(20 * i + shift, 0, 20 * i + 16 + shift, 20) for i, shift in enumerate([0] * 5 + [30] * 4)]
    assert place_separators(zip4, [], None) == {5: " "}  # a ZIP+4 written with a space
    assert place_separators(zip4, [113.0], None) == {5: "-"}  # ... or a hyphen
    assert place_separators(zip4, [50.0], None) == {5: " "}  # a stroke elsewhere is no separator
    even = [(20 * i, 0, 20 * i + 16, 20) for i in range(9)]
    assert place_separators(even, [], None) == {}  # nine digits evenly spaced
    assert place_separators(boxes, [], parse_pattern("##-###")) == {2: "-"}
    assert parse_pattern("##-###").hyphenated and parse_pattern("#####-####").hyphenated
    assert not any(parse_pattern(hint).hyphenated for hint in ("5", "#####", "### ###"))
