"""The benchmark inputs, written to a scratch folder: MNIST digits, postal crops, a huge folder.

Every measurement of one run reads the same files, so the rows of a table compare code paths,
not inputs.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from PIL import Image

from trainer import synth

CROP_DPI = 200  # 5-8 mm digits at 200 dpi: crops of about 270 x 90 pixels (the "300 x 80")


def write_digits(folder: Path, count: int) -> list[Path]:
    """The first `count` MNIST test digits as 28 x 28 greyscale PNG files."""
    from trainer.mnist import load

    folder.mkdir(parents=True, exist_ok=True)
    data = load()
    paths = []
    for index in range(count):
        path = folder / f"{index:05d}.png"
        Image.fromarray(data.test_images[index].reshape(28, 28)).save(path)
        paths.append(path)
    return paths


def write_crops(folder: Path, count: int, seed: int = 0) -> tuple[list[Path], tuple[float, float]]:
    """`count` synthetic 5-digit postal crops as PNG files; also their mean (width, height)."""
    from trainer.mnist import load

    folder.mkdir(parents=True, exist_ok=True)
    data = load()
    crops = synth.generate(count, data.test_images, data.test_labels, seed=seed, dpi=CROP_DPI)
    paths = []
    for index, crop in enumerate(crops):
        path = folder / f"{index:05d}.png"
        path.write_bytes(synth.png_bytes(crop))
        paths.append(path)
    heights, widths = np.mean([crop.image.shape for crop in crops], axis=0) if crops else (0.0, 0.0)
    return paths, (float(widths), float(heights))


def link_folder(sources: list[Path], folder: Path, count: int) -> Path:
    """A flat folder of `count` files, hard links to `sources` in turn: a big folder in no extra disk space."""
    folder.mkdir(parents=True, exist_ok=True)
    for index in range(count):
        os.link(sources[index % len(sources)], folder / f"{index:06d}.png")
    return folder
