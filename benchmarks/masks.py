"""Growing and shrinking masks by array shifts (digits.masks) against scipy.ndimage, and Otsu's
levels counted by bincount against np.histogram, on the ink of generated crops.

Run: .venv/bin/python -m benchmarks.masks [--crops 200] [--rounds 3]

Each pair runs on the same masks in the same process, alternating, best round kept; both
sides give the same arrays (checked here too). The milliseconds are per crop.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from typing import Any

import numpy as np
from scipy import ndimage

from benchmarks.pipeline import machine
from benchmarks.postal import SEED_VALIDATION
from digits.images import decode
from digits.ink import BREAK_GAP, binarise, read_ink
from digits.masks import grow, shrink
from trainer.synth import generate, png_bytes

SQUARE = np.ones((3, 3), dtype=bool)


def main() -> None:
    from trainer.mnist import load

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--crops", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    _, _, images, labels = load().split()
    crops = generate(args.crops, images, labels, formats=("5", "5+4"), seed=SEED_VALIDATION)
    inks = [read_ink(decode(png_bytes(crop)))[0] for crop in crops]
    masks = [binarise(ink) for ink in inks]
    faint = [ink[ink > 0.02] for ink in inks]
    pairs: list[tuple[str, Callable[[Any], Any], Callable[[Any], Any], list[Any]]] = [
        (f"grow a crop's ink by {BREAK_GAP} (components)", lambda m: ndimage.binary_dilation(m, iterations=BREAK_GAP),
         lambda m: grow(m, BREAK_GAP), masks),
        ("grow by the 3 x 3 square (as halo grows each piece)", lambda m: ndimage.binary_dilation(m, structure=SQUARE),
         lambda m: grow(m, square=True), masks),
        ("shrink by the cross (as stroke_width shrinks each piece)", ndimage.binary_erosion, shrink, masks),
        ("Otsu's 128 levels", lambda v: np.histogram(v, bins=128, range=(0.0, 1.0))[0],
         lambda v: np.bincount(np.minimum((v * 128).astype(np.intp), 127), minlength=128), faint),
    ]
    print(f"machine: {machine()}\n{len(crops)} generated crops of validation digits (5 and 5+4), best of "
          f"{args.rounds} rounds\n")
    print("| work | before (scipy / np.histogram), ms a crop | now, ms a crop | now / before |")
    print("| --- | ---: | ---: | ---: |")
    for name, before, now, inputs in pairs:
        assert all(np.array_equal(before(x), now(x)) for x in inputs), name
        best = [np.inf, np.inf]
        for _ in range(args.rounds):
            for side, work in enumerate((before, now)):
                started = time.perf_counter()
                for x in inputs:
                    work(x)
                best[side] = min(best[side], (time.perf_counter() - started) / len(inputs))
        print(f"| {name} | {1000 * best[0]:.3f} | {1000 * best[1]:.3f} | {best[1] / best[0]:.2f}x |")


if __name__ == "__main__":
    main()
