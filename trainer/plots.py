"""The PNGs published beside each version's manifest: learning curves, confusion matrix, worst digits."""

from __future__ import annotations

import io
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only, never a window
import matplotlib.pyplot as plt
import numpy as np
import numpy.typing as npt

from digits.arrays import Bytes
from digits.network import Recogniser


def png(figure: Any) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100)
    plt.close(figure)
    return buffer.getvalue()


def accuracy_plot(history: dict[str, list[float]], title: str, train_label: str = "Training") -> bytes:
    """Training and validation accuracy per epoch, with a zoomed inset, drawn like the seed's figure."""
    epochs = np.arange(1, len(history["train"]) + 1)
    figure = plt.figure(figsize=(10, 7))
    full = figure.add_axes((0.1, 0.1, 0.8, 0.8))
    zoom = figure.add_axes((0.36, 0.25, 0.53, 0.5))
    for axes in (full, zoom):
        axes.plot(epochs, history["train"], "-b", label=train_label)
        axes.plot(epochs, history["validation"], "-g", label="Validation")
    full.legend(loc="lower left")
    full.set_xlabel("Epoch")
    full.set_ylabel("Accuracy")
    full.set_title(title)
    tail = history["validation"][len(epochs) // 5:] or history["validation"]
    zoom.set_ylim(max(min(tail) - 0.002, 0.9), min(max(max(tail), max(history["train"])) + 0.002, 1.0005))
    zoom.set_xlim(len(epochs) // 5 + 1, max(len(epochs), 2))
    zoom.grid(alpha=0.3)
    zoom.set_title("Zoom in")
    return png(figure)


def confusion(labels: Bytes, predicted: Bytes) -> npt.NDArray[np.int64]:
    """counts[true, predicted]."""
    counts = np.zeros((10, 10), dtype=np.int64)
    np.add.at(counts, (labels.astype(np.int64), predicted.astype(np.int64)), 1)
    return counts


def confusion_plot(labels: Bytes, predicted: Bytes) -> bytes:
    counts = confusion(labels, predicted)
    figure, axes = plt.subplots(figsize=(7, 6))
    shown = np.log1p(counts)
    axes.imshow(shown, cmap="Blues")
    for true in range(10):
        for guess in range(10):
            if counts[true, guess]:
                axes.text(guess, true, str(counts[true, guess]), ha="center", va="center", fontsize=8,
                          color="white" if shown[true, guess] > shown.max() / 2 else "black")
    axes.set_xticks(range(10))
    axes.set_yticks(range(10))
    axes.set_xlabel("Predicted")
    axes.set_ylabel("True")
    errors = int(counts.sum() - np.trace(counts))
    axes.set_title(f"Test set confusion matrix: {errors} errors in {int(counts.sum())}")
    figure.tight_layout()
    return png(figure)


def worst_plot(images: Bytes, labels: Bytes, probabilities: npt.NDArray[np.float32], count: int = 40) -> bytes:
    """The misclassified test digits the model was most sure of, with true and predicted labels."""
    predicted = probabilities.argmax(axis=1)
    wrong = np.flatnonzero(predicted != labels)
    order = wrong[np.argsort(-probabilities[wrong, predicted[wrong]])][:count]
    columns = 8
    rows = max(1, -(-len(order) // columns))
    figure, grid = plt.subplots(rows, columns, figsize=(columns * 1.3, rows * 1.5), squeeze=False)
    for axes in grid.flat:
        axes.axis("off")
    for axes, index in zip(grid.flat, order, strict=False):
        axes.imshow(images[index].reshape(28, 28), cmap="gray_r")
        axes.set_title(f"{labels[index]} -> {predicted[index]} ({probabilities[index, predicted[index]]:.2f})",
                       fontsize=8)
    figure.suptitle("Worst-classified test digits: true -> predicted (confidence)")
    figure.tight_layout()
    return png(figure)


def version_plots(model: Recogniser, history: dict[str, list[float]], title: str,
                  test_images: Bytes, test_labels: Bytes, train_label: str = "Training") -> dict[str, bytes]:
    """The three PNGs of a version, by file name."""
    probabilities = model.probabilities(test_images.astype(np.float32) / 255.0)
    predicted = probabilities.argmax(axis=1).astype(np.uint8)
    return {
        "accuracy.png": accuracy_plot(history, title, train_label),
        "confusion.png": confusion_plot(test_labels, predicted),
        "worst.png": worst_plot(test_images, test_labels, probabilities),
    }
