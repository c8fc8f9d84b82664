"""A strip reader against cutting on crops of MNIST *validation* digits: how its second opinion was chosen.

Run: .venv/bin/python -m benchmarks.strips --model DIR [--crops 1000] [--expect 5] [--check-below 0.99,0.995]

DIR is a version with a strip reader (`digits-trainer strips --out DIR`). Each crop is read four
ways: by the strip reader alone, by cutting alone (the version's digit model), as workers read it
(`digits.sweep.read_crop`: cutting too where the strip reader is under CHECK_BELOW, or each
`--check-below`, each row with the share of crops it also cut), and both ways always (a
disagreement flagged first). The table gives whole
codes and the error over the codes kept when the least sure share is set aside (10% to 58%:
cutting's share at the review threshold 0.9), then the milliseconds a crop spends cleaning its
ink, in the strip network and its best path, and being cut and read; last, the digits the strip
reader left out, by how close each was to its neighbour (in strip columns). Validation crops only:
the reader is tuned on these, never on the test crops of benchmarks.postal.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from benchmarks.pipeline import machine
from benchmarks.postal import SEED_VALIDATION, error_curve
from digits.arrays import Floats
from digits.defaults import REVIEW_THRESHOLD
from digits.images import ImageError, decode
from digits.ink import clean
from digits.network import Recogniser, load_model_dir
from digits.pattern import Pattern, parse_pattern
from digits.reading import lattice_of, read
from digits.strip import Strip, strip_of
from digits.sweep import (
    BLANK,
    CHECK_BELOW,
    HYPHEN,
    StripReader,
    best_path,
    labelling_probability,
    load_strip_reader_dir,
    read_crop,
    read_strip,
)
from trainer.synth import Crop, generate, png_bytes

SHARES = (0.10, 0.20, 0.30, 0.40, 0.50, 0.58)
MEASURES = ("peaks", "best path", "labelling", "peaks x surest blank")  # ways to rank the strip reader's codes


def main() -> None:
    from trainer.mnist import load

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, required=True, help="a version directory with a strip reader")
    parser.add_argument("--crops", type=int, default=1000)
    parser.add_argument("--expect", default=None, help="hint, e.g. 5")
    parser.add_argument("--check-below", default="", help="comma-separated thresholds of cutting's second opinion "
                        "to read the crops with too, as workers would with each")
    args = parser.parse_args()
    checks = [float(value) for value in args.check_below.split(",") if value]
    expect = parse_pattern(args.expect) if args.expect else None
    model, strips = load_model_dir(args.model), load_strip_reader_dir(args.model)
    if strips is None:
        parser.error(f"{args.model} has no strip reader (strip_layers in its manifest)")
    _, _, images, labels = load().split()
    crops = generate(args.crops, images, labels, formats=("5",), seed=SEED_VALIDATION)
    served = ["workers", *(f"check below {check}" for check in checks)]  # read_crop as workers do, at each threshold
    codes: dict[str, list[str | None]] = {"strip": [], "cut": [], **{name: [] for name in served}}
    sure: dict[str, list[float]] = {"strip": [], "cut": [], **{name: [] for name in served},
                                    **{m: [] for m in MEASURES}}
    seconds = {"ink": 0.0, "strip network": 0.0, "cutting": 0.0}
    spacing: list[tuple[float, bool, bool]] = []  # each digit: columns to its nearest neighbour, left out, twinned
    for crop in crops:
        grey = decode(png_bytes(crop))
        found, strip = readings(grey, strips, model, expect, seconds, checks)
        for name, reading in found.items():
            codes[name].append(reading[0])
            sure[name].append(reading[1])
        for name, value in measures(strip, strips, expect).items():
            sure[name].append(value)
        if strip is not None:
            spacing += digit_spacing(crop, strip, found["strip"][0])
    truth = [crop.code for crop in crops]
    right = {name: np.array([c == t for c, t in zip(found, truth, strict=True)]) for name, found in codes.items()}
    agree = np.array([a is not None and a == b for a, b in zip(codes["strip"], codes["cut"], strict=True)])
    ranked = {"strip reader alone": (right["strip"], np.array(sure["strip"])),
              "cutting alone": (right["cut"], np.array(sure["cut"])),
              f"as workers read (read_crop: {np.mean(np.array(sure['strip']) < CHECK_BELOW):.0%} cut)":
                  (right["workers"], np.array(sure["workers"])),
              **{f"as workers read, {name} ({np.mean(np.array(sure['strip']) < check):.0%} cut)":
                 (right[name], np.array(sure[name])) for name, check in zip(served[1:], checks, strict=True)},
              "both ways always, disagreements first": (right["strip"], np.array(sure["strip"]) + 10 * agree),
              **{f"strip reader alone, ranked by {m}": (right["strip"], np.array(sure[m])) for m in MEASURES}}
    served_rows = {"strip reader alone", "cutting alone", *(name for name in ranked if name.startswith("as workers"))}
    print(f"machine: {machine()}")
    print(f"model: {args.model}; {len(crops)} 5-digit crops of validation digits"
          f"{f', --expect {args.expect}' if args.expect else ''}\n")
    print("| reading | whole codes | " + " | ".join(f"error, {s:.0%} set aside" for s in SHARES)
          + f" | review @ {REVIEW_THRESHOLD}: flagged (error of the rest) |")
    print("| --- | ---: | " + " | ".join("---:" for _ in SHARES) + " | ---: |")
    for name, (correct, confidence) in ranked.items():
        errors = error_curve(correct, confidence, np.array(SHARES))
        flagged = confidence < REVIEW_THRESHOLD
        review = (f"{flagged.mean():.1%} ({(~correct & ~flagged).sum() / max(1, (~flagged).sum()):.2%})"
                  if name in served_rows else "")  # the other rows rank by scores, not probabilities
        print(f"| {name} | {correct.mean():.2%} | " + " | ".join(f"{e:.2%}" for e in errors) + f" | {review} |")
    print("\nms a crop, one core: " + ", ".join(f"{name} {1000 * s / len(crops):.1f}" for name, s in seconds.items()))
    print("\ndigits the strip reader alone left out (it read one digit fewer, the rest right), by how far the "
          f"digit's centre is from its nearest neighbour's, in strip columns (a frame every {strips.frame_step:g}):")
    print("| strip columns to the nearest digit | digits | left out "
          "| of which beside the same digit (a repeat merged) |")
    print("| --- | ---: | ---: | ---: |")
    for low, high in ((0, 12), (12, 16), (16, 20), (20, 24), (24, np.inf)):
        held = [(missed, twin) for apart, missed, twin in spacing if low <= apart < high]
        missed = sum(m for m, _ in held)
        print(f"| {low} to {high} | {len(held)} | {missed} ({missed / max(len(held), 1):.2%}) "
              f"| {sum(m and t for m, t in held)} |")


def readings(grey: Floats, strips: StripReader, model: Recogniser, expect: Pattern | None,
             seconds: dict[str, float], checks: list[float]
             ) -> tuple[dict[str, tuple[str | None, float]], Strip | None]:
    """One crop's code and confidence read each way (None, -1 where it raises ImageError), timing
    the ink cleaning, the strip network and cutting apart; and its strip (None if it has none)."""
    found: dict[str, tuple[str | None, float]] = {}
    strip: Strip | None = None
    started = time.perf_counter()
    try:
        strip = strip_of(clean(grey))
        cleaned = time.perf_counter()
        seconds["ink"] += cleaned - started
        reading = read_strip(strip, strips, REVIEW_THRESHOLD, expect)
        seconds["strip network"] += time.perf_counter() - cleaned
        found["strip"] = (reading.code, reading.confidence)
    except ImageError:
        found["strip"] = (None, -1.0)
    started = time.perf_counter()
    try:
        cut = read([lattice_of(grey, expect)], model, REVIEW_THRESHOLD, expect)[0]
        found["cut"] = (cut.code, cut.confidence)
    except ImageError:
        found["cut"] = (None, -1.0)
    seconds["cutting"] += time.perf_counter() - started
    for name, check in (("workers", CHECK_BELOW), *((f"check below {c}", c) for c in checks)):
        try:
            served = read_crop(grey, strips, model, REVIEW_THRESHOLD, expect, check)
            found[name] = (served.code, served.confidence)
        except ImageError:
            found[name] = (None, -1.0)
    return found, strip


def digit_spacing(crop: Crop, strip: Strip, read: str | None) -> list[tuple[float, bool, bool]]:
    """Each digit of the crop: how many strip columns its centre is from its nearest neighbour's
    (a reader with a frame every 4 columns has 3 frames in 12), whether the reading left it out
    (read one digit fewer, the others right), and whether a neighbour is the same digit (a
    repeat that CTC must split with a blank)."""
    truth = "".join(c for c in crop.code if c.isdigit())
    digits = "".join(c for c in read or "" if c.isdigit())
    centres = np.array([(left + right) / 2 for left, _, right, _ in crop.boxes]) / strip.step
    left_out = next((i for i in range(len(truth)) if truth[:i] + truth[i + 1:] == digits), None)
    return [(float(np.min(np.abs(np.delete(centres, i) - centres[i]))) if len(centres) > 1 else np.inf, i == left_out,
             truth[i] in truth[max(i - 1, 0):i] + truth[i + 1:i + 2]) for i in range(len(truth))]


def measures(strip: Strip | None, strips: StripReader, expect: Pattern | None) -> dict[str, float]:
    """Ways to rank the strip reader's codes by how sure it is, each a log-probability at the
    first phase alone (as read_strip read until 2026-12-07, night): the product of the digits'
    peaks (its confidence before 2026-12-07), of every frame on the best path (blanks too: a
    doubtful blank is a digit perhaps missed), the code's probability summed over all its
    alignments (read_strip's now averages it over the phases), and the peaks times the least
    sure blank."""
    if strip is None:
        return {m: -np.inf for m in MEASURES}
    log_probabilities = strips.frames(strip.pixels).log_probabilities
    symbols = best_path(log_probabilities, expect.digits if expect else None)
    if not symbols:
        return {m: -np.inf for m in MEASURES}
    frames = log_probabilities.astype(np.float64)
    peaks = float(sum(frames[t, s] for s, t in symbols if s != HYPHEN))
    blanks = frames[frames.argmax(axis=1) == BLANK, BLANK]
    return {"peaks": peaks, "best path": float(frames.max(axis=1).sum()) if expect is None else peaks,
            "labelling": float(np.log(max(labelling_probability(log_probabilities, [s for s, _ in symbols]), 1e-300))),
            "peaks x surest blank": peaks + float(blanks.min() if len(blanks) else 0.0)}


if __name__ == "__main__":
    main()
