"""MNIST test accuracy of a model read directly and through the workers' image path.

Run: .venv/bin/python -m benchmarks.png_path [--model DIR] [--images 10000] [--validation]
                                             [--sure-first 0.95,0.99]

Directly: the test set's pixels / 255, as the trainer measures it. Through the image path: each
digit written as a 28 x 28 PNG and read back by `digits.images.decode` and `normalise` (polarity,
background, box to 20 pixels, centre of mass), as a worker reads a file. The two should agree:
a gap would mean the workers' normalisation is not MNIST's. The last rows are what a worker
reports: the same files read by digits.reading.read (a second look where the first is unsure,
a closer look at doubtful digits), and the same with a second look at every digit, with the
share flagged for review and the errors among the rest. `--validation` reads the 5,000
validation digits instead, the ones the reader's settings are chosen on; `--sure-first` tries
other thresholds for keeping a lone digit's first look (the reader's: SURE_FIRST_LOOK).
"""

from __future__ import annotations

import argparse
import io
import math
from pathlib import Path

import numpy as np
from PIL import Image

from benchmarks.pipeline import machine
from digits.defaults import REVIEW_THRESHOLD
from digits.images import decode, normalise
from digits.network import load_model_dir
from digits.reading import SURE_FIRST_LOOK, assemble, classify, lattice_of
from digits.registry import DEFAULT_MODEL_DIR


def png(pixels: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels.reshape(28, 28)).save(buffer, format="PNG")
    return buffer.getvalue()


def main() -> None:
    from trainer.mnist import load

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, default=DEFAULT_MODEL_DIR, help="a directory of theta CSVs")
    parser.add_argument("--images", type=int, default=10_000)
    parser.add_argument("--validation", action="store_true", help="the validation digits, not the test set")
    parser.add_argument("--sure-first", default=str(SURE_FIRST_LOOK),
                        help="comma-separated thresholds for keeping a lone digit's first look")
    args = parser.parse_args()
    model = load_model_dir(args.model)
    data = load()
    _, _, validation_images, validation_labels = data.split()
    images, labels = ((validation_images, validation_labels) if args.validation
                      else (data.test_images, data.test_labels))
    images, labels = images[:args.images], labels[:args.images]
    direct = model.probabilities(images.astype(np.float32) / 255.0).argmax(axis=1)
    greys = [decode(png(image)) for image in images]  # each file decoded once, as a worker does
    through_png = model.probabilities(np.stack([normalise(grey).reshape(-1) for grey in greys])).argmax(axis=1)
    lattices = [lattice_of(grey) for grey in greys]
    first = model.probabilities(np.concatenate([lat.fields for lat in lattices])).max(axis=1)
    which = "validation" if args.validation else "test"
    print(f"machine: {machine()}\nmodel: {args.model} ({model.architecture})\n")
    print(f"| MNIST {which} digits | read right | flagged for review | wrong, not flagged |")
    print("| --- | ---: | ---: | ---: |")
    print(f"| directly, pixels / 255 ({len(labels):,}) | {np.mean(direct == labels):.2%} | | |")
    print(f"| as PNG files, decoded and normalised (as prepare does) | {np.mean(through_png == labels):.2%} | | |")
    rows = [(f"... a second look for the {np.mean(first < value):.0%} read under {value} at first, a closer look "
             f"at doubtful digits{' (as workers read)' if value == SURE_FIRST_LOOK else ''}", value)
            for value in (float(text) for text in args.sure_first.split(","))]
    for name, sure_first in [*rows, ("... with a second look at every digit", math.inf)]:
        readings = assemble(lattices, classify(lattices, model.probabilities, sure_first), model.probabilities,
                            REVIEW_THRESHOLD)
        read_as = np.array([int(reading.code) for reading in readings])
        flagged = np.array([reading.review for reading in readings])
        print(f"| {name} | {np.mean(read_as == labels):.2%} | {flagged.mean():.2%} "
              f"| {int(((read_as != labels) & ~flagged).sum())} |")


if __name__ == "__main__":
    main()
