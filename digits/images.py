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
import numpy.typing as npt
from PIL import Image, ImageOps, UnidentifiedImageError
from scipy import sparse

from digits.arrays import Box, Floats
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
    small = image if image.mode == "L" else image.convert("L")  # converting L to L only copied it (5 µs a digit)
    if small.width * small.height > MAX_WORK_PIXELS:  # a huge scan: shrunk while it is one byte a pixel
        small = small.reduce(math.ceil(math.sqrt(small.width * small.height / MAX_WORK_PIXELS)))
    grey = np.asarray(small, dtype=np.float32)
    return grey / 255.0


def normalise(grey: Floats) -> Floats:
    """Turn one greyscale digit into a 28 x 28 MNIST-style field (ink bright, in [0, 1])."""
    return normalise_with_box(grey)[0]


def normalise_with_box(grey: Floats) -> tuple[Floats, Box]:
    """`normalise`, and the ink's box (left, top, right, bottom) in the image's pixels."""
    found = normalise_many(grey[np.newaxis])[0]
    if isinstance(found, ImageError):
        raise found
    return found


def normalise_many(greys: Floats) -> list[tuple[Floats, Box] | ImageError]:
    """`normalise_with_box` for a stack of same-size digits (n, height, width), a blank one's
    ImageError in its place. One pass of NumPy over the whole stack: done a digit at a time, the
    overhead of some thirty small array calls was most of the time to normalise an MNIST digit."""
    greys = np.asarray(greys, dtype=np.float32)
    border = np.concatenate([greys[:, 0], greys[:, -1], greys[:, :, 0], greys[:, :, -1]], axis=1)
    background = medians(border)
    dark_paper = background > 0.5  # dark ink on light paper: flip to MNIST polarity
    greys = np.where(dark_paper[:, None, None], 1.0 - greys, greys)
    border = np.where(dark_paper[:, None], 1.0 - border, border)
    background = np.where(dark_paper, 1.0 - background, background)
    spread = border - border.mean(axis=1, keepdims=True)
    deviation = np.sqrt(np.einsum("ij,ij->i", spread, spread) / border.shape[1])
    noise_floor = np.minimum(0.25, 3.0 * deviation)  # 3 standard deviations
    ink = greys - background.astype(np.float32)[:, None, None]
    ink[ink <= noise_floor[:, None, None]] = 0.0
    peaks = ink.max(axis=(1, 2))
    boxes = ink_boxes(ink)
    blank = peaks < MIN_CONTRAST
    crops = [fit_box(ink[i, top:bottom, left:right] / peaks[i])
             for i, (left, top, right, bottom) in enumerate(boxes) if not blank[i]]
    fields = iter(centre_many(crops))
    return [ImageError("no digits found: the image is blank") if blank[i] else (next(fields), box)
            for i, box in enumerate(boxes)]


def medians(values: Floats) -> npt.NDArray[np.float64]:
    """The median of each row, as np.median gives it, without its overhead on a few hundred pixels."""
    ordered = np.sort(values, axis=1)
    middle = values.shape[1] // 2
    if values.shape[1] % 2:
        return ordered[:, middle].astype(np.float64)
    return (ordered[:, middle - 1] + ordered[:, middle]).astype(np.float64) / 2


def ink_boxes(ink: Floats, strong: float = 0.3, margin: int = 2) -> list[Box]:
    """The ink's bounding box in each of a stack of images (n, height, width): strong strokes,
    grown by up to `margin` pixels of fainter ink. Using strong strokes keeps stray noise far from
    the digit out of the box; the margin brings back the anti-aliased edges, so an MNIST digit
    keeps its exact box."""
    count, height, width = ink.shape
    strong_ink = ink >= strong * ink.max(axis=(1, 2), keepdims=True)
    rows, cols = strong_ink.any(axis=2), strong_ink.any(axis=1)
    top, bottom = rows.argmax(axis=1), height - rows[:, ::-1].argmax(axis=1)
    left, right = cols.argmax(axis=1), width - cols[:, ::-1].argmax(axis=1)
    any_ink, image = ink != 0, np.arange(count)
    row_numbers, col_numbers = np.arange(height), np.arange(width)
    for _ in range(margin):  # each side grows by a pixel if the row or column beyond it has ink within the box
        within = (col_numbers >= left[:, None]) & (col_numbers < right[:, None])
        row_ink = (any_ink & within[:, None, :]).any(axis=2)
        top = top - ((top > 0) & row_ink[image, np.maximum(top - 1, 0)])
        bottom = bottom + ((bottom < height) & row_ink[image, np.minimum(bottom, height - 1)])
        within = (row_numbers >= top[:, None]) & (row_numbers < bottom[:, None])
        col_ink = (any_ink & within[:, :, None]).any(axis=1)
        left = left - ((left > 0) & col_ink[image, np.maximum(left - 1, 0)])
        right = right + ((right < width) & col_ink[image, np.minimum(right, width - 1)])
    return [(int(a), int(b), int(c), int(d)) for a, b, c, d in zip(left, top, right, bottom, strict=True)]


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
    field: Floats = centre_many([digit])[0]
    return field


def centre_many(digits: list[Floats]) -> Floats:
    """`centre` for many digits of at most BOX x BOX pixels at once: (n, 28, 28). Centres of mass
    are summed in float64 from a BOX x BOX stack, so one digit lands where it would in any batch."""
    stack = np.zeros((len(digits), BOX, BOX), dtype=np.float32)
    for index, digit in enumerate(digits):
        stack[index, :digit.shape[0], :digit.shape[1]] = digit
    rows, cols = stack.sum(axis=2, dtype=np.float64), stack.sum(axis=1, dtype=np.float64)
    totals = rows.sum(axis=1)
    com_y, com_x = (rows * np.arange(BOX)).sum(axis=1) / totals, (cols * np.arange(BOX)).sum(axis=1) / totals
    fields = np.zeros((len(digits), FIELD, FIELD), dtype=np.float32)
    for index, digit in enumerate(digits):
        height, width = digit.shape
        top = min(max(round(FIELD / 2 - float(com_y[index])), 0), FIELD - height)
        left = min(max(round(FIELD / 2 - float(com_x[index])), 0), FIELD - width)
        fields[index, top:top + height, left:left + width] = digit
    return fields


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
