"""From a scan to its ink: paper levelling, binarisation, lines and specks, on drawn images."""

from __future__ import annotations

import numpy as np
import pytest

from digits.ink import Piece, binarise, components, drop_rules, is_hyphen, otsu, read_ink, remove_lines, stacks


def test_a_bold_filled_digit_keeps_its_middle() -> None:
    """The paper's level is read over windows wider than any blot, so a filled loop stays ink."""
    grey = np.full((90, 200), 0.9, np.float32)
    rows, cols = np.indices(grey.shape)
    grey[np.hypot(rows - 45, cols - 100) < 28] = 0.15  # a blot 56 pixels across
    grey += np.linspace(-0.05, 0.05, 200, dtype=np.float32)[None, :]  # uneven light
    ink, _ = read_ink(grey)
    assert ink[45, 100] > 0.6 and ink[45, 30] < 0.05


def test_a_finer_fainter_pen_survives_binarisation() -> None:
    grey = np.full((90, 200), 0.9, np.float32)
    grey[20:70, 30:40] = 0.1  # a bold stroke
    grey[20:70, 120:122] = 0.6  # a hairline of a fainter pen: under Otsu's threshold for the crop
    binary = binarise(read_ink(grey)[0])
    assert binary[20:70, 30:40].mean() > 0.9 and binary[20:70, 120:122].mean() > 0.9
    assert not binary[:, 60:100].any()


def test_a_fine_pen_stroke_broken_into_dashes_is_not_taken_for_specks() -> None:
    """Binarising a faint hairline can leave it in dashes, each smaller than a speck; together
    they are a digit as tall as the rest (a 1), and stay. A lone speck of the same size goes."""
    binary = np.zeros((80, 200), dtype=bool)
    binary[10:70, 20:60] = True  # a bold digit, 2,400 pixels
    for top in range(10, 70, 6):
        binary[top:top + 4, 100:102] = True  # dashes of 8 pixels, 2 pixels apart
    binary[40:42, 170:174] = True  # a speck of 8 pixels, far from any ink
    kept = components(binary)
    assert sorted(p.box[0] for p in kept) == [20] + [100] * 10
    assert all(p.area == 8 for p in kept if p.left == 100)  # the dashes' own pixels, not joined here


def test_otsu_splits_two_levels_and_copes_with_one() -> None:
    values = np.concatenate([np.full(500, 0.1), np.full(100, 0.7)]).astype(np.float32)
    threshold = otsu(values)
    assert ((values > threshold) == (values > 0.5)).all()
    assert otsu(np.full(50, 0.8, np.float32)) == pytest.approx(0.4)  # a clean two-tone scan has one ink level


def test_ruled_lines_go_and_digits_stay() -> None:
    """An underline drifting by a pixel, and a box's side taller than the digits: gone. The digits'
    strokes (shorter than a crop's height) stay."""
    grey = np.full((96, 300), 0.9, np.float32)
    grey[20:70, 60:67] = 0.1  # a digit's upright stroke
    grey[20:27, 100:140] = 0.1  # a digit's bar
    grey[80:82, 10:150] = 0.2  # an underline ...
    grey[81:83, 150:290] = 0.2  # ... that drifts by a pixel halfway
    grey[5:92, 290:292] = 0.2  # a box's side, standing out above and below the digits
    binary = remove_lines(binarise(read_ink(grey)[0]))
    pieces = drop_rules(components(binary))
    assert sorted(p.box[0] for p in pieces) == [60, 100]
    assert not binary[79:84].any()


def block(left: int, top: int, width: int, height: int) -> Piece:
    return Piece(np.ones((height, width), dtype=bool), left, top)


def test_a_digit_broken_across_is_joined_and_neighbours_are_not() -> None:
    """Pieces one over the other are one digit's broken strokes; digits side by side, even
    overlapping a little, stay apart; a blot far above a digit stays apart when gaps are limited."""
    top_half, bottom_half = block(10, 0, 20, 18), block(12, 21, 18, 19)  # a 3-pixel break
    neighbour = block(26, 2, 20, 38)  # overlaps the digit by 4 columns, and all the way down
    blot = block(14, -30, 8, 6)
    joined = stacks([neighbour, bottom_half, top_half])
    assert sorted(p.box for p in joined) == [(10, 0, 30, 40), (26, 2, 46, 40)]
    assert joined[0].area == 18 * 20 + 19 * 18  # the gap is not filled in
    limited = stacks([top_half, bottom_half, blot], max_gap=5)
    assert sorted(p.box for p in limited) == [(10, 0, 30, 40), (14, -30, 22, -24)]


def test_a_hyphen_stands_in_a_gap_a_digits_loose_stroke_does_not() -> None:
    """The same short flat blob mid-band is a hyphen between two digits, and a 5's loose flag
    (no hyphen) when the 5's body is under it."""
    ink = np.zeros((60, 200), dtype=bool)
    ink[10:50, 20:40] = ink[10:50, 140:160] = True  # digits either side
    dash = np.ones((5, 20), dtype=bool)
    ink[28:33, 80:100] = True
    assert is_hyphen(Piece(dash, 80, 28), 10, 50, ink)
    ink[36:50, 82:98] = True  # a body under the dash: the 5's flag
    assert not is_hyphen(Piece(dash, 80, 28), 10, 50, ink)
