"""The strip reader (digits/sweep.py): its layers chain or are refused naming the file and the
layer, its forward pass is the Keras model it was exported from, and its best path reads the
frames as CTC writes them."""

from __future__ import annotations

import copy
import itertools
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import redis

from digits.manifest import ManifestError, model_files
from digits.pattern import parse_pattern
from digits.registry import DEFAULT_MODEL_DIR, Registry
from digits.strip import MARGIN, STRIP_HEIGHT, Strip
from digits.sweep import (
    ALPHABET,
    BLANK,
    Frames,
    best_path,
    labelling_probability,
    load_strip_reader,
    most_probable,
    read_strip,
)
from digits.theta import ThetaError, to_csv
from tests.conftest import (
    SEED_PAIR,
    STRIP_LAYERS,
    Digits,
    random_strips,
    replace_layer,
    reshape_file,
    set_cell,
    strips_manifest,
)


def frames(path: str, sure: float = 0.9) -> np.ndarray[Any, np.dtype[np.float32]]:
    """Log-probabilities of frames that each say one symbol ('_' is the blank) this surely."""
    rest = (1.0 - sure) / BLANK
    probabilities = np.full((len(path), BLANK + 1), rest, dtype=np.float32)
    for t, symbol in enumerate(path):
        probabilities[t, BLANK if symbol == "_" else ALPHABET.index(symbol)] = sure
    return np.log(probabilities)


def text(symbols: list[tuple[int, int]]) -> str:
    return "".join(ALPHABET[symbol] for symbol, _ in symbols)


def test_the_best_path_merges_repeats_and_drops_blanks() -> None:
    found = best_path(frames("_11_1__2233-_4"))
    assert text(found) == "1123-4"
    assert [t for _, t in found] == [1, 4, 7, 9, 11, 13]  # each symbol at the first frame of its run (all as sure)


def test_a_count_finds_the_best_path_of_that_many_digits_hyphens_not_counted() -> None:
    log_probabilities = frames("_1_2_3-4___")
    log_probabilities[7] = np.log(np.full(BLANK + 1, 0.1 / BLANK))
    log_probabilities[7, 4], log_probabilities[7, BLANK] = np.log(0.6), np.log(0.3)  # a less sure 4
    log_probabilities[9] = np.log(np.full(BLANK + 1, 0.3 / BLANK))
    log_probabilities[9, BLANK], log_probabilities[9, 5] = np.log(0.6), np.log(0.1)  # a doubtful 5 under a blank
    assert text(best_path(log_probabilities)) == "123-4"
    assert text(best_path(log_probabilities, digits=5)) == "123-45"  # the doubtful 5 is the fifth digit
    assert text(best_path(log_probabilities, digits=3)) == "123-"  # the least sure digit left out
    assert best_path(frames("_1_2_"), digits=6) == []  # five frames cannot hold six digits


def test_frames_are_centred_where_their_window_is() -> None:
    reader = load_strip_reader({**SEED_PAIR, **random_strips()}, {"strip_layers": STRIP_LAYERS}, "v")
    assert reader is not None
    found = reader.frames(np.zeros((STRIP_HEIGHT, 100), dtype=np.float32))
    assert found.log_probabilities.shape == (100 // 4 - 6, BLANK + 1)
    np.testing.assert_allclose(np.exp(found.log_probabilities).sum(axis=1), 1.0, rtol=1e-5)
    np.testing.assert_allclose(found.centres, 13.5 + 4 * np.arange(100 // 4 - 6))


def test_a_strip_is_read_at_every_phase_of_its_frame_grid() -> None:
    """A frame every 4 columns: four phases read in one pass, the strip moved right by 0 to 3
    blank columns, each phase's frames centred on the columns of the strip as given."""
    reader = load_strip_reader({**SEED_PAIR, **random_strips()}, {"strip_layers": STRIP_LAYERS}, "v")
    assert reader is not None
    pixels = np.random.default_rng(3).random((STRIP_HEIGHT, 100)).astype(np.float32)
    phases = reader.phases(pixels)
    assert len(phases) == 4
    for shift, phase in enumerate(phases):  # each copy 103 columns wide: the strip and 3 blank ones
        moved = reader.frames(np.pad(pixels, ((0, 0), (shift, 3 - shift))))
        np.testing.assert_allclose(np.exp(phase.log_probabilities), np.exp(moved.log_probabilities), atol=1e-6)
        np.testing.assert_allclose(phase.centres, moved.centres - shift)
    assert phases[0].centres[0] == 13.5 and phases[1].centres[0] == 12.5


def test_the_code_kept_is_the_most_probable_over_the_phases(monkeypatch: pytest.MonkeyPatch) -> None:
    """One phase drops the 3 that three phases read: the code kept is 123, its confidence the
    mean of its probability over the four phases, read from the first phase that wrote it."""
    reader = load_strip_reader({**SEED_PAIR, **random_strips()}, {"strip_layers": STRIP_LAYERS}, "v")
    assert reader is not None
    centres = 13.5 + 4.0 * np.arange(6, dtype=np.float64)
    said = [frames("_1_2__", 0.8), *(frames("_1_2_3", 0.8) for _ in range(3))]
    monkeypatch.setattr(reader, "phases", lambda _pixels: [Frames(f, centres - i) for i, f in enumerate(said)])
    strip = Strip(np.zeros((STRIP_HEIGHT, 40), np.float32), left=0.0, step=1.0, top=0, bottom=28)
    reading = read_strip(strip, reader, 0.9)
    assert reading.code == "123"
    assert reading.confidence == pytest.approx(np.mean([labelling_probability(f, [1, 2, 3]) for f in said]))
    assert reading.confidence > np.mean([labelling_probability(f, [1, 2]) for f in said])
    assert read_strip(strip, reader, 0.9, parse_pattern("##")).code == "12"  # two digits asked: the best two


def test_a_frame_every_two_columns_from_a_2x1_pool_and_a_7x13_window() -> None:
    """The manifest's [height, width] windows: the second pool halves the height only, so the
    frames come every 2 strip columns, each centred where its 13-column window is. The window
    spans 64 channels, as the trainer's does: a file of 5,825 rows."""
    layers = copy.deepcopy(STRIP_LAYERS)
    layers[3]["size"], layers[4]["kernel"] = [2, 1], [7, 13]
    rng = np.random.default_rng(1)
    files = {**random_strips(), "strip2.csv": to_csv(rng.normal(size=(37, 64))),
             "strip3.csv": to_csv(rng.normal(scale=0.1, size=(7 * 13 * 64 + 1, 16)))}
    reader = load_strip_reader({**SEED_PAIR, **files}, {"strip_layers": layers}, "v")
    assert reader is not None and reader.architecture == "strip:conv3x4-pool2-conv3x64-pool2x1-conv7x13x16-conv1x12"
    found = reader.frames(np.zeros((STRIP_HEIGHT, 100), dtype=np.float32))
    assert found.log_probabilities.shape == (100 // 2 - 12, BLANK + 1)
    np.testing.assert_allclose(found.centres, 12.5 + 2 * np.arange(100 // 2 - 12))


def test_a_strip_narrower_than_one_digit_is_read_not_refused() -> None:
    """A wide crop holding one thin stroke makes a strip narrower than the layers need: it is
    widened with blank columns, read, and its frames still start at the strip's left."""
    from digits.ink import clean
    from digits.strip import strip_of
    from digits.sweep import NOMINAL_WIDTH

    reader = load_strip_reader({**SEED_PAIR, **random_strips()}, {"strip_layers": STRIP_LAYERS}, "v")
    assert reader is not None
    grey = np.ones((60, 200), np.float32)
    grey[10:50, 99:102] = 0.0
    strip = strip_of(clean(grey))
    assert strip.pixels.shape[1] < NOMINAL_WIDTH
    found = reader.frames(strip.pixels)
    assert len(found.log_probabilities) == NOMINAL_WIDTH // 4 - 6 and found.centres[0] == 13.5
    read_strip(strip, reader, 0.9)


def dense_layer(layers: list[dict[str, Any]], _files: dict[str, bytes]) -> None:
    layers[4] = {"op": "dense", "file": "strip3.csv", "activation": "relu"}


BAD_STRIPS: list[tuple[str, Any, type[Exception], str]] = [
    ("a dense layer", dense_layer, ManifestError, r"strip_layers\[5\] is dense"),
    ("softmax before the end", replace_layer(2, activation="softmax"), ManifestError,
     r"strip_layers\[3\]: softmax is the last layer's activation"),
    ("ends without softmax", replace_layer(5, activation="linear"), ManifestError,
     r"strip_layers\[6\]: softmax is the last layer's activation"),
    ("unknown operation", replace_layer(1, op="avgpool"), ManifestError, r"strip_layers\[2\]: unknown operation"),
    ("rows do not chain", reshape_file("strip2.csv", 30, 8), ThetaError,
     r"v/strip2\.csv, layer 3 \(conv\): 30 rows, but a 3x3 convolution of 4 channel\(s\) needs 36"),
    ("the height is not read whole", replace_layer(4, padding="same"), ThetaError,
     r"v/strip4\.csv, strip layer 6: 7 row\(s\) of 12 channels, a strip reader must end in one row of 12"),
    ("not the alphabet and a blank", reshape_file("strip4.csv", 17, 10), ThetaError,
     r"v/strip4\.csv, strip layer 6: 1 row\(s\) of 10 channels"),
    ("a non-finite value", set_cell("strip2.csv", 3, 1, b"nan"), ThetaError,
     r"v/strip2\.csv: row 4, column 2: nan is not a finite"),
    ("a digit model's file", replace_layer(0, file="theta1.csv"), ManifestError,
     r"strip_layers name a file the digit model's layers name too"),
    ("a window wider than the limit", replace_layer(4, kernel=[7, 16]), ManifestError,
     r"strip_layers\[5\]: kernel \[7, 16\] is not a whole number from 1 to 15 or a \[height, width\] pair"),
]


@pytest.mark.parametrize(("case", "damage", "error", "message"), BAD_STRIPS, ids=[c[0] for c in BAD_STRIPS])
def test_a_malformed_strip_layer_is_refused_naming_the_file_and_the_layer(
        case: str, damage: Any, error: type[Exception], message: str, connection: redis.Redis) -> None:
    """Refused where a version is published, so that no worker is ever handed it half-loaded."""
    files, layers = random_strips(), copy.deepcopy(STRIP_LAYERS)
    damage(layers, files)
    manifest = strips_manifest(SEED_PAIR, random_strips(), "v")
    manifest["strip_layers"] = layers
    manifest["files"].update({name: {"sha256": "0" * 64} for name in files})
    with pytest.raises(error, match=message):
        model_files(manifest, "v/manifest.json")  # the manifest's own checks
        load_strip_reader({**SEED_PAIR, **files}, manifest, "v")  # the files' against the layers
    with pytest.raises(Exception, match=message.replace("v/", "")):
        Registry(connection).publish({**SEED_PAIR, **files}, manifest)
    assert Registry(connection).versions() == []


def test_a_strip_version_is_published_exported_and_imported_unchanged(connection: redis.Redis,
                                                                       tmp_path: Path) -> None:
    registry = Registry(connection)
    manifest = strips_manifest(SEED_PAIR, random_strips(), "strips-1")
    registry.publish({**SEED_PAIR, **random_strips()}, manifest)
    readers = registry.load("strips-1")
    assert readers.strips is not None and readers.strips.architecture.startswith("strip:conv3x4-pool2")
    exported = registry.export("strips-1", tmp_path / "export")
    assert sorted(p.name for p in exported.glob("*.csv")) == ["strip1.csv", "strip2.csv", "strip3.csv", "strip4.csv",
                                                              "theta1.csv", "theta2.csv"]
    manifest_text = (exported / "manifest.json").read_text().replace("strips-1", "strips-2")
    (exported / "manifest.json").write_text(manifest_text)
    assert registry.publish_dir(exported) == "strips-2"
    assert registry.manifest("strips-2")["model_sha256"] == manifest["model_sha256"]


@pytest.mark.parametrize("frame_step", [4, 2])
def test_the_numpy_forward_pass_is_the_keras_model_it_was_exported_from(mnist_test: Digits, frame_step: int) -> None:
    """A strip reader trained for a moment by the trainer's own code (TensorFlow), exported to
    CSVs: NumPy's frames equal Keras' softmax within 1e-5 on strips of several widths, with a
    frame every 4 columns and every 2 (a 2x1 pool and a 7x13 window)."""
    import tensorflow as tf

    from trainer.strips import StripRecipe, generate_strips, train_strips, whole_codes
    from trainer.train import export_layers

    images, labels = mnist_test
    strips = generate_strips(images, labels, 96, seed=5)
    recipe = StripRecipe(crops=96, epochs=1, channels=(4, 8, 8, 16), seed=1, workers=1, frame_step=frame_step)
    net, history, best_epoch = train_strips(strips[:64], strips[64:], recipe, report=lambda _line: None)
    assert best_epoch == 1 and len(history["loss"]) == 1
    files, layers = export_layers(net)
    reader = load_strip_reader({**SEED_PAIR, **files}, {"strip_layers": [layer.as_json() for layer in layers]}, "k")
    assert reader is not None and reader.frame_step == frame_step
    for pixels, _code in strips[64:72]:
        strip = pixels.astype(np.float32) / 255.0
        want = tf.nn.softmax(net(strip[None, :, :, None])[0, 0]).numpy()
        np.testing.assert_allclose(np.exp(reader.frames(strip).log_probabilities), want, atol=1e-5)
    # The trainer scores an epoch by the codes workers would read (every phase): half of these
    # strips labelled with what NumPy reads at its phases, half with a code it does not read.
    # One width for all (blank columns on the right), so the trainer's batch is these strips.
    width = -(-max(pixels.shape[1] for pixels, _ in strips[64:80]) // 4) * 4
    held = [np.pad(pixels, ((0, 0), (0, width - pixels.shape[1]))) for pixels, _ in strips[64:80]]
    written = ["".join(ALPHABET[symbol] for symbol, _ in
                       most_probable(reader.phases(pixels.astype(np.float32) / 255.0), None)[2]) for pixels in held]
    labelled = [(pixels, code if i % 2 == 0 else code + "0") for i, (pixels, code) in enumerate(zip(held, written,
                                                                                                  strict=True))]
    assert whole_codes(net, labelled, frame_step) == pytest.approx(0.5)


def test_a_training_batch_is_bent_afresh_each_epoch_and_keeps_its_ink(mnist_test: Digits) -> None:
    """The strip trainer's distortion: the same seed bends a batch the same way, another seed
    otherwise; values stay in [0, 1] and each strip keeps most of its ink (moved, not lost)."""
    from trainer.strips import batches, distort_strips, generate_strips

    images, labels = mnist_test
    x, _group = next(batches(generate_strips(images, labels, 32, seed=5), None))
    bent = distort_strips(x, np.random.default_rng(3))
    assert bent.shape == x.shape and bent.dtype == np.float32
    assert bent.min() >= 0.0 and bent.max() <= 1.0
    np.testing.assert_array_equal(bent, distort_strips(x, np.random.default_rng(3)))
    assert np.abs(bent - distort_strips(x, np.random.default_rng(4))).mean() > 0.01
    before, after = x.sum(axis=(1, 2, 3)), bent.sum(axis=(1, 2, 3))
    assert np.all((after > 0.6 * before) & (after < 1.8 * before))


def test_a_codes_probability_sums_every_path_that_writes_it() -> None:
    """labelling_probability against brute force: every frame-by-frame path over a small alphabet,
    kept where merging repeats and dropping blanks writes the code (repeated symbols need a blank
    between them)."""
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(6, BLANK + 1))
    log_probabilities = (logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))).astype(np.float32)
    symbols = [1, 3, BLANK]  # a path through any other symbol writes it, so only these paths can count
    for code in ([1, 3], [3], [1, 1], [3, 1, 3]):
        want = 0.0
        for path in itertools.product(symbols, repeat=len(log_probabilities)):
            merged = [s for i, s in enumerate(path) if s != BLANK and (i == 0 or path[i - 1] != s)]
            if merged == code:
                want += float(np.exp(sum(log_probabilities[t, s] for t, s in enumerate(path))))
        assert labelling_probability(log_probabilities, code) == pytest.approx(want, rel=1e-5)


def test_a_reading_puts_each_digit_where_its_frame_is(monkeypatch: pytest.MonkeyPatch) -> None:
    """Digits' boxes follow their frames back into the crop, left to right without overlapping;
    a hyphen after the fifth of nine digits is kept, a hint's separators are written; the
    confidence is the code's probability over all its alignments to the frames."""
    reader = load_strip_reader({**SEED_PAIR, **random_strips()}, {"strip_layers": STRIP_LAYERS}, "v")
    assert reader is not None
    path = "_1_2_3_4_5_-_6_7_8_9_"
    centres = 13.5 + 4.0 * np.arange(len(path), dtype=np.float64)
    monkeypatch.setattr(reader, "phases", lambda _pixels: [Frames(frames(path), centres)])
    strip = Strip(np.zeros((STRIP_HEIGHT, 4 * (len(path) + 6)), np.float32), left=100.0, step=2.0, top=10, bottom=50)
    reading = read_strip(strip, reader, review_threshold=0.9)
    assert reading.code == "12345-6789" and reading.digits == "123456789"
    written = [ALPHABET.index(symbol) for symbol in "12345-6789"]
    assert reading.confidence == pytest.approx(labelling_probability(frames(path), written)) and reading.review
    assert 0.9 ** len(path) < reading.confidence < 0.9 ** 9  # every alignment of the code, each frame counted
    assert reading.probabilities.shape == (9, 10) and reading.probabilities[0].argmax() == 1
    first_centre = strip.crop_column(centres[1])
    assert first_centre == 100.0 + (centres[1] - MARGIN) * 2.0
    assert reading.boxes[0][0] < first_centre < reading.boxes[0][2]
    assert all(box[1] == 10 and box[3] == 50 for box in reading.boxes)
    assert all(a[2] <= b[0] for a, b in zip(reading.boxes, reading.boxes[1:], strict=False))
    assert read_strip(strip, reader, 0.9, parse_pattern("##### ####")).code == "12345 6789"
    assert read_strip(strip, reader, 0.1).review is False


def test_a_zip4_written_with_a_space_is_read_with_it(monkeypatch: pytest.MonkeyPatch) -> None:
    """Digits' boxes hold to their ink, so the blank columns after a ZIP+4's fifth digit make its
    space, as in cutting; evenly spaced digits get none."""
    reader = load_strip_reader({**SEED_PAIR, **random_strips()}, {"strip_layers": STRIP_LAYERS}, "v")
    assert reader is not None
    for path, code in (("_1_2_3_4_5___6_7_8_9_", "12345 6789"), ("_1_2_3_4_5_6_7_8_9_", "123456789")):
        centres = 13.5 + 4.0 * np.arange(len(path), dtype=np.float64)
        monkeypatch.setattr(reader, "phases", lambda _pixels, p=path, c=centres: [Frames(frames(p), c)])
        pixels = np.zeros((STRIP_HEIGHT, 4 * len(path) + 24), np.float32)
        for t, symbol in enumerate(path):
            if symbol != "_":
                pixels[4:24, round(centres[t]) - 1:round(centres[t]) + 2] = 1.0  # a stroke 3 columns wide
        strip = Strip(pixels, left=100.0, step=2.0, top=10, bottom=50)
        reading = read_strip(strip, reader, review_threshold=0.9)
        assert reading.code == code
        assert all(box[2] - box[0] <= 8 for box in reading.boxes)  # 3 strip columns of ink, 2 crop columns each


def test_a_strip_reader_costlier_than_the_limit_is_refused_before_any_crop() -> None:
    layers = [{"op": "conv", "file": "s1.csv", "kernel": 7, "stride": 1, "padding": "same", "activation": "relu"},
              {"op": "conv", "file": "s2.csv", "kernel": 7, "stride": 1, "padding": "same", "activation": "relu"},
              {"op": "maxpool", "size": 2}, {"op": "maxpool", "size": 2},
              {"op": "conv", "file": "s3.csv", "kernel": 7, "stride": 1, "padding": "valid", "activation": "softmax"}]
    files = {"s1.csv": to_csv(np.zeros((50, 32))), "s2.csv": to_csv(np.zeros((7 * 7 * 32 + 1, 64))),
             "s3.csv": to_csv(np.zeros((7 * 7 * 64 + 1, 12)))}
    with pytest.raises(ThetaError, match=r"^v: \d+ multiply-adds per strip column \(its 4 phases together\), "
                                         r"over the limit of 2000000"):
        load_strip_reader(files, {"strip_layers": layers}, "v")


def test_an_unsure_code_is_read_by_cutting_too_and_a_disagreement_marks_it(
        monkeypatch: pytest.MonkeyPatch, mnist_test: Digits) -> None:
    """Below CHECK_BELOW the crop is also cut and read by the digit model: the same code keeps its
    confidence; where they differ, the surer reading is kept, its confidence cut by DISAGREED,
    and it goes to review; a sure code is not read twice."""
    from digits.network import load_model_dir
    from digits.reading import lattice_of, read
    from digits.sweep import CHECK_BELOW, DISAGREED, read_crop
    from trainer.synth import generate

    images, labels = mnist_test
    crop = generate(1, images, labels, seed=21)[0]
    grey = crop.image.astype(np.float32) / 255.0
    model = load_model_dir(DEFAULT_MODEL_DIR)
    cut_code = read([lattice_of(grey)], model, 0.9)[0].code
    reader = load_strip_reader({**SEED_PAIR, **random_strips()}, {"strip_layers": STRIP_LAYERS}, "v")
    assert reader is not None

    def saying(code: str, confidence: float) -> float:
        """The strip reader reads `code`, its frames about as sure as makes `confidence`; the exact confidence."""
        path = "_" + "_".join(code) + "_"
        said = frames(path, confidence ** (1 / len(path)))
        monkeypatch.setattr(reader, "phases", lambda pixels: [Frames(
            said, 13.5 + 4.0 * np.arange(len(path), dtype=np.float64))])
        return labelling_probability(said, [ALPHABET.index(symbol) for symbol in code])

    agreed_confidence = saying(cut_code, 0.8)
    agreed = read_crop(grey, reader, model, 0.5)
    assert agreed.code == cut_code and agreed.confidence == pytest.approx(agreed_confidence) and not agreed.review
    cut_confidence = read([lattice_of(grey)], model, 0.9)[0].confidence
    other = cut_code[:-1] + str((int(cut_code[-1]) + 1) % 10)
    for wanted in (0.5 * cut_confidence, min(CHECK_BELOW - 0.01, 1.1 * cut_confidence)):
        strip_confidence = saying(other, wanted)
        assert strip_confidence < CHECK_BELOW
        disagreed = read_crop(grey, reader, model, 0.5)
        surer = max(strip_confidence, cut_confidence)
        assert disagreed.code == (cut_code if cut_confidence > strip_confidence else other)  # the surer reading
        assert disagreed.confidence == pytest.approx(surer * DISAGREED, rel=1e-3) and disagreed.review
    unchecked = read_crop(grey, reader, model, 0.5, check_below=strip_confidence)  # as sure as asked: not cut
    assert unchecked.code == other and unchecked.confidence == pytest.approx(strip_confidence)
    assert saying(other, CHECK_BELOW + 0.005) >= CHECK_BELOW
    assert read_crop(grey, reader, model, 0.5).confidence >= CHECK_BELOW  # sure: not read by cutting
