"""Keras callbacks of a training run: its journal (history, best weights, resumable) and progress."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import tensorflow as tf

from trainer.report import Report, eta


class Journal(tf.keras.callbacks.Callback):  # type: ignore[misc]
    """Per-epoch accuracies and the weights of the best validation epoch, saved beside the
    checkpoint so that a resumed run keeps the history and best weights of the epochs before it."""

    def __init__(self, directory: Path | None, keep_best: bool) -> None:
        super().__init__()
        self.directory = directory
        self.keep_best = keep_best
        self.history: dict[str, list[float]] = {"train": [], "validation": []}
        self.best_epoch = 0
        self.best_weights: list[np.ndarray[Any, Any]] | None = None
        self.seconds = 0.0
        self.started = time.monotonic()
        if directory is not None and (directory / "journal.json").is_file():
            saved = json.loads((directory / "journal.json").read_text())
            self.history, self.best_epoch, self.seconds = saved["history"], saved["best_epoch"], saved["seconds"]
            with np.load(directory / "best.npz") as best:
                self.best_weights = [best[f"arr_{i}"] for i in range(len(best.files))]

    def on_epoch_end(self, epoch: int, logs: dict[str, float] | None = None) -> None:
        logs = logs or {}
        self.history["train"].append(float(logs.get("accuracy", 0.0)))
        self.history["validation"].append(float(logs.get("val_accuracy", 0.0)))
        validation = self.history["validation"]
        if not self.keep_best or validation[-1] >= max(validation):
            self.best_epoch = len(validation)
            self.best_weights = [w.copy() for w in self.model.get_weights()]
        if self.directory is not None:
            self.directory.mkdir(parents=True, exist_ok=True)
            np.savez(self.directory / "best.npz", *(self.best_weights or []))
            seconds = self.seconds + time.monotonic() - self.started
            (self.directory / "journal.json").write_text(json.dumps(
                {"history": self.history, "best_epoch": self.best_epoch, "seconds": seconds}))

    def keep_final_weights(self, net: Any) -> None:
        """Give the network the weights of the kept epoch."""
        if self.best_weights is not None:
            net.set_weights(self.best_weights)


class Progress(tf.keras.callbacks.Callback):  # type: ignore[misc]
    """One line per epoch: accuracies, the best so far, elapsed time and the ETA of the run."""

    def __init__(self, epochs: int, report: Report) -> None:
        super().__init__()
        self.epochs = epochs
        self.report = report
        self.best = 0.0

    def on_train_begin(self, logs: dict[str, float] | None = None) -> None:
        self.started = time.monotonic()
        self.first_epoch: int | None = None

    def on_epoch_begin(self, epoch: int, logs: dict[str, float] | None = None) -> None:
        if self.first_epoch is None:
            self.first_epoch = epoch  # after a resume, not 0

    def on_epoch_end(self, epoch: int, logs: dict[str, float] | None = None) -> None:
        logs = logs or {}
        validation = float(logs.get("val_accuracy", 0.0))
        self.best = max(self.best, validation)
        elapsed = time.monotonic() - self.started
        done = epoch + 1 - (self.first_epoch or 0)
        remaining = elapsed / done * (self.epochs - epoch - 1)
        self.report(f"epoch {epoch + 1}/{self.epochs}  train {float(logs.get('accuracy', 0.0)):.4f}  "
                    f"validation {validation:.4f} (best {self.best:.4f})  {eta(elapsed)} elapsed, ETA {eta(remaining)}")
