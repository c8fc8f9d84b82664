"""N-layer models in the theta contract, and the one way to load any version's files.

Each weighted layer is one CSV in the seed's format: row 0 is the bias, then the weight matrix.
A convolution's matrix is its im2col form, (kernel_h * kernel_w * c_in) rows in (dy, dx, channel)
order by c_out columns: Keras' (kh, kw, c_in, c_out) kernel reshaped. Digits enter as 28x28x1
pixels in [0, 1]; a dense layer after an image flattens it in (row, column, channel) order, as
Keras' Flatten does. The manifest's `layers` gives the order and the operations
(digits/manifest.py); without it, a version is the seed's pair and loads as `Model`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from digits.arrays import Floats
from digits.defaults import BLOCK_FLOATS, MAX_FLOATS_PER_DIGIT, MAX_MACS_PER_DIGIT
from digits.manifest import THETA_FILES, Layer, layer_specs, model_files, parse_manifest, window_name
from digits.theta import N_CLASSES, N_INPUT, Model, ThetaError, parse_pair, parse_theta, read_files

SIDE = 28  # digits are SIDE x SIDE x 1


class Recogniser(Protocol):
    """What a worker serves: probabilities of the 10 classes for a batch of 784-pixel digits."""

    @property
    def architecture(self) -> str: ...

    def probabilities(self, pixels: npt.NDArray[np.floating[Any]]) -> Floats: ...


def load_model(files: dict[str, bytes], manifest: dict[str, Any] | None, where: str) -> Recogniser:
    """A version's model from its plain CSV files, checked whole: a model is never half-loaded.
    ThetaError names the file (as `where/name`) and the layer at fault."""
    if manifest is None or "layers" not in manifest:
        name1, name2 = THETA_FILES
        return Model(parse_pair(files[name1], files[name2], f"{where}/{name1}", f"{where}/{name2}"))
    layers = layer_specs(manifest["layers"], f"{where}/manifest.json")
    weights = {layer.file: parse_theta(files[layer.file], f"{where}/{layer.file}")
               for layer in layers if layer.file is not None}
    return Network.build(layers, weights, where)


def load_model_dir(directory: Path) -> Recogniser:
    """A model directory as `digits-trainer export` writes it (the bundled default is one): the
    files its manifest.json lists, or the seed's pair where it has no manifest."""
    manifest_path = directory / "manifest.json"
    manifest = parse_manifest(manifest_path.read_bytes(), str(manifest_path)) if manifest_path.is_file() else None
    return load_model(read_files(directory, model_files(manifest)), manifest, str(directory))


@dataclass(frozen=True)
class Step:
    """One layer ready to run: its settings, float32 weights (none for a pool) and output shape."""

    layer: Layer
    bias: Floats
    weights: Floats
    shape: tuple[int, int, int]  # (height, width, channels) out; a dense layer's is (1, 1, units)


class Network:
    """The forward pass of an N-layer model in float32: im2col and one matrix product per
    convolution, a reshape and a max per pool, one matrix product per dense layer."""

    def __init__(self, steps: list[Step], floats_per_digit: int) -> None:
        self.steps = steps
        self.block_rows = max(1, BLOCK_FLOATS // floats_per_digit)  # bounds the temporaries of any batch

    @classmethod
    def build(cls, layers: list[Layer], weights: dict[str, npt.NDArray[np.float64]], where: str) -> Network:
        """Chain the layers from 28x28x1 pixels to the 10 classes, refusing a matrix that does not
        fit its input, or a model costlier in time (MAX_MACS_PER_DIGIT) or memory
        (MAX_FLOATS_PER_DIGIT) than the limits, before any digit is read."""
        steps, macs, floats = chain(layers, weights, where, (SIDE, SIDE, 1))
        if steps[-1].shape != (1, 1, N_CLASSES):
            raise ThetaError(f"{where}/{layers[-1].file}, layer {len(layers)}: {steps[-1].shape[2]} outputs, "
                             f"the model must end in {N_CLASSES} classes")
        if macs > MAX_MACS_PER_DIGIT:
            raise ThetaError(f"{where}: {macs} multiply-adds per digit, over the limit of {MAX_MACS_PER_DIGIT}")
        if floats > MAX_FLOATS_PER_DIGIT:
            raise ThetaError(f"{where}: {floats} floats of temporaries per digit in one layer, over the limit "
                             f"of {MAX_FLOATS_PER_DIGIT}")
        return cls(steps, floats)

    @property
    def architecture(self) -> str:
        """E.g. "conv3x16-pool2-conv3x32-pool2-dense128-dense10"."""
        return "-".join(step_name(s) for s in self.steps)

    def probabilities(self, pixels: npt.NDArray[np.floating[Any]]) -> Floats:
        """Map an (n, 784) batch of pixels in [0, 1] to (n, 10) class probabilities, a block of
        digits at a time: a large batch costs no more memory than a block."""
        x = np.asarray(pixels, dtype=np.float32).reshape(-1, N_INPUT)
        probs: Floats = np.empty((len(x), N_CLASSES), dtype=np.float32)
        for start in range(0, len(x), self.block_rows):
            probs[start:start + self.block_rows] = self.forward(x[start:start + self.block_rows])
        return probs

    def forward(self, x: Floats) -> Floats:
        """The network itself, on one block of (rows, 784) float32 pixels."""
        return run(self.steps, x.reshape(-1, SIDE, SIDE, 1))


def chain(layers: list[Layer], weights: dict[str, npt.NDArray[np.float64]], where: str,
          shape: tuple[int, int, int]) -> tuple[list[Step], int, int]:
    """The layers ready to run on (height, width, channels) inputs, each matrix checked against
    the input it gets (ThetaError naming the file and the layer); with the multiply-adds of one
    input and the most float32 temporaries one layer makes for it."""
    steps, macs, floats = [], 0, shape[0] * shape[1] * shape[2]
    empty = np.zeros(0, dtype=np.float32)
    for number, layer in enumerate(layers, start=1):
        label = f"{where}/{layer.file}, layer {number} ({layer.op})" if layer.file else \
            f"{where}: layer {number} ({layer.op})"
        height, width, channels = shape
        if layer.op != "dense" and number > 1 and layers[number - 2].op == "dense":
            raise ThetaError(f"{label}: needs an image, and layer {number - 1} is dense")
        if layer.op == "maxpool":
            pool_h, pool_w = layer.size
            if pool_h > height or pool_w > width:
                raise ThetaError(f"{label}: a {pool_h}x{pool_w} pool does not fit its {height}x{width} input")
            shape = (height // pool_h, width // pool_w, channels)
            steps.append(Step(layer, empty, empty, shape))
            continue
        assert layer.file is not None  # a conv or dense layer (digits/manifest.py)
        matrix = weights[layer.file]
        if layer.op == "conv":
            kernel_h, kernel_w = layer.kernel
            inputs = kernel_h * kernel_w * channels
            out_h, out_w = conv_sides((height, width), layer)
            if min(out_h, out_w) < 1:
                raise ThetaError(f"{label}: a {kernel_h}x{kernel_w} kernel does not fit its {height}x{width} input")
            need = f"a {kernel_h}x{kernel_w} convolution of {channels} channel(s) needs"
            positions = out_h * out_w
        else:
            inputs = height * width * channels
            out_h, out_w, positions = 1, 1, 1
            need = f"a dense layer on {inputs} inputs needs"
        if matrix.shape[0] != inputs + 1:
            raise ThetaError(f"{label}: {matrix.shape[0]} rows, but {need} {inputs} weight rows under "
                             f"the bias row ({inputs + 1})")
        shape = (out_h, out_w, int(matrix.shape[1]))
        macs += positions * inputs * shape[2]
        floats = max(floats, positions * (inputs + 2 * shape[2]))  # im2col rows and the output, twice
        steps.append(Step(layer, matrix[0].astype(np.float32),
                          np.ascontiguousarray(matrix[1:], dtype=np.float32), shape))
    return steps, macs, floats


def run(steps: list[Step], a: Floats) -> Floats:
    """The forward pass itself, on a block of (n, height, width, channels) inputs: the shapes
    follow the input, so a strip of any width runs through the same convolutions."""
    for step in steps:
        if step.layer.op == "maxpool":
            a = max_pool(a, step.layer.size)
        elif step.layer.op == "conv":
            out_h, out_w = conv_sides(a.shape[1:3], step.layer)
            columns = im2col(a, step.layer.kernel, step.layer.stride, step.layer.padding)
            a = activate(columns @ step.weights, step.bias, step.layer.activation).reshape(
                len(a), out_h, out_w, step.shape[2])
        else:
            a = activate(a.reshape(len(a), -1) @ step.weights, step.bias, step.layer.activation)
    return a


def step_name(step: Step) -> str:
    """A layer as an architecture names it: "conv3x16" (a 3x3 window, 16 channels), "pool2", "dense128"."""
    if step.layer.op == "maxpool":
        return f"pool{window_name(step.layer.size)}"
    if step.layer.op == "conv":
        return f"conv{window_name(step.layer.kernel)}x{step.shape[2]}"
    return f"dense{step.shape[2]}"


def conv_sides(sides: tuple[int, ...], layer: Layer) -> tuple[int, int]:
    """A convolution's output (height, width), as Keras computes them."""
    if layer.padding == "same":
        return -(-sides[0] // layer.stride), -(-sides[1] // layer.stride)
    return ((sides[0] - layer.kernel[0]) // layer.stride + 1, (sides[1] - layer.kernel[1]) // layer.stride + 1)


def im2col(a: Floats, kernel: tuple[int, int], stride: int, padding: str) -> Floats:
    """Every (height, width) kernel window of (n, h, w, c) images as one row, in (dy, dx, c)
    order: stride tricks give the windows without copying; the reshape makes the one copy."""
    if padding == "same":  # as TensorFlow: the odd pixel of padding goes after
        pads = [(0, 0)]
        for side, window in zip(a.shape[1:3], kernel, strict=True):
            total = max((-(-side // stride) - 1) * stride + window - side, 0)
            pads.append((total // 2, total - total // 2))
        a = np.pad(a, [*pads, (0, 0)])
    windows = np.lib.stride_tricks.sliding_window_view(a, kernel, axis=(1, 2))[:, ::stride, ::stride]
    n, out_h, out_w = windows.shape[:3]
    columns: Floats = windows.transpose(0, 1, 2, 4, 5, 3).reshape(n * out_h * out_w, -1)
    return columns


def max_pool(a: Floats, size: tuple[int, int]) -> Floats:
    """Non-overlapping (height, width) maxima, a ragged edge dropped (Keras' "valid" pooling): the
    maximum of height * width strided views, 3x quicker than a max over reshaped axes."""
    size_h, size_w = size
    height, width = a.shape[1] // size_h * size_h, a.shape[2] // size_w * size_w
    pooled: Floats = a[:, 0:height:size_h, 0:width:size_w]
    for dy in range(size_h):
        for dx in range(size_w):
            if dy or dx:
                pooled = np.maximum(pooled, a[:, dy:height:size_h, dx:width:size_w])
    return pooled


def activate(z: Floats, bias: Floats, activation: str) -> Floats:
    """The activation of z + bias, in place: z is the matrix product just made."""
    z += bias
    if activation == "relu":
        np.maximum(z, np.float32(0.0), out=z)
    elif activation == "sigmoid":
        np.tanh(z * np.float32(0.5), out=z)  # the sigmoid, overflow-free: 0.5 + 0.5 tanh(z / 2)
        z *= np.float32(0.5)
        z += np.float32(0.5)
    elif activation == "softmax":
        z -= z.max(axis=1, keepdims=True)
        np.exp(z, out=z)
        z /= z.sum(axis=1, keepdims=True)
    return z
