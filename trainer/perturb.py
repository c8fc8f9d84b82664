"""Perturbed copies of the MNIST test set, to measure how a model copes with real scans.

Each perturbation maps (n, 784) uint8 digits to (n, 784) uint8 digits, vectorised over the
whole set: thicker and thinner strokes, slant, scale, blur, scanner noise, off-centre placement.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import numpy.typing as npt

from digits.arrays import Bytes
from digits.network import Recogniser

SIDE = 28
Grid = npt.NDArray[np.float64]  # images as (n, 28, 28) float64, for resampling


def as_grid(images: Bytes) -> Grid:
    return images.reshape(-1, SIDE, SIDE).astype(np.float64)


def as_bytes(grid: Grid) -> Bytes:
    return np.clip(np.rint(grid), 0, 255).astype(np.uint8).reshape(-1, SIDE * SIDE)


def neighbourhood(grid: Grid) -> list[Grid]:
    """The 3 x 3 neighbours of every pixel (zero outside), as 9 shifted copies."""
    padded = np.pad(grid, ((0, 0), (1, 1), (1, 1)))
    return [padded[:, dy:dy + SIDE, dx:dx + SIDE] for dy in range(3) for dx in range(3)]


def thicker(images: Bytes) -> Bytes:
    return as_bytes(np.max(neighbourhood(as_grid(images)), axis=0))


def thinner(images: Bytes) -> Bytes:
    return as_bytes(np.min(neighbourhood(as_grid(images)), axis=0))


def warp(images: Bytes, matrix: Grid, shift: Grid | None = None) -> Bytes:
    """Each output pixel p reads the input at matrix @ (p - centre) + centre - shift, bilinearly."""
    grid = as_grid(images)
    n = len(grid)
    centre = (SIDE - 1) / 2
    ys, xs = np.mgrid[0:SIDE, 0:SIDE].astype(np.float64) - centre
    src_x = matrix[0, 0] * xs + matrix[0, 1] * ys + centre
    src_y = matrix[1, 0] * xs + matrix[1, 1] * ys + centre
    src_x = np.broadcast_to(src_x, (n, SIDE, SIDE)).copy()
    src_y = np.broadcast_to(src_y, (n, SIDE, SIDE)).copy()
    if shift is not None:
        src_x -= shift[:, 0, None, None]
        src_y -= shift[:, 1, None, None]
    padded = np.pad(grid, ((0, 0), (1, 1), (1, 1)))
    x = np.clip(src_x + 1, 0, SIDE + 1 - 1e-6)
    y = np.clip(src_y + 1, 0, SIDE + 1 - 1e-6)
    x0, y0 = np.floor(x).astype(np.int64), np.floor(y).astype(np.int64)
    x1, y1 = np.minimum(x0 + 1, SIDE + 1), np.minimum(y0 + 1, SIDE + 1)
    wx, wy = x - x0, y - y0
    image = np.arange(n)[:, None, None]
    top = padded[image, y0, x0] * (1 - wx) + padded[image, y0, x1] * wx
    bottom = padded[image, y1, x0] * (1 - wx) + padded[image, y1, x1] * wx
    return as_bytes(top * (1 - wy) + bottom * wy)


def slant(degrees: float) -> Callable[[Bytes], Bytes]:
    """Italic-like shear: the top of the digit leans right for positive angles."""
    t = math.tan(math.radians(degrees))
    return lambda images: warp(images, np.array([[1.0, t], [0.0, 1.0]]))


def scale(factor: float) -> Callable[[Bytes], Bytes]:
    return lambda images: warp(images, np.eye(2) / factor)


def blur(images: Bytes, sigma: float = 1.0) -> Bytes:
    radius = 3
    x = np.arange(-radius, radius + 1)
    kernel = np.exp(-(x**2) / (2 * sigma**2))
    kernel /= kernel.sum()
    padded = np.pad(as_grid(images), ((0, 0), (radius, radius), (radius, radius)))
    rows = sum(k * padded[:, :, i:i + SIDE] for i, k in enumerate(kernel))
    return as_bytes(sum(k * rows[:, i:i + SIDE, :] for i, k in enumerate(kernel)))


def noise(images: Bytes, sigma: float = 0.2 * 255, seed: int = 0) -> Bytes:
    rng = np.random.default_rng(seed)
    return as_bytes(as_grid(images) + rng.normal(0.0, sigma, (len(images), SIDE, SIDE)))


def off_centre(images: Bytes, pixels: float = 4.0, seed: int = 0) -> Bytes:
    """Moved `pixels` away from the centre of mass, in a random direction per digit."""
    angle = np.random.default_rng(seed).uniform(0, 2 * math.pi, len(images))
    shift = pixels * np.stack([np.cos(angle), np.sin(angle)], axis=1)
    return warp(images, np.eye(2), shift)


PERTURBATIONS: dict[str, Callable[[Bytes], Bytes]] = {
    "none": lambda images: images,
    "stroke +1 px": thicker,
    "stroke -1 px": thinner,
    "slant +15 deg": slant(15),
    "slant -15 deg": slant(-15),
    "scale 0.8": scale(0.8),
    "scale 1.2": scale(1.2),
    "blur (sigma 1 px)": blur,
    "noise (sigma 0.2)": noise,
    "off-centre 4 px": off_centre,
}


def robustness(models: dict[str, Recogniser], images: Bytes, labels: Bytes) -> dict[str, dict[str, float]]:
    """Test accuracy of each model under each perturbation: {perturbation: {model: accuracy}}."""
    table: dict[str, dict[str, float]] = {}
    for name, perturb in PERTURBATIONS.items():
        pixels = perturb(images).astype(np.float32) / 255.0
        table[name] = {label: float((m.probabilities(pixels).argmax(axis=1) == labels).mean())
                       for label, m in models.items()}
    return table
