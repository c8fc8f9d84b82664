"""MNIST test accuracy of a model read directly and through the workers' image path.

Run: .venv/bin/python -m benchmarks.png_path [--model DIR] [--images 10000]

Directly: the test set's pixels / 255, as the trainer measures it. Through the image path: each
digit written as a 28 x 28 PNG and read back by `digits.images.decode` and `normalise` (polarity,
background, box to 20 pixels, centre of mass), as a worker reads a file. The two should agree:
a gap would mean the workers' normalisation is not MNIST's. The last row is what a worker
reports: the same files read by digits.reading.read, with its two looks and a closer look at
doubtful digits.
"""

from __future__ import annotations

import argparse
import io
from pathlib import Path

import numpy as np
from PIL import Image

from benchmarks.pipeline import machine
from digits.defaults import REVIEW_THRESHOLD
from digits.images import decode, normalise
from digits.network import load_model_dir
from digits.reading import lattice_of, read
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
    args = parser.parse_args()
    model = load_model_dir(args.model)
    data = load()
    images, labels = data.test_images[:args.images], data.test_labels[:args.images]
    direct = model.probabilities(images.astype(np.float32) / 255.0).argmax(axis=1)
    greys = [decode(png(image)) for image in images]  # each file decoded once, as a worker does
    through_png = model.probabilities(np.stack([normalise(grey).reshape(-1) for grey in greys])).argmax(axis=1)
    readings = read([lattice_of(grey) for grey in greys], model, REVIEW_THRESHOLD)
    as_workers_read = np.array([int(reading.code) for reading in readings])
    print(f"machine: {machine()}\nmodel: {args.model} ({model.architecture})\n")
    print("| MNIST test digits | read right |\n| --- | ---: |")
    print(f"| directly, pixels / 255 ({len(labels):,}) | {np.mean(direct == labels):.2%} |")
    print(f"| as PNG files, decoded and normalised (as prepare does) | {np.mean(through_png == labels):.2%} |")
    print(f"| ... read as workers do (two looks, a closer look at doubtful digits) "
          f"| {np.mean(as_workers_read == labels):.2%} |")


if __name__ == "__main__":
    main()
