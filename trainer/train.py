"""Keras training of the 784-H-10 sigmoid MLP, exported to the seed's theta format.

This is the only module in the project that imports TensorFlow.
"""

from __future__ import annotations

import os
import time
from dataclasses import asdict, dataclass, replace
from typing import Any

import numpy as np
import numpy.typing as npt

from digits.theta import Model, Theta, pack
from trainer.mnist import Mnist


@dataclass(frozen=True)
class Preset:
    """Hyperparameters of one training recipe; `steps` mini-batches of `batch_size` images."""

    name: str
    hidden: int
    learning_rate: float
    steps: int
    batch_size: int
    init: str  # "normal": N(0, 1) weights and biases as in the seed; "glorot": Glorot-uniform, zero bias
    seed: int = 0


PRESETS = {
    # The 2017 notebook: 784-300-10 sigmoid, Adam 0.005, 30,000 steps of 50. Its N(0, 1) init
    # (`--init normal`) reached 96.8% here; Keras' Glorot init is the default.
    "seed": Preset("seed", hidden=300, learning_rate=0.005, steps=30_000, batch_size=50, init="glorot"),
}


@dataclass(frozen=True)
class Trained:
    theta: Theta
    history: dict[str, list[float]]  # per-epoch accuracies: train, validation
    validation_accuracy: float
    test_accuracy: float
    seconds: float
    preset: Preset


def accuracy(model: Model, images: npt.NDArray[np.uint8], labels: npt.NDArray[np.uint8]) -> float:
    """Accuracy of the numpy forward pass the workers run, on uint8 images scaled to [0, 1]."""
    probs = model.probabilities(images.astype(np.float32) / 255.0)
    return float((probs.argmax(axis=1) == labels).mean())


def train(data: Mnist, preset: Preset, verbose: int = 1) -> Trained:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf

    tf.keras.utils.set_random_seed(preset.seed)
    x_train, y_train, x_val, y_val = data.split()
    x_train_f = x_train.astype(np.float32) / 255.0
    x_val_f = x_val.astype(np.float32) / 255.0

    if preset.init == "normal":
        kernel: Any = tf.keras.initializers.RandomNormal(stddev=1.0, seed=preset.seed)
        bias: Any = tf.keras.initializers.RandomNormal(stddev=1.0, seed=preset.seed + 1)
    else:
        kernel, bias = "glorot_uniform", "zeros"
    net = tf.keras.Sequential([
        tf.keras.Input(shape=(784,)),
        tf.keras.layers.Dense(preset.hidden, activation="sigmoid",
                              kernel_initializer=kernel, bias_initializer=bias),
        tf.keras.layers.Dense(10, kernel_initializer=kernel, bias_initializer=bias),
    ])
    net.compile(optimizer=tf.keras.optimizers.Adam(preset.learning_rate),
                loss=tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                metrics=["accuracy"])

    steps_per_epoch = min(1000, preset.steps)
    epochs = max(1, preset.steps // steps_per_epoch)
    dataset = (tf.data.Dataset.from_tensor_slices((x_train_f, y_train.astype(np.int32)))
               .shuffle(len(x_train_f), seed=preset.seed, reshuffle_each_iteration=True)
               .repeat().batch(preset.batch_size).prefetch(4))
    started = time.monotonic()
    fit = net.fit(dataset, epochs=epochs, steps_per_epoch=steps_per_epoch,
                  validation_data=(x_val_f, y_val.astype(np.int32)), verbose=verbose)
    seconds = time.monotonic() - started

    (w1, b1), (w2, b2) = (layer.get_weights() for layer in net.layers)
    theta = pack(b1, w1, b2, w2)
    model = Model(theta)
    history = {"train": [float(a) for a in fit.history["accuracy"]],
               "validation": [float(a) for a in fit.history["val_accuracy"]]}
    return Trained(theta, history, accuracy(model, x_val, y_val),
                   accuracy(model, data.test_images, data.test_labels), seconds, preset)


def preset_with(name: str, **overrides: Any) -> Preset:
    """A named preset with some hyperparameters overridden (None means keep)."""
    changes = {k: v for k, v in overrides.items() if v is not None}
    return replace(PRESETS[name], **changes)


def hyperparameters(preset: Preset) -> dict[str, Any]:
    return asdict(preset)
