"""A crop as one strip of ink, for a network swept across it (Matan, Burges, LeCun and Denker, 1992).

The crop's ink is cleaned as the cutter cleans it (paper, box lines and underlines, specks
removed: digits.ink), cut to the ink's bounding box, scaled so that the ink is INK_HEIGHT
pixels tall (as an MNIST digit is 20 pixels in its 28), and laid on a STRIP_HEIGHT-pixel strip
with MARGIN blank columns on either side. The strip keeps the grey ink, not the binarised mask:
faint strokes and anti-aliasing stay as they were scanned. A reading network is trained on the
strips of generated crops (trainer.strips) and reads a strip in one pass (digits.sweep).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TypeVar

import numpy as np
import numpy.typing as npt
from PIL import Image

from digits.arrays import Floats
from digits.images import ImageError
from digits.ink import Cleaned
from digits.masks import grow

STRIP_HEIGHT = 28  # pixels: the reading network's input height
INK_HEIGHT = 20  # the ink's height within it, centred
MARGIN = 12  # blank columns on either side: the network's window reaches this far past the ink
Columns = TypeVar("Columns", float, npt.NDArray[np.float64])  # a strip column, or an array of them
MAX_ASPECT = 24.0  # a strip's ink at most this many times wider than tall (a 10-digit ZIP+4 is ~10)


@dataclass(frozen=True)
class Strip:
    """A crop's strip, and where its ink was in the crop (to give each digit read a box there)."""

    pixels: Floats  # (STRIP_HEIGHT, width): bright ink on zero, the strongest at 1
    left: float  # the crop's column of the strip's first ink column ...
    step: float  # ... and how many crop columns a strip column spans
    top: int  # the ink's rows in the crop, bottom exclusive
    bottom: int

    def crop_column(self, column: Columns) -> Columns:
        """Where a strip column (or an array of them) lies in the crop."""
        return self.left + (column - MARGIN) * self.step


def strip_of(cleaned: Cleaned) -> Strip:
    """A crop's cleaned ink (digits.ink.clean) as a strip; ImageError for one too long to be a code."""
    ink, scale = cleaned.ink, cleaned.scale
    kept = np.zeros(ink.shape, dtype=bool)
    for piece in cleaned.pieces:
        left, top, right, bottom = piece.box
        kept[top:bottom, left:right] |= piece.mask
    kept = grow(kept)  # the faint edge of each stroke, which binarising left out
    rows, cols = np.flatnonzero(kept.any(axis=1)), np.flatnonzero(kept.any(axis=0))
    top, bottom, left, right = rows[0], rows[-1] + 1, cols[0], cols[-1] + 1
    height, width = bottom - top, right - left
    if width > MAX_ASPECT * height:
        raise ImageError(f"no code found: the ink is {width} x {height} pixels, over {MAX_ASPECT:g} times "
                         f"wider than tall")
    ink = np.where(kept, ink, 0.0)[top:bottom, left:right].astype(np.float32)
    scaled_width = max(1, round(width * INK_HEIGHT / height))
    scaled = np.asarray(Image.fromarray(ink, mode="F").resize((scaled_width, INK_HEIGHT), Image.Resampling.BILINEAR,
                                                               reducing_gap=2.0), dtype=np.float32)
    strongest = float(scaled.max())
    strip = np.zeros((STRIP_HEIGHT, scaled_width + 2 * MARGIN), dtype=np.float32)
    above = (STRIP_HEIGHT - INK_HEIGHT) // 2
    strip[above:above + INK_HEIGHT, MARGIN:MARGIN + scaled_width] = np.clip(scaled / max(strongest, 1e-6), 0.0, 1.0)
    return Strip(strip, left / scale, width / scaled_width / scale, int(top / scale), round(bottom / scale))
