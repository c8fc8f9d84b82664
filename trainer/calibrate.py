"""Calibrating a strip reader: the confidence of its codes made honest on validation crops.

Trained with CTC until it knows its 200,000 strips by heart (training loss 0.008), a strip reader
is over 0.9 sure of half the codes it reads wrong (of validation crops), so a review threshold
means less for it than for the digit model. Temperature scaling (Guo, Pleiss, Sun and
Weinberger, 2017) divides the last layer's logits by one number, the temperature, chosen among
TEMPERATURES to minimise -log P(true code | frames) over strips of *validation* digits. Dividing
the last layer's bias row and weights by it does the same, so the files stay in the theta
format and the workers are unchanged. The codes read do not change (each frame's best symbol
stays the best); their confidence does.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from digits.arrays import Bytes, Floats
from digits.manifest import Layer
from digits.sweep import StripReader, code_probability, load_strip_reader, symbols
from digits.theta import parse_theta, to_csv

TEMPERATURES = tuple(round(0.5 + 0.1 * step, 1) for step in range(36))  # 0.5 to 4.0


def code_loss(phases: list[npt.NDArray[np.float32]], codes: list[list[int]], temperature: float) -> float:
    """The mean of -log P(code | strip) over strips, each strip's frames (phases, frames, symbols)
    with their logits divided by the temperature: code_probability, as workers read."""
    total = 0.0
    for frames, code in zip(phases, codes, strict=True):
        scaled = frames.astype(np.float64) / temperature
        scaled -= np.logaddexp.reduce(scaled, axis=-1, keepdims=True)
        total -= np.log(max(code_probability(scaled, code), 1e-300))
    return total / max(len(phases), 1)


def choose_temperature(reader: StripReader, strips: list[tuple[Floats, list[int]]]) -> tuple[float, dict[float, float]]:
    """The temperature of least code loss on the strips ((STRIP_HEIGHT, width) pixels in 0-1 and
    their codes' symbols), and the loss at each one tried."""
    phases = [np.stack([frames.log_probabilities for frames in reader.phases(pixels)]) for pixels, _ in strips]
    codes = [code for _, code in strips]
    losses = {temperature: code_loss(phases, codes, temperature) for temperature in TEMPERATURES}
    return min(losses, key=lambda temperature: losses[temperature]), losses


def loss_summary(temperature: float, losses: dict[float, float]) -> str:
    """What calibrating did, for the trainer's output: the temperature and the code loss before and after."""
    return (f"temperature {temperature}: the last strip layer's logits divided by it (code loss on the validation "
            f"strips {losses[1.0]:.3f} at 1.0, {losses[temperature]:.3f} now)")


def cooled(layer_file: bytes, temperature: float, where: str) -> bytes:
    """A layer file (bias row, then weights) with every value divided by the temperature."""
    return to_csv(parse_theta(layer_file, where) / temperature)


def calibrate(files: dict[str, bytes], strip_layers: list[Layer], validation: list[tuple[Bytes, str]]
              ) -> tuple[dict[str, bytes], float, dict[float, float]]:
    """A strip reader's files with its last layer cooled by the temperature chosen on the
    validation strips (uint8 pixels, ink 255, and their codes); the temperature and each loss."""
    reader = load_strip_reader(files, {"strip_layers": [layer.as_json() for layer in strip_layers]}, "calibrating")
    assert reader is not None
    strips = [((pixels / 255.0).astype(np.float32), symbols(code)) for pixels, code in validation]
    temperature, losses = choose_temperature(reader, strips)
    last = strip_layers[-1].file
    assert last is not None
    return {**files, last: cooled(files[last], temperature, last)}, temperature, losses
