"""The Keras baseline: read a folder and classify it with `model.predict`, the same weights as the workers.

Run: .venv/bin/python -m benchmarks.keras_script FOLDER [--batch-size 256]
Prints one JSON object: images, seconds (reading, normalising and predicting; TensorFlow's import
and the model's construction excluded), and how many digits agree with the NumPy model.

What a Keras user writes: load and prepare every image (the project's own decode and
normalisation, so the inputs are identical; postal crops are cut into candidate digits by
digits.reading.lattice_of), then `model.predict` over all the candidates as they are and shrunk
(the reader's two looks, averaged, as the workers read: digits.reading.classify), and each
crop's best path through its candidates, its doubtful digits looked at closer with
`model.predict` too (digits.reading.assemble).
TensorFlow uses its default threads (every core). Benchmark code only: nothing in digits/,
worker/ or producer/ imports TensorFlow.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import time
from pathlib import Path

import numpy as np

from digits.defaults import REVIEW_THRESHOLD
from digits.images import ImageError, decode
from digits.reading import assemble, classify, lattice_of
from digits.registry import DEFAULT_MODEL_DIR
from digits.theta import N_CLASSES, N_INPUT, Model, Theta, load_dir


def keras_model(theta: Theta) -> object:
    """784-H-10, sigmoid then softmax, with the theta CSVs' weights (bias row first in each file)."""
    import keras

    model = keras.Sequential([
        keras.Input((N_INPUT,)),
        keras.layers.Dense(theta.hidden, activation="sigmoid"),
        keras.layers.Dense(N_CLASSES, activation="softmax"),
    ])
    model.set_weights([theta.theta1[1:].astype(np.float32), theta.theta1[0].astype(np.float32),
                       theta.theta2[1:].astype(np.float32), theta.theta2[0].astype(np.float32)])
    return model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("folder", type=Path)
    parser.add_argument("--batch-size", type=int, default=256)
    args = parser.parse_args()
    theta = load_dir(DEFAULT_MODEL_DIR)
    numpy_model = Model(theta)  # to check that Keras and the workers' NumPy agree
    imported = time.perf_counter()
    model = keras_model(theta)
    model.predict(np.zeros((1, N_INPUT), np.float32), verbose=0)  # type: ignore[attr-defined]  # build the graph
    ready = time.perf_counter()

    paths = sorted(p for p in args.folder.iterdir() if p.suffix == ".png")
    lattices = []
    for path in paths:
        with contextlib.suppress(ImageError):  # a worker gives it an error result: nothing to predict
            lattices.append(lattice_of(decode(path.read_bytes())))
    pixels = np.concatenate([lattice.fields for lattice in lattices])
    prepared = time.perf_counter()

    def predict(fields: np.ndarray) -> np.ndarray:
        return np.asarray(model.predict(fields, batch_size=args.batch_size, verbose=0))  # type: ignore[attr-defined]

    probabilities = classify(lattices, predict)  # the reader's two looks
    assemble(lattices, probabilities, predict, REVIEW_THRESHOLD)  # each crop's best path, doubtful digits again
    done = time.perf_counter()

    agree = int((probabilities.argmax(axis=1) == classify(lattices, numpy_model.probabilities).argmax(axis=1)).sum())
    print(json.dumps({"images": len(paths), "digits": len(pixels), "seconds": done - ready,
                      "prepare_seconds": prepared - ready, "predict_seconds": done - prepared,
                      "startup_seconds": ready - imported, "agree": agree}))


if __name__ == "__main__":
    main()
