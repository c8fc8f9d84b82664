"""trainer.calibrate: a strip reader's temperature, chosen on strips and folded into its last layer."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import redis

from digits.strip import STRIP_HEIGHT
from digits.sweep import best_path, load_strip_reader
from digits.theta import parse_theta, to_csv
from tests.conftest import SEED_PAIR, STRIP_LAYERS, random_strips
from tests.test_sweep import frames as sure_frames
from trainer.calibrate import TEMPERATURES, choose_temperature, code_loss, cooled


def test_an_overconfident_reader_is_cooled_and_an_honest_one_is_not() -> None:
    """Frames 99.9% sure of their symbols: where a third of the codes they say are wrong, a
    temperature above 1 explains the truth best; where every code is right, the sharpest does."""
    said = ["_1_2_3_", "_4_5_6_", "_7_8_9_"]
    frames = [sure_frames(path, 0.999)[None] for path in said]  # one phase each
    right = [[1, 2, 3], [4, 5, 6], [7, 8, 9]]
    one_wrong = [[1, 2, 3], [4, 5, 6], [7, 8, 0]]
    losses = {t: code_loss(frames, one_wrong, t) for t in TEMPERATURES}
    assert min(losses, key=lambda t: losses[t]) > 1.0
    assert code_loss(frames, right, 0.5) < code_loss(frames, right, 1.0) < code_loss(frames, right, 2.0)


def test_the_cooled_last_layer_divides_the_logits_and_keeps_every_code() -> None:
    """Dividing the last layer's file by T gives each frame the softmax of its logits over T, in
    the theta format; the best path, and so the code, is the same."""
    files = {**SEED_PAIR, **random_strips()}
    manifest = {"strip_layers": STRIP_LAYERS}
    reader = load_strip_reader(files, manifest, "v")
    cooler = load_strip_reader({**files, "strip4.csv": cooled(files["strip4.csv"], 2.0, "strip4.csv")}, manifest, "v")
    assert reader is not None and cooler is not None
    assert np.allclose(parse_theta(cooled(files["strip4.csv"], 2.0, "s"), "s"),
                       parse_theta(files["strip4.csv"], "s") / 2.0)
    assert cooled(to_csv(np.ones((2, 3))), 4.0, "s") == to_csv(np.full((2, 3), 0.25))
    pixels = np.random.default_rng(1).random((STRIP_HEIGHT, 140)).astype(np.float32)
    hot, cool = reader.frames(pixels).log_probabilities, cooler.frames(pixels).log_probabilities
    expected = hot.astype(np.float64) / 2.0
    expected -= np.logaddexp.reduce(expected, axis=1, keepdims=True)
    assert np.allclose(cool, expected, atol=1e-4)
    assert best_path(hot) == best_path(cool)


def test_a_temperature_is_chosen_from_the_readers_own_frames() -> None:
    """choose_temperature reads each strip with the reader and returns the least loss it tried."""
    reader = load_strip_reader({**SEED_PAIR, **random_strips()}, {"strip_layers": STRIP_LAYERS}, "v")
    assert reader is not None
    rng = np.random.default_rng(2)
    strips = [(rng.random((STRIP_HEIGHT, 100)).astype(np.float32), [1, 2]) for _ in range(3)]
    chosen, losses = choose_temperature(reader, strips)
    assert set(losses) == set(TEMPERATURES) and losses[chosen] == min(losses.values())


def test_digits_trainer_calibrate_publishes_a_cooled_version(redis_url: str, connection: redis.Redis,
                                                             tmp_path: Path) -> None:
    """`digits-trainer calibrate DIR` chooses a temperature on validation crops, divides the last
    strip layer by it, keeps every other file, and publishes a new version with the temperature
    in its metrics; a version without a strip reader is refused, naming its manifest."""
    from digits.registry import Registry, write_dir
    from tests.conftest import strips_manifest
    from tests.test_trainer import trainer

    strip_files = random_strips()
    manifest = strips_manifest(SEED_PAIR, strip_files, "v")
    manifest.setdefault("hyperparameters", {})["strips"] = {"validation_crops": 100, "seed": 0}  # as trained: 1,000
    write_dir(tmp_path / "v", {**SEED_PAIR, **strip_files}, manifest, {})
    done = trainer(redis_url, "calibrate", str(tmp_path / "v"), "--out", str(tmp_path / "cooled"))
    assert done.returncode == 0, done.stderr
    version = done.stdout.strip().splitlines()[-1]
    published = Registry(connection).manifest(version)
    temperature = published["metrics"]["strips"]["temperature"]
    assert temperature in TEMPERATURES and version != "v" and published["strip_layers"] == STRIP_LAYERS
    cooled_files = {p.name: p.read_bytes() for p in (tmp_path / "cooled").glob("*.csv")}
    assert cooled_files["strip4.csv"] == cooled(strip_files["strip4.csv"], temperature, "strip4.csv")
    assert all(cooled_files[name] == data for name, data in {**SEED_PAIR, **strip_files}.items()
               if name != "strip4.csv")
    plain = strips_manifest(SEED_PAIR, {}, "plain")
    del plain["strip_layers"]
    write_dir(tmp_path / "plain", SEED_PAIR, plain, {})
    refused = trainer(redis_url, "calibrate", str(tmp_path / "plain"), "--no-publish")
    assert refused.returncode != 0 and "has no strip reader" in refused.stderr
    assert str(tmp_path / "plain" / "manifest.json") in refused.stderr
