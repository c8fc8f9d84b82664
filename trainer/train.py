"""Keras training of the recognisers, exported to the theta contract.

This package is the only one in the project that imports TensorFlow. An "mlp" preset is the
seed's network: pixels in [0, 1] -> sigmoid hidden layer of H units -> 10 logits, exported as
theta1.csv and theta2.csv; its input scaling is folded into theta1 at export, so the contract
stays "pixels in [0, 1]". A "cnn" preset is conv 3x3x16, max-pool 2, conv 3x3x32, max-pool 2,
dense H (ReLU), 10 logits, exported as one CSV a layer with the layer list in the manifest
(digits/network.py). What else a preset sets is how it is trained (distorted inputs,
schedules, averaging, candidate digits cut from postal crops).
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from digits.manifest import Layer
from digits.network import Recogniser, load_model
from digits.theta import pack, to_csv
from trainer.mnist import Mnist
from trainer.report import Report

if TYPE_CHECKING:  # both import the reader; a plain MNIST run needs neither
    from collections.abc import Sequence

    from trainer.crops import Candidates
    from trainer.keyed import KeyedSet


@dataclass(frozen=True)
class Preset:
    """Hyperparameters of one training recipe; `steps` mini-batches of `batch_size` images."""

    name: str
    hidden: int  # the hidden layer's units (mlp), or the dense layer's after the convolutions (cnn)
    learning_rate: float
    steps: int
    batch_size: int
    init: str  # "normal": N(0, 1) weights and biases as in the seed; "glorot": Glorot-uniform, zero bias
    seed: int = 0
    distort: bool = False  # elastic + affine distortions of every training batch (trainer/distort.py)
    stroke: float = 0.0  # with distort: pens up to this share bolder or finer (trainer/distort.py restroke)
    schedule: str = "constant"  # "cosine": the learning rate decays to 1% of its start over `steps`
    standardize: bool = False  # train on (x - mean) / std of the training pixels; folded into theta1
    label_smoothing: float = 0.0
    dropout: float = 0.0  # share of hidden units dropped in each training step (none at inference)
    ema: bool = False  # serve an exponential moving average of the weights (momentum 0.999)
    select: str = "last"  # "best": keep the epoch with the best validation accuracy
    crops: int = 0  # generated postal crops whose candidate digits join every batch (trainer/crops.py)
    arch: str = "mlp"  # or "cnn" (the module's docstring)


PRESETS = {
    # The 2017 notebook: 784-300-10 sigmoid, Adam 0.005, 30,000 steps of 50. Its N(0, 1) init
    # (`--init normal`) reached 96.8% here; Keras' Glorot init is the default.
    "seed": Preset("seed", hidden=300, learning_rate=0.005, steps=30_000, batch_size=50, init="glorot"),
    # Simard et al. 2003's single hidden layer on distorted digits, widened from 800 to 1,024, with a
    # cosine schedule, weight averaging and selection on the validation set (docs/training.md: the ablation);
    # and in every batch as many candidate digits cut by the postal-code reader from crops of training
    # digits: read right when well cut, read as no digit in particular when cut wrong (--crops 0: MNIST only).
    "best": Preset("best", hidden=1024, learning_rate=0.001, steps=300 * 429, batch_size=128, init="glorot",
                   distort=True, schedule="cosine", standardize=True, ema=True, select="best", crops=40_000),
    # A small convolutional network (LeNet-class, 1.2 M multiply-adds a digit against the MLP's 0.8 M),
    # trained as "best" is, on 40 epochs, with dropout before its last layer: chosen on crops of validation
    # digits over a learning rate of 0.002 without dropout, and over 80 epochs (docs/training.md).
    "cnn": Preset("cnn", hidden=128, learning_rate=0.001, steps=40 * 429, batch_size=128, init="glorot",
                  distort=True, schedule="cosine", ema=True, select="best", crops=40_000, dropout=0.25, arch="cnn"),
}


@dataclass(frozen=True)
class Trained:
    files: dict[str, bytes]  # the model's CSV files, in layer order
    layers: list[Layer] | None  # the manifest's layer list (None for the seed's pair)
    model: Recogniser  # what a worker would load from the files
    history: dict[str, list[float]]  # per-epoch accuracies: train, validation
    validation_accuracy: float
    test_accuracy: float
    seconds: float
    preset: Preset
    best_epoch: int  # 1-based epoch whose weights were kept


def accuracy(model: Recogniser, images: npt.NDArray[np.uint8], labels: npt.NDArray[np.uint8]) -> float:
    """Accuracy of the numpy forward pass the workers run, on uint8 images scaled to [0, 1]."""
    probs = model.probabilities(images.astype(np.float32) / 255.0)
    return float((probs.argmax(axis=1) == labels).mean())


def fold_scaling(w1: npt.NDArray[Any], b1: npt.NDArray[Any], mean: float, std: float
                 ) -> tuple[npt.NDArray[Any], npt.NDArray[Any]]:
    """W1 and b1 acting on raw pixels x that equal the trained ones acting on (x - mean) / std."""
    w1 = w1.astype(np.float64)
    return w1 / std, b1.astype(np.float64) - (mean / std) * w1.sum(axis=0)


def epochs_of(preset: Preset, train_images: int) -> tuple[int, int]:
    """(epochs, steps per epoch): an epoch is one pass over the training images, or all steps if fewer."""
    per_epoch = min(max(train_images // preset.batch_size, 1), preset.steps)
    return max(1, round(preset.steps / per_epoch)), per_epoch


def train(data: Mnist, preset: Preset, report: Report = print, checkpoint_dir: Path | None = None,
          keyed: Sequence[KeyedSet] = ()) -> Trained:
    """Train a preset, with the digits of keyed corrections if given; with checkpoint_dir, an
    interrupted run resumes from its last finished epoch."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TensorFlow reads its log level only from here
    import tensorflow as tf

    from trainer.callbacks import Journal, Progress

    tf.keras.utils.set_random_seed(preset.seed)
    tf.config.experimental.enable_op_determinism()
    x_train, y_train, x_val, y_val = data.split()
    x_train_f = x_train.astype(np.float32) / 255.0
    x_val_f = x_val.astype(np.float32) / 255.0
    mean, std = (float(x_train_f.mean()), float(x_train_f.std())) if preset.standardize else (0.0, 1.0)
    epochs, per_epoch = epochs_of(preset, len(x_train_f))
    net = network(preset, mean, std, epochs * per_epoch)
    dataset = training_batches(x_train, y_train, x_train_f, preset, report, checkpoint_dir, keyed)
    journal = Journal(checkpoint_dir, keep_best=preset.select == "best")
    callbacks: list[Any] = []
    if checkpoint_dir is not None:
        callbacks.append(tf.keras.callbacks.BackupAndRestore(str(checkpoint_dir / "backup")))
    if preset.ema:  # validate, select and export the averaged weights
        callbacks.append(tf.keras.callbacks.SwapEMAWeights(swap_on_epoch=True))
    callbacks += [journal, Progress(epochs, report)]
    started = time.monotonic() - journal.seconds
    validation = (x_val_f, np.eye(10, dtype=np.float32)[y_val])
    net.fit(dataset, epochs=epochs, steps_per_epoch=per_epoch, validation_data=validation,
            validation_batch_size=1000, callbacks=callbacks, shuffle=False, verbose=0)
    seconds = time.monotonic() - started

    journal.keep_final_weights(net)
    files, layers = export_pair(net, mean, std) if preset.arch == "mlp" else export_layers(net)
    model = load_model(files, {"layers": [layer.as_json() for layer in layers]} if layers else None, preset.name)
    return Trained(files, layers, model, journal.history, accuracy(model, x_val, y_val),
                   accuracy(model, data.test_images, data.test_labels), seconds, preset, journal.best_epoch)


def export_pair(net: Any, mean: float, std: float) -> tuple[dict[str, bytes], None]:
    """The MLP's theta1.csv and theta2.csv, its input scaling folded into theta1."""
    w1, b1, w2, b2 = net.get_weights()
    w1, b1 = fold_scaling(w1, b1, mean, std)
    theta = pack(b1, w1, b2, w2)
    return {"theta1.csv": to_csv(theta.theta1), "theta2.csv": to_csv(theta.theta2)}, None


def export_layers(net: Any) -> tuple[dict[str, bytes], list[Layer]]:
    """One CSV per convolution or dense layer, bias row on top (a kernel as its im2col matrix:
    Keras' (kh, kw, c_in, c_out) reshaped to (kh * kw * c_in, c_out)), and the manifest's layer list.
    The last dense layer's logits become the softmax."""
    files: dict[str, bytes] = {}
    layers: list[Layer] = []
    for keras_layer in net.layers:
        kind = type(keras_layer).__name__
        if kind == "MaxPooling2D":
            height, width = keras_layer.pool_size
            layers.append(Layer("maxpool", size=(int(height), int(width))))
            continue
        if kind not in ("Conv2D", "Dense"):
            continue  # Reshape, Flatten, Dropout: nothing at inference
        kernel, bias = keras_layer.get_weights()
        name = f"layer{len(files) + 1}.csv"
        files[name] = to_csv(np.vstack([bias[None, :], kernel.reshape(-1, kernel.shape[-1])]))
        activation = keras_layer.get_config()["activation"]
        if kind == "Dense":
            layers.append(Layer("dense", name, activation=activation))
        else:
            layers.append(Layer("conv", name, kernel=(int(kernel.shape[0]), int(kernel.shape[1])),
                                stride=int(keras_layer.strides[0]),
                                padding=keras_layer.padding, activation=activation))
    layers[-1] = replace(layers[-1], activation="softmax")
    return files, layers


def network(preset: Preset, mean: float, std: float, total_steps: int) -> Any:
    """The preset's network as a compiled Keras model, with its input scaling, initialisation,
    dropout, learning-rate schedule and weight averaging."""
    import tensorflow as tf

    if preset.init == "normal":
        kernel: Any = tf.keras.initializers.RandomNormal(stddev=1.0, seed=preset.seed)
        bias: Any = tf.keras.initializers.RandomNormal(stddev=1.0, seed=preset.seed + 1)
    else:
        kernel, bias = "glorot_uniform", "zeros"
    layers = tf.keras.layers
    if preset.arch == "cnn":  # no input scaling: it could not be folded into a zero-padded convolution
        body = [layers.Reshape((28, 28, 1)),
                layers.Conv2D(16, 3, padding="same", activation="relu", kernel_initializer=kernel),
                layers.MaxPooling2D(2),
                layers.Conv2D(32, 3, padding="same", activation="relu", kernel_initializer=kernel),
                layers.MaxPooling2D(2),
                layers.Flatten(),
                layers.Dense(preset.hidden, activation="relu", kernel_initializer=kernel, bias_initializer=bias)]
    else:
        body = [layers.Rescaling(1.0 / std, offset=-mean / std),
                layers.Dense(preset.hidden, activation="sigmoid", kernel_initializer=kernel, bias_initializer=bias)]
    net = tf.keras.Sequential([
        tf.keras.Input(shape=(784,)),
        *body,
        layers.Dropout(preset.dropout, seed=preset.seed),  # the identity at rate 0 and at inference
        layers.Dense(10, kernel_initializer=kernel, bias_initializer=bias),
    ])
    rate: Any = preset.learning_rate
    if preset.schedule == "cosine":
        rate = tf.keras.optimizers.schedules.CosineDecay(preset.learning_rate, total_steps, alpha=0.01)
    net.compile(optimizer=tf.keras.optimizers.Adam(rate, use_ema=preset.ema, ema_momentum=0.999),
                loss=tf.keras.losses.CategoricalCrossentropy(from_logits=True,
                                                             label_smoothing=preset.label_smoothing),
                metrics=[digit_accuracy()])
    return net


def training_batches(x_train: npt.NDArray[np.uint8], y_train: npt.NDArray[np.uint8], x_train_f: npt.NDArray[Any],
                     preset: Preset, report: Report, checkpoint_dir: Path | None,
                     keyed: Sequence[KeyedSet] = ()) -> Any:
    """The preset's training batches: MNIST digits, distorted if it says so, joined by as many
    candidate digits cut from generated crops (cut once, and kept with the checkpoints) and the
    digits of keyed corrections (an eighth of a batch when there are no crops)."""
    from trainer.crops import with_candidates
    from trainer.distort import Distortion, distorted_batches
    from trainer.keyed import joined

    dataset = distorted_batches(x_train_f, np.eye(10, dtype=np.float32)[y_train], preset.batch_size, preset.seed,
                                Distortion(stroke=preset.stroke) if preset.distort else None)
    candidates = joined(crop_candidates(x_train, y_train, preset, report, checkpoint_dir), list(keyed))
    if candidates is None:
        return dataset
    size = preset.batch_size if preset.crops else max(1, preset.batch_size // 8)
    return with_candidates(dataset, candidates, size, preset.seed)


def crop_candidates(x_train: npt.NDArray[np.uint8], y_train: npt.NDArray[np.uint8], preset: Preset,
                    report: Report, checkpoint_dir: Path | None) -> Candidates | None:
    """The labelled candidates cut from the preset's generated crops, if it has any."""
    if not preset.crops:
        return None
    from trainer.crops import Candidates, build

    saved = checkpoint_dir / "candidates.npz" if checkpoint_dir is not None else None
    if saved is not None and saved.is_file():  # a resumed run: cutting them again takes minutes
        candidates = Candidates.load(saved)
    else:
        started = time.monotonic()
        candidates = build(x_train, y_train, preset.crops, preset.seed)
        report(f"cut {preset.crops} generated crops into {len(candidates)} labelled candidates "
               f"({int((candidates.labels >= 0).sum())} digits) in {time.monotonic() - started:.0f} s")
        if saved is not None:
            candidates.save(saved)
    return candidates


def digit_accuracy() -> Any:
    """Keras accuracy over the samples that are digits: a candidate cut wrong ("no digit", all
    classes equally likely) has no right answer to count."""
    import tensorflow as tf

    class DigitAccuracy(tf.keras.metrics.Mean):  # type: ignore[misc]
        def update_state(self, y_true: Any, y_pred: Any, sample_weight: Any = None) -> Any:
            digit = tf.reduce_max(y_true, axis=-1) > 0.5
            right = tf.cast(tf.equal(tf.argmax(y_true, axis=-1), tf.argmax(y_pred, axis=-1)), tf.float32)
            return super().update_state(right, sample_weight=tf.cast(digit, tf.float32))

    return DigitAccuracy(name="accuracy")


def preset_with(name: str, **overrides: Any) -> Preset:
    """A named preset with some hyperparameters overridden (None means keep)."""
    changes = {k: v for k, v in overrides.items() if v is not None}
    return replace(PRESETS[name], **changes)


def hyperparameters(preset: Preset) -> dict[str, Any]:
    return asdict(preset)


def describe(preset: Preset) -> str:
    return json.dumps(hyperparameters(preset), sort_keys=True)


