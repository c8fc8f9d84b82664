"""Where a worker's time per image goes: decode, normalise or cut, classify, build the results.

Run: .venv/bin/python -m benchmarks.stages [--images 10000] [--crops 2000]

Each stage runs over the whole input, one stage at a time, in batches of 256 as a worker does,
in one process with one BLAS thread; the table gives microseconds per image. If OpenCV is
installed (it is not a dependency), its PNG decoder is timed beside Pillow's, to answer
whether a faster decoder would be worth its weight.
"""

from __future__ import annotations

import argparse
import importlib
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.inputs import write_crops
from benchmarks.pipeline import BATCH, machine, write_digits
from digits.arrays import Floats
from digits.defaults import REVIEW_THRESHOLD
from digits.images import decode
from digits.network import Recogniser, load_model_dir
from digits.reading import Reading, lattice_of, lattices_of, read
from digits.registry import DEFAULT_MODEL_DIR
from digits.results import encode_result
from digits.segment import Lattice
from worker.jobs import reading_records


def per_image(stage: Callable[[], object], count: int) -> float:
    """Microseconds per image of one stage over the whole input (best of 3 runs)."""
    best = float("inf")
    for _ in range(3):
        started = time.perf_counter()
        stage()
        best = min(best, time.perf_counter() - started)
    return best / count * 1e6


def records(readings: list[Reading], paths: list[str]) -> list[str]:
    """The worker's result JSON for each reading."""
    return [encode_result(record) for record in reading_records(paths, 0, readings, "v", "0" * 64, "w")]


def opencv_decode() -> Callable[[bytes], Floats] | None:
    try:
        cv2: Any = importlib.import_module("cv2")
    except ImportError:
        return None

    def decode_cv2(data: bytes) -> Floats:
        grey = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_GRAYSCALE)
        return np.asarray(grey, dtype=np.float32) / 255.0

    return decode_cv2


def stages(files: list[Path], model: Recogniser) -> dict[str, float]:
    blobs = [f.read_bytes() for f in files]
    names = [f.name for f in files]
    batches = range(0, len(blobs), BATCH)
    greys = [decode(b) for b in blobs]
    cuts: list[Lattice] = [lattice_of(g) for g in greys]
    readings = [r for i in batches for r in read(cuts[i:i + BATCH], model, REVIEW_THRESHOLD)]
    row = {
        "decode (Pillow)": per_image(lambda: [decode(b) for b in blobs], len(blobs)),
        "normalise or cut (lattices_of, 256 a batch)": per_image(
            lambda: [lattices_of(greys[i:i + BATCH]) for i in batches], len(blobs)),
        "classify, 256 a batch (read)": per_image(
            lambda: [read(cuts[i:i + BATCH], model, REVIEW_THRESHOLD) for i in batches], len(blobs)),
        "result JSON": per_image(lambda: records(readings, names), len(blobs)),
    }
    row["all four"] = sum(row.values())
    decode_cv2 = opencv_decode()
    if decode_cv2 is not None:
        row["decode (OpenCV imdecode, not used)"] = per_image(lambda: [decode_cv2(b) for b in blobs], len(blobs))
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--images", type=int, default=10_000)
    parser.add_argument("--crops", type=int, default=2_000)
    args = parser.parse_args()
    model = load_model_dir(DEFAULT_MODEL_DIR)
    with tempfile.TemporaryDirectory() as tmp:
        digits = write_digits(Path(tmp) / "mnist", args.images)
        crops, _size = write_crops(Path(tmp) / "crops", args.crops)
        mnist_row, crops_row = stages(digits, model), stages(crops, model)
    print(f"machine: {machine()}\ncommand: python -m benchmarks.stages --images {args.images} --crops {args.crops}\n")
    print("| stage, µs per image | MNIST 28 x 28 PNG | postal crop PNG |\n| --- | ---: | ---: |")
    for stage in mnist_row:
        print(f"| {stage} | {mnist_row[stage]:,.1f} | {crops_row.get(stage, float('nan')):,.1f} |")


if __name__ == "__main__":
    main()
