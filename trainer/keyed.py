"""Keyed corrections as training data.

An export of `digits-producer corrections` (docs/corrections.md) holds the images people keyed at
stations and their codes. Each image is cut into digits by the reader, exactly as a worker cuts
it when told how many digits to expect (the keyed code's length, `--expect-digits N`), and each
cut digit is labelled by the keyed digit at its place. An image that cannot be cut into that many
digits, or no longer decodes, is left out and said so: it teaches nothing about this reader.
"""

from __future__ import annotations

import csv
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from digits import defaults
from digits.images import ImageError, decode
from digits.network import Recogniser
from digits.pattern import Pattern
from digits.reading import best_path, candidate_scores, classify, lattice_of
from producer.corrections import FORMAT, FORMAT_VERSION
from trainer.crops import Candidates
from trainer.report import Report

KEYED_SHARE = 0.1  # keyed digits are repeated to be at least this share of the candidate digits trained on


class KeyedError(ValueError):
    """A corrections folder that is not a complete export; the message names the file and what is wrong."""


@dataclass
class KeyedSet:
    """One export's digits, labelled, and what it says about itself for the version's manifest."""

    directory: Path
    candidates: Candidates
    images: int = 0  # labelled images that gave their digits
    skipped: list[str] = field(default_factory=list)  # "PATH: why", for the rest
    runs: list[str] = field(default_factory=list)
    fingerprint: str = ""  # sha256 of labels.csv: the same export trains the same digits

    def summary(self) -> dict[str, Any]:
        return {"path": str(self.directory), "runs": self.runs, "labels_sha256": self.fingerprint,
                "images": self.images, "digits": len(self.candidates), "skipped": len(self.skipped)}


def read_manifest(directory: Path) -> dict[str, Any]:
    path = directory / "manifest.json"
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise KeyedError(f"{path}: missing (an export writes it last: is the export complete?)") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise KeyedError(f"{path}: not a corrections manifest ({exc})") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise KeyedError(f"{path}: not a corrections manifest (format is not {FORMAT!r})")
    if manifest.get("format_version") != FORMAT_VERSION:
        raise KeyedError(f"{path}: format_version {manifest.get('format_version')!r}, this trainer reads "
                         f"{FORMAT_VERSION}")
    return manifest


def read_labels(directory: Path) -> tuple[list[tuple[str, str]], str]:
    """(image path, digits) rows of labels.csv, checked, and the file's sha256."""
    path = directory / "labels.csv"
    try:
        data = path.read_bytes()
        rows = list(csv.DictReader(data.decode("utf-8").splitlines()))
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise KeyedError(f"{path}: cannot be read ({exc})") from None
    labels = []
    for number, row in enumerate(rows, 2):
        image, digits = row.get("path") or "", row.get("digits") or ""
        if not (digits.isascii() and digits.isdigit() and len(digits) <= defaults.MAX_KEYED_CHARS):
            raise KeyedError(f"{path} line {number}: digits {digits!r} are not 1-{defaults.MAX_KEYED_CHARS} digits")
        inside = (directory / image).resolve()
        if not image or not inside.is_relative_to(directory.resolve()):
            raise KeyedError(f"{path} line {number}: image path {image!r} is not inside {directory}")
        labels.append((image, digits))
    return labels, hashlib.sha256(data).hexdigest()


def cut_digits(data: bytes, count: int, model: Recogniser) -> np.ndarray[Any, np.dtype[np.uint8]] | None:
    """The image's `count` digits as the reader cuts them knowing the count (uint8 fields), or None."""
    lat = lattice_of(decode(data), Pattern((count,)))
    path = best_path(lat, candidate_scores(lat, classify([lat], model.probabilities)), count)
    if path is None or len(path) != count:
        return None
    return np.round(255 * lat.fields[path]).astype(np.uint8)


def load_keyed(directory: Path, model: Recogniser, max_bytes: int = defaults.MAX_BYTES) -> KeyedSet:
    """An export's labelled digits; KeyedError if it is not a complete export."""
    manifest = read_manifest(directory)
    labels, fingerprint = read_labels(directory)
    images, digits, skipped = [], [], []
    for image, code in labels:
        path = directory / image
        try:
            if path.stat().st_size > max_bytes:
                raise ImageError(f"file is {path.stat().st_size} bytes, over the limit of {max_bytes}")
            fields = cut_digits(path.read_bytes(), len(code), model)
        except (OSError, ImageError) as exc:
            skipped.append(f"{image}: {exc}")
            continue
        if fields is None:
            skipped.append(f"{image}: the reader cannot cut it into the {len(code)} digits keyed")
            continue
        images.append(fields)
        digits += [int(d) for d in code]
    found = Candidates(np.concatenate(images) if images else np.zeros((0, 784), np.uint8),
                       np.array(digits, dtype=np.int8))
    runs = [str(run.get("run")) for run in manifest.get("runs", []) if isinstance(run, dict)]
    return KeyedSet(directory, found, len(images), skipped, runs, fingerprint)


def load_sets(directories: list[Path], model: Recogniser, report: Report) -> list[KeyedSet]:
    """Every export given, each said in one line (and each image left out)."""
    sets = []
    for directory in directories:
        keyed = load_keyed(directory, model)
        for reason in keyed.skipped:
            report(f"corrections {directory}: left out {reason}")
        report(f"corrections {directory}: {keyed.images} images, {len(keyed.candidates)} digits, "
               f"{len(keyed.skipped)} left out")
        sets.append(keyed)
    return sets


def joined(candidates: Candidates | None, sets: list[KeyedSet]) -> Candidates | None:
    """The candidates to train on with the keyed digits: repeated, where few, to be at least
    KEYED_SHARE of them (a few hundred keyed digits would vanish among 100,000 cut candidates)."""
    keyed = [s.candidates for s in sets if len(s.candidates)]
    if not keyed:
        return candidates
    images = np.concatenate([k.images for k in keyed])
    labels = np.concatenate([k.labels for k in keyed])
    if candidates is None:
        return Candidates(images, labels)
    repeat = max(1, int(np.ceil(KEYED_SHARE * len(candidates) / ((1 - KEYED_SHARE) * len(labels)))))
    return Candidates(np.concatenate([candidates.images, np.tile(images, (repeat, 1))]),
                      np.concatenate([candidates.labels, np.tile(labels, repeat)]))
