"""Reading multi-digit crops (postal codes): segmentation, separators, refusals.

Crops come from trainer.synth with fixed seeds and are read with the bundled default
model through the worker's path (PNG bytes -> decode -> lattice_of -> read). Thresholds leave room
for the default model's own misreadings; each assertion fails if the behaviour it names breaks.
"""

from __future__ import annotations

import io
import time

import numpy as np
import numpy.typing as npt
import pytest
from PIL import Image

from digits.images import ImageError, decode
from digits.ink import Piece, clean
from digits.pattern import Pattern, parse_pattern
from digits.reading import Reading, lattice_of, lattices_of, read
from digits.registry import DEFAULT_MODEL_DIR
from digits.segment import Lattice, candidates, cut, cuts, lattice
from digits.theta import Model, load_dir
from tests.conftest import Digits
from trainer.synth import Crop, generate, png_bytes


@pytest.fixture(scope="module")
def model() -> Model:
    return Model(load_dir(DEFAULT_MODEL_DIR))


def read_one(data: bytes, model: Model, expect: Pattern | None = None) -> Reading:
    return read([lattice_of(decode(data), expect)], model, 0.9, expect)[0]


def crops(mnist_test: Digits, count: int, seed: int, **options: object) -> list[Crop]:
    images, labels = mnist_test
    return generate(count, images, labels, seed=seed, **options)  # type: ignore[arg-type]


def digits_right(reading: Reading, crop: Crop) -> int:
    truth = "".join(c for c in crop.code if c.isdigit())
    if len(reading.digits) != len(truth):
        return 0
    return sum(a == b for a, b in zip(reading.digits, truth, strict=True))


def test_touching_digits_are_split(model: Model, mnist_test: Digits) -> None:
    """Every adjacent pair touches: told to expect 5 digits, the reader cuts the touching blobs
    where the digits meet, so most digits read right (cutting anywhere else would misread them)."""
    batch = crops(mnist_test, 6, seed=11, touching=1.0, box_line=0.0)
    hinted = [read_one(png_bytes(c), model, parse_pattern("5")) for c in batch]
    assert all(len(r.digits) == 5 for r in hinted)
    assert sum(digits_right(r, c) for r, c in zip(hinted, batch, strict=True)) >= 0.8 * 5 * len(batch)


def break_strokes(crop: Crop) -> bytes:
    """The crop with a paper-coloured gap across the middle of every digit: each falls in two."""
    image = crop.image.copy()
    paper = int(np.median(image))
    for left, top, right, bottom in crop.boxes:
        middle = (top + bottom) // 2
        image[middle - 1:middle + 2, left:right] = paper
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, "PNG")
    return buffer.getvalue()


def test_broken_digits_are_joined(model: Model, mnist_test: Digits) -> None:
    """Digits cut in two by a gap are read as one digit each, not two."""
    batch = crops(mnist_test, 5, seed=12, touching=0.0, box_line=0.0)
    readings = [read_one(break_strokes(c), model) for c in batch]
    assert sum(len(r.digits) == 5 for r in readings) >= 4, [r.code for r in readings]
    assert sum(digits_right(r, c) for r, c in zip(readings, batch, strict=True)) >= 0.7 * 5 * len(batch)


def test_most_five_digit_codes_read_right(model: Model, mnist_test: Digits) -> None:
    """A guard on the whole reader, on crops like the acceptance set's (benchmarks.postal has the
    full figures): a change to the ink, the cuts, the scores or the model that costs many codes
    fails here. The default model reads 86 of these right."""
    batch = crops(mnist_test, 100, seed=16, formats=("5",))
    readings = read([lattice_of(decode(png_bytes(c))) for c in batch], model, 0.9)
    right = [r.code == c.code for r, c in zip(readings, batch, strict=True)]
    assert sum(right) >= 78, [(r.code, c.code) for r, c in zip(readings, batch, strict=True)]


def test_both_polarities_read_alike(model: Model, mnist_test: Digits) -> None:
    """Light ink on dark paper reads as dark ink on light paper does (same seed, same crops)."""
    dark = crops(mnist_test, 4, seed=13)
    light = crops(mnist_test, 4, seed=13, inverted=True)
    dark_codes = [read_one(png_bytes(c), model).code for c in dark]
    light_codes = [read_one(png_bytes(c), model).code for c in light]
    assert sum(a == b for a, b in zip(dark_codes, light_codes, strict=True)) >= 3
    light_readings = [read_one(png_bytes(c), model, parse_pattern("5")) for c in light]
    assert sum(digits_right(r, c) for r, c in zip(light_readings, light, strict=True)) >= 0.6 * 5 * len(light)


def test_zip_plus_four_hyphen_is_a_separator(model: Model, mnist_test: Digits) -> None:
    """A ZIP+4 reads as 9 digits with the separator after the fifth; the hyphen is never a digit."""
    batch = crops(mnist_test, 5, seed=14, formats=("5+4",), box_line=0.0, touching=0.0)
    readings = [read_one(png_bytes(c), model) for c in batch]
    nine = [r for r in readings if len(r.digits) == 9]
    assert len(nine) >= 4, [r.code for r in readings]
    assert sum(r.code[5] in "- " and len(r.code) == 10 for r in nine) >= 3, [r.code for r in nine]
    assert sum(r.code == c.code for r, c in zip(readings, batch, strict=True)) >= 2
    hinted = [read_one(png_bytes(c), model, parse_pattern("#####-####")) for c in batch]
    assert all(len(r.code) == 10 and r.code[5] == "-" and r.digits.isdigit() for r in hinted)


def test_a_hint_without_a_hyphen_keeps_a_flat_blob_as_ink() -> None:
    """Three rings (0s) with a short flat blob mid-height in a gap: without a hint the blob is a
    hyphen, set aside; with a hint that has no hyphen it stays ink, a candidate digit of its own."""
    grey = np.full((96, 300), 0.92, np.float32)
    for x in (40, 110, 230):
        ring(grey, (48, x), 22, 6)
    grey[45:52, 155:185] = 0.1  # the blob, between the second and third rings
    blob = (155, 45, 185, 52)
    assert lattice(clean(grey)).hyphens == [170.0]
    assert lattice_of(grey, parse_pattern("#-##")).hyphens == [170.0]  # the hint has one
    for hint in ("3", "###", "# ##"):
        lat = lattice_of(grey, parse_pattern(hint))
        assert lat.hyphens == []
        assert blob in lat.boxes


def test_blank_crop_has_no_digits(model: Model) -> None:
    rng = np.random.default_rng(0)
    paper = np.clip(225 + rng.normal(0, 3, (80, 400)), 0, 255).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(paper).save(buffer, "PNG")
    with pytest.raises(ImageError, match="no digits found"):
        read_one(buffer.getvalue(), model)


def test_image_over_the_pixel_limit_is_refused(mnist_test: Digits) -> None:
    crop = crops(mnist_test, 1, seed=15)[0]
    height, width = crop.image.shape
    with pytest.raises(ImageError, match=f"{width} x {height} = {width * height} pixels, over the limit of 1000"):
        decode(png_bytes(crop), max_pixels=1000)
    assert decode(png_bytes(crop), max_pixels=width * height).shape == (height, width)


def test_single_digit_is_a_code_of_length_one(model: Model, mnist_test: Digits) -> None:
    images, labels = mnist_test
    right = 0
    for index in range(10):
        digit = Image.fromarray(255 - images[index].reshape(28, 28)).resize((84, 84), Image.Resampling.BICUBIC)
        buffer = io.BytesIO()
        digit.save(buffer, "PNG")
        reading = read_one(buffer.getvalue(), model)
        assert len(reading.code) == 1 and len(reading.boxes) == 1 and reading.probabilities.shape == (1, 10)
        right += reading.code == str(labels[index])
    assert right >= 9


def test_a_batch_of_images_gives_each_its_own_lattice_or_error(mnist_test: Digits) -> None:
    """lattices_of, as a worker calls it on a batch: singles of two sizes (normalised together),
    crops and a blank image, each answer in its image's place and equal to lattice_of's."""
    images, _ = mnist_test
    small = [images[i].reshape(28, 28).astype(np.float32) / 255.0 for i in range(6)]
    large = [decode(png_bytes(c)) for c in crops(mnist_test, 2, seed=21)]
    scan = np.asarray(Image.fromarray(255 - images[6].reshape(28, 28)).resize((56, 56)), np.float32) / 255.0
    greys = [small[0], large[0], small[1], np.zeros((28, 28), np.float32), scan, small[2], large[1], *small[3:]]
    found = lattices_of(greys)
    assert len(found) == len(greys)
    for index, grey in enumerate(greys):
        if index == 3:
            assert isinstance(found[index], ImageError) and "blank" in str(found[index])
            continue
        alone, together = lattice_of(grey), found[index]
        assert isinstance(together, Lattice), index
        assert together.spans == alone.spans and together.boxes == alone.boxes, index
        assert np.array_equal(together.fields, alone.fields), index
    assert [len(f.spans) for f in found if isinstance(f, Lattice)][:2] == [1, len(lattice_of(large[0]).spans)]


def test_confidence_ranks_wrong_codes_lower(model: Model, mnist_test: Digits) -> None:
    """Codes read wrong are on average less confident than codes read right, and flagged more."""
    batch = crops(mnist_test, 48, seed=17)
    readings = read([lattice_of(decode(png_bytes(c))) for c in batch], model, 0.9)
    right = np.array([r.code == c.code for r, c in zip(readings, batch, strict=True)])
    confidence = np.array([r.confidence for r in readings])
    assert right.sum() >= 30 and (~right).sum() >= 3
    assert confidence[right].mean() > confidence[~right].mean()
    assert all(r.review == (r.confidence < 0.9) for r in readings)


def ring(image: np.ndarray, centre: tuple[float, float], radius: float, width: float) -> npt.NDArray[np.bool_]:
    """Draw a dark ring (a round 0) on a light float image; return where it is."""
    rows, cols = np.indices(image.shape)
    drawn: npt.NDArray[np.bool_] = np.abs(np.hypot(rows - centre[0], cols - centre[1]) - radius) < width / 2
    image[drawn] = 0.1
    return drawn


def test_touching_digits_are_cut_where_they_touch_and_separate_ones_are_not() -> None:
    """Two rings that touch (their strokes merge over a lens), one alone and a bar (a 1): each
    touching ring is a candidate of its own, give or take the lens; the lone ring is one too; a
    piece as narrow as a 1 is never cut."""
    grey = np.full((96, 300), 0.92, np.float32)
    first, second = ring(grey, (48, 40), 22, 6), ring(grey, (48, 84), 22, 6)
    lone = ring(grey, (48, 170), 22, 6)
    grey[25:72, 240:247] = 0.1
    found = cut(clean(grey))
    _, merged = candidates(found)

    def share(piece: Piece, drawn: npt.NDArray[np.bool_]) -> float:
        left, top, right, bottom = piece.box
        return float((drawn[top:bottom, left:right] & piece.mask).sum() / drawn.sum())

    for own, other in ((first, second), (second, first)):
        assert any(share(p, own) > 0.9 and share(p, other) < 0.1 for p in merged)
    assert any(share(p, lone) == 1.0 and p.area == lone.sum() for p in merged)
    assert [p.box for p in found.primitives if p.left > 220] == [(240, 25, 247, 72)]


def test_a_candidate_knows_the_paper_inside_it() -> None:
    """Two rings 8 pixels apart (each cut into pieces, as wide ink is): a candidate joining ink
    of both has those blank columns, over the digits' height; one within a ring has none."""
    grey = np.full((96, 300), 0.92, np.float32)
    ring(grey, (48, 60), 22, 6)
    ring(grey, (48, 118), 22, 6)  # ink in columns 36-84 and 94-142
    lat = lattice(clean(grey))
    assert lat.gaps is not None and len(lat.gaps) == len(lat.spans)
    across = [gap for (left, _, right, _), gap in zip(lat.boxes, lat.gaps, strict=True) if left < 85 and right > 94]
    within = [gap for (left, _, right, _), gap in zip(lat.boxes, lat.gaps, strict=True) if right <= 86 or left >= 93]
    assert across and all(0.1 < gap < 0.3 for gap in across)
    assert within and all(gap == 0 for gap in within)


def test_slanted_touching_digits_get_a_second_cut_and_the_lattice_holds_both(mnist_test: Digits) -> None:
    """Where touching digits give the two orders of proposing cuts (straight down from an
    outline's dip first, or winding cheapest paths first) different cuts, the lattice holds the
    candidates of both, one cut after the other; where they agree, one cut."""
    batch = crops(mnist_test, 12, seed=5, touching=1.0, box_line=0.0)
    counts = []
    for crop in batch:
        grey = decode(png_bytes(crop))
        found, lat = cuts(clean(grey)), lattice(clean(grey))
        counts.append(len(found))
        assert len(lat.starts) == len(found) and lat.starts[0] == 0
        assert lat.primitives == sum(len(f.primitives) for f in found)
        ends = [*lat.starts[1:], lat.primitives]
        for start, end in lat.spans:  # no candidate joins primitives of two cuts
            assert any(first <= start and end <= last for first, last in zip(lat.starts, ends, strict=True))
        assert len(lat.fields) == len(lat.spans) == len(lat.boxes)
    assert 2 in counts and set(counts) <= {1, 2}


def test_noise_crops_are_refused_before_the_costly_work() -> None:
    """A 300 x 100 crop of salt noise (1,081 specks) ran for over a minute in the joining of
    broken strokes, whose cost grows with the cube of the pieces: refused in well under a second."""
    salt = np.where(np.random.default_rng(0).random((100, 300)) < 0.05, 0.0, 1.0).astype(np.float32)
    started = time.perf_counter()
    with pytest.raises(ImageError, match=r"1081 separate pieces of ink, over the limit of 120"):
        lattice(clean(salt))
    assert time.perf_counter() - started < 5
