"""Keyed corrections as training data: a real export of codes keyed for a run a real worker read,
cut by the reader, and a real (tiny) TensorFlow run that trains on them and names them."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import redis

from digits.registry import DEFAULT_MODEL_DIR, Registry
from digits.theta import Model, load_dir
from producer import keying
from producer.corrections import FORMAT, FORMAT_VERSION, LABEL_FIELDS, export
from tests.conftest import Digits, FlaggedRun
from tests.test_trainer import trainer
from trainer.crops import JUNK, Candidates
from trainer.keyed import KEYED_SHARE, KeyedError, KeyedSet, joined, load_keyed
from trainer.synth import generate, png_bytes

MODEL = Model(load_dir(DEFAULT_MODEL_DIR))


def write_export(directory: Path, rows: list[tuple[str, bytes, str]]) -> Path:
    """An export in the format of docs/corrections.md, written by hand: (name, image bytes, code)."""
    (directory / "images" / "r").mkdir(parents=True)
    with (directory / "labels.csv").open("w", newline="", encoding="utf-8") as handle:
        labels = csv.DictWriter(handle, LABEL_FIELDS)
        labels.writeheader()
        for name, data, code in rows:
            (directory / "images" / "r" / name).write_bytes(data)
            labels.writerow({"path": f"images/r/{name}", "code": code, "digits": code.replace("-", ""), "run": "r",
                             "source": name})
    (directory / "manifest.json").write_text(json.dumps({"format": FORMAT, "format_version": FORMAT_VERSION,
                                                         "runs": [{"run": "r"}]}))
    return directory


def test_keyed_codes_exported_then_trained_on(redis_url: str, connection: redis.Redis, flagged_run: FlaggedRun,
                                              tmp_path: Path) -> None:
    """The whole loop: a run read by a real worker, its flagged codes keyed (one unreadable), the
    export, its digits cut as the reader cuts them, and a version trained on them that names them."""
    run_id, flagged = flagged_run.run_id, flagged_run.flagged
    for path in flagged[1:]:
        keying.submit(connection, run_id, "station-1", path, flagged_run.truth[path])
    keying.submit(connection, run_id, "station-1", flagged[0], None)  # unreadable: not trained on
    out = tmp_path / "corrections"
    export(connection, [run_id], out)

    keyed = load_keyed(out, MODEL)
    assert keyed.images + len(keyed.skipped) == len(flagged) - 1 and keyed.images >= 0.8 * (len(flagged) - 1)
    assert len(keyed.candidates) == 5 * keyed.images and keyed.candidates.images.shape[1] == 784
    assert set(keyed.candidates.labels.tolist()) <= set(range(10)) and keyed.runs == [run_id]
    read = MODEL.probabilities(keyed.candidates.images / 255.0).argmax(axis=1)
    assert (read == keyed.candidates.labels).mean() > 0.8  # each cut digit is labelled by its own keyed digit

    version_dir = tmp_path / "version"
    done = trainer(redis_url, "train", "--preset", "seed", "--steps", "200", "--hidden", "32", "--seed", "1",
                   "--corrections", str(out), "--out", str(version_dir))
    assert done.returncode == 0, done.stderr
    assert f"corrections {out}: {keyed.images} images, {len(keyed.candidates)} digits" in done.stderr
    [named] = json.loads((version_dir / "manifest.json").read_text())["corrections"]
    assert named == keyed.summary() and named["digits"] == len(keyed.candidates)
    version = done.stdout.strip().splitlines()[-1]
    assert Registry(connection).manifest(version)["corrections"] == [named]


def test_an_image_the_reader_cannot_cut_so_is_left_out_alone(tmp_path: Path, mnist_test: Digits) -> None:
    crops = generate(3, *mnist_test, formats=("5",), seed=5)
    directory = write_export(tmp_path / "set", [
        ("good.png", png_bytes(crops[0]), crops[0].code),
        ("too-many.png", png_bytes(crops[1]), "1" * 30),
        ("broken.png", b"not an image", "12345"),
        ("also-good.png", png_bytes(crops[2]), crops[2].code),
    ])
    keyed = load_keyed(directory, MODEL)
    assert keyed.images == 2 and len(keyed.candidates) == 10
    assert keyed.candidates.labels.tolist() == [int(d) for d in crops[0].code + crops[2].code]
    assert [reason.split(":")[0] for reason in keyed.skipped] == ["images/r/too-many.png", "images/r/broken.png"]
    assert "cannot cut it into the 30 digits keyed" in keyed.skipped[0]
    assert "not a recognised image format" in keyed.skipped[1]


@pytest.mark.parametrize(("damage", "message"), [
    (lambda d: (d / "manifest.json").unlink(), "manifest.json: missing"),
    (lambda d: (d / "manifest.json").write_text("{not json"), "manifest.json: not a corrections manifest"),
    (lambda d: (d / "manifest.json").write_text('{"format": "other"}'), "format is not 'digits-corrections'"),
    (lambda d: (d / "manifest.json").write_text(json.dumps({"format": FORMAT, "format_version": 9})),
     "format_version 9"),
    (lambda d: (d / "labels.csv").write_text("path,digits\nimages/r/a.png,12a45\n"), "line 2: digits '12a45'"),
    (lambda d: (d / "labels.csv").write_text("path,digits\n../../etc/passwd,12345\n"), "is not inside"),
    (lambda d: (d / "labels.csv").unlink(), "labels.csv: cannot be read"),
])
def test_a_broken_export_is_refused_naming_the_file(damage: object, message: str, tmp_path: Path,
                                                    mnist_test: Digits) -> None:
    [crop] = generate(1, *mnist_test, formats=("5",), seed=6)
    directory = write_export(tmp_path / "set", [("a.png", png_bytes(crop), crop.code)])
    damage(directory)  # type: ignore[operator]
    with pytest.raises(KeyedError, match=message.replace("(", r"\(")):
        load_keyed(directory, MODEL)


def test_few_keyed_digits_are_repeated_to_a_tenth_of_the_candidates() -> None:
    candidates = Candidates(np.zeros((1000, 784), np.uint8), np.full(1000, JUNK, np.int8))
    keyed = KeyedSet(Path("k"), Candidates(np.ones((10, 784), np.uint8), np.arange(10, dtype=np.int8)))
    both = joined(candidates, [keyed])
    assert both is not None
    share = float((both.labels >= 0).mean())
    assert KEYED_SHARE <= share < 2 * KEYED_SHARE
    alone = joined(None, [keyed])
    assert alone is not None and alone.labels.tolist() == list(range(10))
    assert joined(candidates, []) is candidates
