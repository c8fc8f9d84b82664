"""Postal-code reading on generated crops: accuracy, error against reject rate, crops/s.

Run: .venv/bin/python -m benchmarks.postal --crops 2000 [--model DIR ...] [--expect 5] [--plot PNG] [--validation]

With several --model directories, each reads the same crops, side by side in one table and one
plot; with --expect, the 5-digit set is read both without and with the hint.

The crops come from trainer.synth with fixed seeds: a 5-digit set (the acceptance set of
issue 4) and a mixed set of 4, 5, 6 and 5+4 codes. They are read in this process through the
worker's own code path: PNG bytes -> decode -> lattice_of -> read, a batch of 64 crops at a time,
or, for a model with a strip reader, PNG bytes -> decode -> read_crop, crop by crop.
"wrong count" is the share of crops read with the wrong number of digits (a failed cut), split
into too few (a touching pair read as one, a piece left out) and too many; the other wrong
codes have the right number of digits and at least one of them wrong, or only a separator
wrong (its own column: a ZIP+4's space missed or one written where there is none). Rejecting a share of
crops means setting aside the least confident ones; the error rate is over the crops kept.
"review" is the share that the workers' default review threshold flags, with the error rate
over the crops it lets through; the second table gives, at each of THRESHOLDS, the share of all
crops flagged and the share sent on wrong (read, not flagged, and wrong: a mis-sent letter). A
crop that raises ImageError counts as wrong (too few digits) and is rejected first.

The row "true cuts" reads the 5-digit set from each digit's own ink as the generator drew it,
normalised and classified as the reader does: what the model would read if cutting were
perfect, so the gap to the first row is what cutting costs.
"""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt
from PIL import Image

from benchmarks.pipeline import machine
from digits.arrays import Floats
from digits.defaults import REVIEW_THRESHOLD
from digits.images import ImageError, centre_many, decode
from digits.ink import halo, read_ink, tight
from digits.network import Recogniser, load_model_dir
from digits.pattern import Pattern, parse_pattern
from digits.readers import read_images
from digits.reading import Reading, read
from digits.registry import DEFAULT_MODEL_DIR
from digits.segment import Lattice, candidate_ink
from digits.sweep import StripReader, load_strip_reader_dir
from trainer.synth import FORMATS, Crop, generate, png_bytes

BATCH = 64
REJECTS = (0.0, 0.05, 0.10, 0.20)
THRESHOLDS = (0.9, 0.95, 0.98, 0.99)  # review thresholds: crops flagged, and sent on wrong
SEED_FIVE, SEED_MIXED = 2026, 2027
SEED_VALIDATION = 7  # --validation: the reader's settings of 2026-12-03 were chosen on these crops


@dataclass(frozen=True)
class Scored:
    """What one set of crops scored."""

    name: str
    crops: int
    whole: float  # share of crops whose code string is exactly right
    digits: float  # share of true digits read right, position by position where the lengths agree
    too_few: float  # share of crops read with fewer digits than they hold (or none: an error)
    too_many: float  # share of crops read with more digits than they hold
    separators: float  # share of crops with every digit right but a separator wrong (a ZIP+4's missed space)
    errors: dict[float, float]  # reject rate -> error rate over the crops kept
    reviewed: float  # share of crops flagged for review at the default review threshold
    review_error: float  # error rate over the crops not flagged
    at_thresholds: dict[float, tuple[float, float]]  # review threshold -> shares of all crops flagged, sent wrong
    rate: float  # crops/s on one core
    curve: tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]  # reject rates, error rates


def read_all(crops: list[Crop], model: Recogniser, strips: StripReader | None,
             expect: Pattern | None) -> tuple[list[Reading | None], float]:
    """Each crop's reading (None where the worker would return an error), and the seconds taken:
    by the strip reader where the model has one, as a worker reads crops."""
    blobs = [png_bytes(crop) for crop in crops]
    readings: list[Reading | None] = []
    started = time.perf_counter()
    for start in range(0, len(blobs), BATCH):
        greys: list[Floats] = []
        decoded: list[int] = []
        for index, data in enumerate(blobs[start:start + BATCH]):
            try:
                greys.append(decode(data))
                decoded.append(index)
            except ImageError:
                pass
        batch: list[Reading | None] = [None] * len(blobs[start:start + BATCH])
        for index, found in zip(decoded, read_images(greys, model, strips, REVIEW_THRESHOLD, expect), strict=True):
            batch[index] = None if isinstance(found, ImageError) else found
        readings += batch
    return readings, time.perf_counter() - started


def read_true_cuts(crops: list[Crop], model: Recogniser) -> tuple[list[Reading | None], float]:
    """Each crop read from its digits' true ink (the generator's masks, at the reader's working
    size) instead of the reader's cuts, one candidate per digit, and the seconds taken."""
    lattices = []
    started = time.perf_counter()
    for crop in crops:
        grey = decode(png_bytes(crop))
        ink, _ = read_ink(grey)
        owns = []
        for (left, top, right, bottom), mask in zip(crop.boxes, crop.masks, strict=True):
            drawn = np.zeros(grey.shape, np.float32)
            drawn[top:bottom, left:right] = mask
            working = np.asarray(Image.fromarray(drawn, mode="F").resize(ink.shape[::-1], Image.Resampling.BILINEAR))
            owns.append(tight(working > min(0.5, float(working.max()) / 2), 0, 0))
        size = float(np.median([own.height for own in owns]))
        lattices.append(Lattice(centre_many([candidate_ink(halo(own), ink) for own in owns]).reshape(len(owns), -1),
                                [(i, i + 1) for i in range(len(owns))], list(crop.boxes),
                                np.array([own.width / size for own in owns], np.float32),
                                np.array([own.height / size for own in owns], np.float32), len(owns)))
    expect = parse_pattern(FORMATS[crops[0].fmt]) if crops else None
    readings: list[Reading | None] = list(read(lattices, model, REVIEW_THRESHOLD, expect))
    return readings, time.perf_counter() - started


def error_curve(right: npt.NDArray[np.bool_], confidence: npt.NDArray[np.float64],
                rejects: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    """Error rate over the crops kept when the least confident share `reject` is set aside."""
    order = np.argsort(-confidence, kind="stable")
    kept = np.maximum(1, np.round(len(right) * (1.0 - rejects)).astype(int))
    wrong_so_far = np.cumsum(~right[order])
    return np.asarray(wrong_so_far[kept - 1] / kept, dtype=np.float64)


def score(name: str, crops: list[Crop], readings: list[Reading | None], seconds: float) -> Scored:
    right = np.array([r is not None and r.code == c.code for r, c in zip(readings, crops, strict=True)])
    confidence = np.array([r.confidence if r is not None else -1.0 for r in readings])
    digits_right = digits_total = too_few = too_many = separators = 0
    for reading, crop in zip(readings, crops, strict=True):
        truth = "".join(c for c in crop.code if c.isdigit())
        read_count = len(reading.digits) if reading is not None else 0
        digits_total += len(truth)
        too_few += read_count < len(truth)
        too_many += read_count > len(truth)
        if reading is not None and read_count == len(truth):
            digits_right += sum(a == b for a, b in zip(reading.digits, truth, strict=True))
            separators += reading.digits == truth and reading.code != crop.code
    rejects = np.linspace(0.0, 0.3, 61)
    errors = error_curve(right, confidence, np.array(REJECTS))
    reviewed = np.array([r is None or r.review for r in readings])
    review_error = float((~right & ~reviewed).sum() / max(1, (~reviewed).sum()))
    at_thresholds = {t: (float((confidence < t).mean()), float((~right & (confidence >= t)).mean()))
                     for t in THRESHOLDS}
    return Scored(name, len(crops), float(right.mean()), digits_right / digits_total,
                  too_few / len(crops), too_many / len(crops), separators / len(crops),
                  dict(zip(REJECTS, (float(e) for e in errors), strict=True)), float(reviewed.mean()),
                  review_error, at_thresholds, len(crops) / seconds,
                  (rejects, error_curve(right, confidence, rejects)))


def plot(results: list[Scored], path: Path, title: str) -> None:
    """The error-against-reject curves as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(7, 4 + 0.2 * len(results)))  # the legend goes under the axes
    for result in results:
        rejects, errors = result.curve
        axes.plot(100 * rejects, 100 * errors, label=f"{result.name} ({result.crops} crops)")
    axes.axhline(0.5, color="grey", linestyle=":", label="target: 0.5% error")
    axes.axvline(10, color="grey", linestyle="--", label="at most 10% rejected")
    axes.set_xlabel("crops rejected for review (%)")
    axes.set_ylabel("code error rate among kept crops (%)")
    axes.set_title(title, fontsize=9)
    axes.set_ylim(bottom=0)
    axes.grid(alpha=0.3)
    axes.legend(fontsize=7, loc="upper left", bbox_to_anchor=(0.0, -0.15))  # long model names: never over the curves
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(figure)


def table(results: list[Scored]) -> str:
    head = ("| set | crops | whole code | digits | wrong count (too few / too many) | only a separator wrong | "
            + " | ".join(f"error @ {r:.0%} reject" for r in REJECTS))
    lines = [head + f" | review @ {REVIEW_THRESHOLD} (error of the rest) | crops/s (1 core) |",
             "|" + "---|" * (8 + len(REJECTS))]
    for r in results:
        errors = " | ".join(f"{100 * r.errors[x]:.2f}%" for x in REJECTS)
        lines.append(f"| {r.name} | {r.crops} | {100 * r.whole:.2f}% | {100 * r.digits:.2f}% "
                     f"| {100 * (r.too_few + r.too_many):.2f}% ({100 * r.too_few:.2f} / {100 * r.too_many:.2f}) "
                     f"| {100 * r.separators:.2f}% "
                     f"| {errors} | {100 * r.reviewed:.2f}% ({100 * r.review_error:.2f}%) "
                     f"| {r.rate:.1f} |")
    lines += ["", "| set | " + " | ".join(f"review @ {t}: flagged, sent on wrong" for t in THRESHOLDS) + " |",
              "|---|" + "---:|" * len(THRESHOLDS)]
    lines += [f"| {r.name} | " + " | ".join(f"{100 * flagged:.1f}%, {100 * wrong:.2f}%"
                                           for flagged, wrong in r.at_thresholds.values()) + " |" for r in results]
    return "\n".join(lines)


def main() -> None:
    from trainer.mnist import load

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--crops", type=int, default=2000, help="5-digit crops (default 2000)")
    parser.add_argument("--mixed", type=int, default=None, help="mixed-format crops (default: a quarter of --crops)")
    parser.add_argument("--model", type=Path, action="append", default=None,
                        help="a model directory (CSVs and manifest); repeat to compare (default: the bundled one)")
    parser.add_argument("--expect", default=None, help="hint for the 5-digit set, e.g. 5 or #####")
    parser.add_argument("--plot", type=Path, default=None,
                        help="a PNG to draw error against reject rate in (docs/postal-reject.png is the committed one)")
    parser.add_argument("--validation", action="store_true",
                        help="crops of MNIST validation digits (other seeds), to tune the reader on")
    args = parser.parse_args()
    expect = parse_pattern(args.expect) if args.expect else None
    directories: list[Path] = args.model or [DEFAULT_MODEL_DIR]
    data = load()
    if args.validation:
        _, _, images, labels = data.split()
        seed_five, seed_mixed = SEED_VALIDATION, SEED_VALIDATION + 1
    else:
        images, labels, seed_five, seed_mixed = data.test_images, data.test_labels, SEED_FIVE, SEED_MIXED
    five = generate(args.crops, images, labels, formats=("5",), seed=seed_five)
    mixed_count = args.crops // 4 if args.mixed is None else args.mixed
    mixed = generate(mixed_count, images, labels, formats=("4", "5", "6", "5+4"), seed=seed_mixed)
    print(f"machine: {machine()}")
    results: list[Scored] = []
    for directory in directories:
        model, strips = load_model_dir(directory), load_strip_reader_dir(directory)
        label = f"{directory.name} ({strips.architecture if strips else model.architecture})"
        print(f"model: {directory} ({model.architecture}{' + ' + strips.architecture if strips else ''})")
        results.append(score(f"{label}: 5-digit", five, *read_all(five, model, strips, None)))
        if expect:
            results.append(score(f"{label}: 5-digit, --expect {args.expect}", five,
                                 *read_all(five, model, strips, expect)))
        if mixed:
            results.append(score(f"{label}: mixed 4/5/6/5+4, no hint", mixed, *read_all(mixed, model, strips, None)))
        results.append(score(f"{label}: 5-digit, true cuts (what cutting costs)", five,
                             *read_true_cuts(five, model)))
    print()
    print(table(results))
    if args.plot is not None:
        plot(results, args.plot, "generated crops, " + ", ".join(d.name for d in directories))
        print(f"\nplot: {args.plot}")


if __name__ == "__main__":
    main()
