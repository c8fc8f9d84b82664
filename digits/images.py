"""Decoding scanned-digit images and normalising them the way MNIST was made.

MNIST digits were size-normalised so that the ink's bounding box fits 20 x 20 (keeping the
aspect ratio, anti-aliased) and then centred by centre of mass in a 28 x 28 field, ink bright
on a dark background. Any input (any size, colour or grey, dark ink on light paper or the
reverse) is brought to exactly that form before the model sees it.
"""

from __future__ import annotations

import functools
import io
import math
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError
from scipy import sparse

from digits.arrays import Floats
from digits.defaults import MAX_DECODED_BYTES, MAX_PIXELS, MAX_WORK_PIXELS

FIELD = 28
BOX = 20
MIN_CONTRAST = 0.2  # ink must differ from the paper by this much of the full range, or the image is blank
EXIF_FORMATS = frozenset({"JPEG", "MPO", "TIFF", "WEBP"})  # where an orientation tag is common
Image.MAX_IMAGE_PIXELS = None  # decode() checks its own pixel limit before any pixel is decoded


class ImageError(ValueError):
    """An image could not be read or holds no digit; the message says why."""


def decode(data: bytes, max_pixels: int = MAX_PIXELS) -> Floats:
    """Decode image bytes into greyscale float32 in [0, 1] (first frame, EXIF orientation applied)."""
    if not data:
        raise ImageError("empty file (0 bytes)")
    try:
        image = Image.open(io.BytesIO(data))
        width, height = image.size
        if width * height > max_pixels:
            raise ImageError(
                f"image is {width} x {height} = {width * height} pixels, over the limit of {max_pixels}"
            )
        decoded = width * height * len(image.getbands()) * (2 if ";16" in image.mode else 1)
        if decoded > MAX_DECODED_BYTES:
            raise ImageError(f"image is {width} x {height} {image.mode}: {decoded} bytes decoded, over the limit "
                             f"of {MAX_DECODED_BYTES}")
        image.seek(0)
        image.load()
        if image.format in EXIF_FORMATS or "exif" in image.info:
            image = ImageOps.exif_transpose(image)  # type: ignore[assignment]
    except ImageError:
        raise
    except UnidentifiedImageError:
        raise ImageError("not a recognised image format") from None
    except (OSError, SyntaxError, ValueError, EOFError, Image.DecompressionBombError) as exc:
        raise ImageError(f"cannot decode image: {exc}") from None
    return to_grey(image)


def to_grey(image: Image.Image) -> Floats:
    """Greyscale in [0, 1]; transparent areas become paper-white, 16-bit depth is kept."""
    if image.mode in ("I;16", "I;16B", "I;16L", "I"):
        array = np.asarray(image, dtype=np.float32)
        peak = 65535.0 if array.max() > 255 else 255.0
        clipped: Floats = np.clip(array / peak, 0.0, 1.0)
        return clipped
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        paper = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        image = Image.alpha_composite(paper, rgba)
    small = image.convert("L")
    if small.width * small.height > MAX_WORK_PIXELS:  # a huge scan: shrunk while it is one byte a pixel
        small = small.reduce(math.ceil(math.sqrt(small.width * small.height / MAX_WORK_PIXELS)))
    grey = np.asarray(small, dtype=np.float32)
    return grey / 255.0


def normalise(grey: Floats) -> Floats:
    """Turn one greyscale digit into a 28 x 28 MNIST-style field (ink bright, in [0, 1])."""
    return normalise_with_box(grey)[0]


def normalise_with_box(grey: Floats) -> tuple[Floats, tuple[int, int, int, int]]:
    """`normalise`, and the ink's box (left, top, right, bottom) in the image's pixels."""
    border = np.concatenate([grey[0], grey[-1], grey[:, 0], grey[:, -1]])
    background = median(border)
    if background > 0.5:  # dark ink on light paper: flip to MNIST polarity
        grey = 1.0 - grey
        border = 1.0 - border
        background = 1.0 - background
    spread = border - border.mean()
    noise_floor = min(0.25, 3.0 * float(np.sqrt(spread @ spread / len(spread))))  # 3 standard deviations
    ink = grey - background
    ink[ink <= noise_floor] = 0.0
    if ink.max() < MIN_CONTRAST:
        raise ImageError("no digits found: the image is blank")
    top, bottom, left, right = ink_box(ink)
    crop = ink[top:bottom, left:right]
    crop = crop / crop.max()
    return centre(fit_box(crop)), (left, top, right, bottom)


def median(values: Floats) -> float:
    """np.median without its overhead, which dominates on a few hundred border pixels."""
    ordered = np.sort(values)
    middle = len(ordered) // 2
    return float(ordered[middle]) if len(ordered) % 2 else float(ordered[middle - 1] + ordered[middle]) / 2


def ink_box(ink: Floats, strong: float = 0.3, margin: int = 2) -> tuple[int, int, int, int]:
    """Bounding box of the ink: strong strokes, grown by up to `margin` pixels of fainter ink.

    Using strong strokes keeps stray noise far from the digit out of the box; the margin
    brings back the anti-aliased edges, so an MNIST digit keeps its exact box.
    """
    rows, cols = np.nonzero(ink >= strong * ink.max())
    top, bottom, left, right = rows.min(), rows.max() + 1, cols.min(), cols.max() + 1
    for _ in range(margin):
        if top > 0 and ink[top - 1, left:right].any():
            top -= 1
        if bottom < ink.shape[0] and ink[bottom, left:right].any():
            bottom += 1
        if left > 0 and ink[top:bottom, left - 1].any():
            left -= 1
        if right < ink.shape[1] and ink[top:bottom, right].any():
            right += 1
    return int(top), int(bottom), int(left), int(right)


def fit_box(crop: Floats) -> Floats:
    """Scale the ink's bounding box so its longer side is 20 pixels, keeping the aspect ratio."""
    height, width = crop.shape
    scale = BOX / max(height, width)
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    if size == (width, height):
        return crop
    resized = Image.fromarray(crop.astype(np.float32), mode="F").resize(size, Image.Resampling.LANCZOS)
    return np.clip(np.asarray(resized, dtype=np.float32), 0.0, 1.0)


def centre(digit: Floats) -> Floats:
    """Place the digit in a 28 x 28 field so that its centre of mass lands on the centre."""
    height, width = digit.shape
    total = float(digit.sum())
    com_y = float(digit.sum(axis=1) @ np.arange(height, dtype=np.float32)) / total
    com_x = float(digit.sum(axis=0) @ np.arange(width, dtype=np.float32)) / total
    top = min(max(round(FIELD / 2 - com_y), 0), FIELD - height)
    left = min(max(round(FIELD / 2 - com_x), 0), FIELD - width)
    field = np.zeros((FIELD, FIELD), dtype=np.float32)
    field[top:top + height, left:left + width] = digit
    return field


@dataclass(frozen=True)
class View:
    """A normalised digit seen a little differently, about the field's centre (where `centre`
    puts its centre of mass): turned, scaled, sheared or moved, as its writer might as well
    have drawn it."""

    turn: float = 0.0  # degrees
    scale: float = 1.0
    shear: float = 0.0  # each column's ink moves up or down by this share of its distance from the centre
    right: float = 0.0  # pixels
    down: float = 0.0  # pixels


def viewed(fields: Floats, view: View) -> Floats:
    """(n, 784) fields as seen in `view` (bilinear; beyond the field is paper)."""
    return np.asarray((resampling(view) @ fields.T).T, dtype=np.float32)


@functools.cache
def resampling(view: View) -> sparse.csr_array:
    """The view as a (784, 784) matrix: each pixel of the view mixes the four pixels of the
    field around the point it comes from."""
    turn = np.deg2rad(view.turn)
    back = (np.array([[np.cos(turn), -np.sin(turn)], [np.sin(turn), np.cos(turn)]])
            @ np.array([[1.0, view.shear], [0.0, 1.0]]) / view.scale)  # a (row, column) offset -> where it comes from
    rows, cols = np.indices((FIELD, FIELD)).reshape(2, -1)
    middle = FIELD / 2
    source = middle + back @ np.stack([rows - middle, cols - middle]) - np.array([[view.down], [view.right]])
    low = np.floor(source).astype(np.intp)
    share = source - low
    outs, ins, weights = [], [], []
    for down in (0, 1):
        for right in (0, 1):
            row, col = low[0] + down, low[1] + right
            weight = (share[0] if down else 1 - share[0]) * (share[1] if right else 1 - share[1])
            inside = (row >= 0) & (row < FIELD) & (col >= 0) & (col < FIELD) & (weight > 0)
            outs.append(np.flatnonzero(inside))
            ins.append(row[inside] * FIELD + col[inside])
            weights.append(weight[inside])
    return sparse.csr_array((np.concatenate(weights).astype(np.float32), (np.concatenate(outs), np.concatenate(ins))),
                            shape=(FIELD * FIELD, FIELD * FIELD))


def prepare(data: bytes, max_pixels: int = MAX_PIXELS) -> Floats:
    """Bytes in, one 784-vector out, ready for the model."""
    return normalise(decode(data, max_pixels)).reshape(-1)
