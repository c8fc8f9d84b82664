"""Training a strip reader (digits/sweep.py): a network swept across a crop's strip of ink.

The training set is the strips of generated postal-code crops (trainer.synth) of MNIST
*training* digits, in every format the reader meets (4, 5, 6 and 5+4 digits, five-digit codes
three times as often) and a few light-on-dark; the epoch kept is the one that reads most whole
codes among crops of *validation* digits, read as workers read them (at every phase). The loss
is CTC (connectionist temporal classification): the network learns where each symbol is from
the code alone, so no crop needs a cut. Strips are batched by width (each batch padded to its
widest with blank columns, as a strip's margin is), which keeps a batch's padding small. With
`distort`, each batch is bent afresh every epoch (distort_strips): the reader then no longer
learns its 200,000 strips by heart (training loss 0.39 after 8 epochs instead of 0.008), but it
read no more validation codes (93.9% against 94.2%) in 1.6 times the training time, so the
recipe leaves it off (docs/training.md). Dropout (recipe.dropout) regularises it instead, at no
cost in time.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import numpy.typing as npt
from scipy import ndimage

from digits.arrays import Bytes
from digits.images import ImageError
from digits.ink import clean
from digits.manifest import Layer
from digits.strip import STRIP_HEIGHT, strip_of
from digits.sweep import BLANK, Frames, at_phases, most_probable, symbols
from trainer.synth import make_crop

FORMATS = ("4", "5", "5", "5", "6", "5+4")  # drawn uniformly: five-digit codes half the time
INVERTED_SHARE = 0.05  # light ink on dark paper
PART = 5000  # crops generated per task, each task seeded on its own
BATCH = 32
WIDTH_STEP = 4  # a batch is padded to a multiple of every recipe's frame step
FRAME_STEPS = {4: ((2, 2), (7, 7)), 2: ((2, 1), (7, 13))}  # columns between frames: second pool, last window
ELASTIC_ALPHA, ELASTIC_SIGMA = 34.0, 4.5  # pixels: the digit trainer's elastic field (trainer.distort) ...
STRETCH = 0.12  # ... each strip's ink wider or narrower by up to this share, about its centre ...
STROKE = 0.3  # ... and a bolder or finer pen: up to this share of a 3 x 3 grey dilation or erosion

Strips = list[tuple[Bytes, str]]  # each crop's strip (uint8, ink 255) and its code


@dataclass(frozen=True)
class StripRecipe:
    """Everything that decides a strip reader, so that the same recipe trains the same network."""

    crops: int = 100_000
    epochs: int = 6
    learning_rate: float = 2e-3
    channels: tuple[int, int, int, int] = (32, 64, 64, 256)  # conv 3x3, pool, conv 3x3, pool, conv 3x3, across
    frame_step: int = 4  # strip columns between frames: 4 or 2 (network)
    seed: int = 0
    validation_crops: int = 1000  # crops of validation digits that choose the epoch
    distort: bool = False  # bend each training batch afresh every epoch (distort_strips)
    dropout: float = 0.3  # share of the across-the-strip features dropped in training
    workers: int = field(default_factory=lambda: os.cpu_count() or 1)  # processes generating crops


@dataclass(frozen=True)
class TrainedStrips:
    files: dict[str, bytes]
    layers: list[Layer]
    history: dict[str, list[float]]  # per epoch: loss, validation whole codes
    best_epoch: int
    validation_whole: float
    temperature: float  # the last layer's logits divided by this (trainer.calibrate)
    seconds: float  # generating, training and calibrating


def generate_strips(images: Bytes, labels: Bytes, count: int, seed: int, formats: tuple[str, ...] = FORMATS,
                    workers: int = 1) -> Strips:
    """The strips of `count` generated crops, in PART-sized tasks over `workers` processes; the same
    seed gives the same strips (crops whose ink the strip maker refuses are left out)."""
    tasks = [(images, labels, min(PART, count - start), seed * 1_000_003 + start, formats)
             for start in range(0, count, PART)]
    if workers <= 1:
        return [strip for task in tasks for strip in strip_task(task)]
    with ProcessPoolExecutor(workers) as pool:
        return [strip for part in pool.map(strip_task, tasks) for strip in part]


def validation_strips(images: Bytes, labels: Bytes, count: int, seed: int, workers: int = 1) -> Strips:
    """The strips of 5-digit crops of validation digits that choose a recipe's epoch and its
    temperature (trainer.calibrate): the same for the same recipe seed."""
    return generate_strips(images, labels, count, seed + 1, formats=("5",), workers=workers)


def strip_task(task: tuple[Bytes, Bytes, int, int, tuple[str, ...]]) -> Strips:
    images, labels, count, seed, formats = task
    rng = np.random.default_rng(seed)
    found: Strips = []
    for _ in range(count):
        crop = make_crop(rng, images, labels, formats[int(rng.integers(len(formats)))],
                         inverted=bool(rng.random() < INVERTED_SHARE))
        try:
            pixels = strip_of(clean(crop.image.astype(np.float32) / 255.0)).pixels
        except ImageError:
            continue
        found.append((np.round(pixels * 255.0).astype(np.uint8), crop.code))
    return found


def batches(strips: Strips, rng: np.random.Generator | None) -> Iterator[tuple[npt.NDArray[np.float32], list[int]]]:
    """Batches of strips of about one width, padded with blank columns; shuffled with rng."""
    order = sorted(range(len(strips)), key=lambda i: strips[i][0].shape[1])
    groups = [order[i:i + BATCH] for i in range(0, len(order), BATCH)]
    if rng is not None:
        rng.shuffle(groups)
    for group in groups:
        width = -(-max(strips[i][0].shape[1] for i in group) // WIDTH_STEP) * WIDTH_STEP
        x = np.zeros((len(group), STRIP_HEIGHT, width, 1), dtype=np.float32)
        for row, i in enumerate(group):
            x[row, :, :strips[i][0].shape[1], 0] = strips[i][0] / np.float32(255.0)
        yield x, group


def distort_strips(x: npt.NDArray[np.float32], rng: np.random.Generator) -> npt.NDArray[np.float32]:
    """A (batch, STRIP_HEIGHT, width, 1) batch of strips, each resampled through a random smooth
    displacement field and stretched about its ink's centre, then drawn with a random pen
    (Simard, Steinkraus & Platt, 2003, as trainer.distort bends single digits)."""
    count, height, width, _ = x.shape
    noise = rng.uniform(-1.0, 1.0, (2, count, height, width)).astype(np.float32)
    field = ndimage.gaussian_filter1d(noise, ELASTIC_SIGMA, axis=3, truncate=3.0)
    field = ndimage.gaussian_filter1d(field, ELASTIC_SIGMA, axis=2, truncate=3.0, mode="constant") * ELASTIC_ALPHA
    inked = x[..., 0].max(axis=1) > 0  # (batch, width): the columns with ink
    first, last = inked.argmax(axis=1), width - 1 - inked[:, ::-1].argmax(axis=1)
    centres = ((first + last) / 2).astype(np.float32)[:, None, None]
    stretch = (1 + rng.uniform(-STRETCH, STRETCH, (count, 1, 1))).astype(np.float32)
    columns = (np.arange(width, dtype=np.float32) - centres) / stretch + centres + field[1]
    rows = np.arange(height, dtype=np.float32)[:, None] + field[0]
    strips = np.broadcast_to(np.arange(count, dtype=np.float32)[:, None, None], rows.shape)
    out = ndimage.map_coordinates(x[..., 0], [strips, rows, columns], order=1, mode="constant")
    pen = rng.uniform(-STROKE, STROKE, (count, 1, 1)).astype(np.float32)
    bolder, finer = ndimage.maximum_filter(out, size=(1, 3, 3)), ndimage.minimum_filter(out, size=(1, 3, 3))
    out += np.maximum(pen, 0) * (bolder - out) + np.maximum(-pen, 0) * (finer - out)
    clipped: npt.NDArray[np.float32] = np.clip(out, 0.0, 1.0)[..., None]
    return clipped


def network(recipe: StripRecipe) -> Any:
    """Two 3x3 convolutions with pools and a third after them, then a convolution that spans the
    strip's height (its 7 rows of features) and about two digits' width (28 strip columns), its
    features dropped at `dropout` in training, and a 1x1 one over the symbols. The third
    convolution and the dropout read 0.8 points more validation codes whole than without
    (docs/training.md) for a fifth more multiply-adds. A frame every 4 columns: two 2x2
    pools and a 7x7 window. A frame every 2: the second pool 2x1 and a 7x13 window, the same
    width in pixels; it leaves out fewer digits close to their neighbour (docs/benchmarks.md),
    for about twice the last convolution's work."""
    import tensorflow as tf

    if recipe.frame_step not in FRAME_STEPS:
        raise ValueError(f"frame step {recipe.frame_step}: a strip reader has a frame every "
                         f"{' or '.join(map(str, FRAME_STEPS))} columns")
    second_pool, last_window = FRAME_STEPS[recipe.frame_step]
    first, second, third, across = recipe.channels
    layers = tf.keras.layers
    return tf.keras.Sequential([
        tf.keras.Input((STRIP_HEIGHT, None, 1)),
        layers.Conv2D(first, 3, padding="same", activation="relu"),
        layers.MaxPooling2D(2),
        layers.Conv2D(second, 3, padding="same", activation="relu"),
        layers.MaxPooling2D(second_pool),
        layers.Conv2D(third, 3, padding="same", activation="relu"),
        layers.Conv2D(across, last_window, padding="valid", activation="relu"),
        layers.Dropout(recipe.dropout),
        layers.Conv2D(BLANK + 1, 1),
    ])


def whole_codes(net: Any, strips: Strips, frame_step: int) -> float:
    """The share of strips read right as workers read them: at every phase of the frame grid
    (each batch moved right by 0 ... frame_step - 1 blank columns), the most probable of the
    phases' best paths (digits.sweep.read_strip)."""
    right = 0
    for x, group in batches(strips, None):
        logits = net(at_phases(x, frame_step), training=False)[:, 0].numpy().astype(np.float64)
        log_probabilities = logits - np.logaddexp.reduce(logits, axis=-1, keepdims=True)
        phases = log_probabilities.reshape(frame_step, len(group), *log_probabilities.shape[1:])
        for row, i in enumerate(group):
            found = most_probable([Frames(phase[row], np.zeros(len(phase[row]))) for phase in phases], None)
            right += [symbol for symbol, _ in found[2]] == symbols(strips[i][1])
    return right / max(len(strips), 1)


def train_strips(train: Strips, validation: Strips, recipe: StripRecipe,
                 report: Callable[[str], None] = print) -> tuple[Any, dict[str, list[float]], int]:
    """Train with CTC and Adam on a cosine schedule; the weights of the epoch that read most
    validation codes whole, the history, and that epoch (from 1)."""
    import tensorflow as tf

    tf.keras.utils.set_random_seed(recipe.seed)
    tf.config.experimental.enable_op_determinism()
    net = network(recipe)
    steps = recipe.epochs * -(-len(train) // BATCH)
    optimizer = tf.keras.optimizers.Adam(tf.keras.optimizers.schedules.CosineDecay(recipe.learning_rate, steps,
                                                                                   alpha=0.02))

    def one_step(x: Any, y: Any) -> Any:
        with tf.GradientTape() as tape:
            logits = net(x, training=True)[:, 0]
            frames = tf.fill([tf.shape(logits)[0]], tf.shape(logits)[1])
            loss = tf.reduce_mean(tf.nn.ctc_loss(y, logits, None, frames, logits_time_major=False,
                                                 blank_index=BLANK))
        optimizer.apply_gradients(zip(tape.gradient(loss, net.trainable_variables), net.trainable_variables,
                                      strict=True))
        return loss

    step = tf.function(one_step, input_signature=[tf.TensorSpec((None, STRIP_HEIGHT, None, 1), tf.float32),
                                                  tf.SparseTensorSpec(None, tf.int32)])

    def sparse(group: list[int]) -> Any:
        codes = [symbols(train[i][1]) for i in group]
        return tf.RaggedTensor.from_row_lengths(tf.constant([s for c in codes for s in c], tf.int32),
                                                [len(c) for c in codes]).to_sparse()

    rng = np.random.default_rng(recipe.seed)
    history: dict[str, list[float]] = {"loss": [], "validation_whole": []}
    best, best_epoch, best_weights = -1.0, 0, net.get_weights()
    for epoch in range(1, recipe.epochs + 1):
        started = time.perf_counter()
        losses = [float(step(tf.constant(distort_strips(x, rng) if recipe.distort else x), sparse(group)))
                  for x, group in batches(train, rng)]
        whole = whole_codes(net, validation, recipe.frame_step)
        history["loss"].append(round(float(np.mean(losses)), 5))
        history["validation_whole"].append(round(whole, 5))
        report(f"epoch {epoch}/{recipe.epochs}: loss {np.mean(losses):.4f}, validation codes read whole "
               f"{whole:.2%} ({time.perf_counter() - started:.0f} s)")
        if whole > best:
            best, best_epoch, best_weights = whole, epoch, net.get_weights()
    net.set_weights(best_weights)
    return net, history, best_epoch


def fit_strips(train_images: Bytes, train_labels: Bytes, validation_images: Bytes, validation_labels: Bytes,
               recipe: StripRecipe, report: Callable[[str], None] = print) -> TrainedStrips:
    """Generate the strips, train, export the reader's layer files (strip1.csv, ...) and
    calibrate its confidence on the validation strips (trainer.calibrate)."""
    from trainer.calibrate import calibrate, loss_summary
    from trainer.train import export_layers

    started = time.perf_counter()
    train = generate_strips(train_images, train_labels, recipe.crops, recipe.seed, workers=recipe.workers)
    validation = validation_strips(validation_images, validation_labels, recipe.validation_crops, recipe.seed,
                                   recipe.workers)
    report(f"{len(train)} training strips, {len(validation)} validation strips "
           f"({time.perf_counter() - started:.0f} s)")
    net, history, best_epoch = train_strips(train, validation, recipe, report)
    files, layers = export_layers(net)
    renamed = {name: f"strip{number}.csv" for number, name in enumerate(files, start=1)}
    layers = [replace(layer, file=renamed[layer.file]) if layer.file else layer for layer in layers]
    calibrated, temperature, losses = calibrate({renamed[name]: data for name, data in files.items()}, layers,
                                                validation)
    report(loss_summary(temperature, losses))
    return TrainedStrips(calibrated, layers, history, best_epoch, history["validation_whole"][best_epoch - 1],
                         temperature, time.perf_counter() - started)
