"""Reading a crop in one pass: a network swept across its strip of ink (Matan et al., 1992).

A strip reader is convolutions and pools only, so it runs on a strip of any width, every window
sharing the work of its neighbours (cutting, digits.reading, reads each candidate on its own). It
gives a frame every few strip columns (the product of its pools' widths: 4, or 2 where the second
pool is 2x1), each a distribution over ALPHABET and a blank; a code is the frames' best path,
repeats merged and blanks dropped, as CTC trains it (trainer.strips); with a hint, the best path
of exactly that many digits (a Viterbi search over frames, counts and symbols).

A strip is read at every phase of the frame grid (moved by 0 to frame_step - 1 columns): each
phase's best path proposes a code, and the most probable over all phases is kept. A digit's
probabilities are those of the frame where its symbol peaks. The code's confidence is its
probability summed over every alignment to the frames (CTC's forward pass), averaged over the
phases: a digit the best path dropped or merged leaves its trace in the frames around it.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from itertools import pairwise
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from digits.arrays import Box, Floats
from digits.images import ImageError
from digits.ink import clean
from digits.manifest import Layer, parse_manifest, strip_layer_specs
from digits.network import Recogniser, Step, chain, run, step_name
from digits.pattern import Pattern
from digits.reading import Reading, finds_hyphens, place_separators, read
from digits.segment import lattice
from digits.strip import INK_HEIGHT, MARGIN, MAX_ASPECT, STRIP_HEIGHT, Strip, strip_of
from digits.theta import ThetaError, parse_theta, read_files

ALPHABET = "0123456789-"  # what a strip reader writes; its last output channel is the blank
BLANK = len(ALPHABET)
HYPHEN = ALPHABET.index("-")
NOMINAL_WIDTH = INK_HEIGHT + 2 * MARGIN  # a one-digit strip: the narrowest a reader must take
WIDEST = round(MAX_ASPECT * INK_HEIGHT) + 2 * MARGIN  # the widest strip digits.strip makes
CHECK_BELOW = 0.95  # a code read less surely than this (a third, calibrated) is read by cutting too ...
DISAGREED = 0.01  # ... and its confidence multiplied by this where the two readings differ
INKED = 0.05  # a strip column with ink at least this strong (of the strongest) holds part of a digit
MAX_MACS_PER_COLUMN = 2_000_000  # multiply-adds per column of the widest strip, all phases (trained: 4 x 0.40 M)


@dataclass(frozen=True)
class Frames:
    """A strip's frames: log-probabilities (frames, BLANK + 1), and each frame's centre column in the strip."""

    log_probabilities: Floats
    centres: npt.NDArray[np.float64]


class StripReader:
    """A strip reader's layers, checked to turn a STRIP_HEIGHT-pixel strip into one row of frames."""

    def __init__(self, steps: list[Step], frame_step: float, frame_offset: float) -> None:
        self.steps = steps
        self.frame_step = frame_step  # strip columns between frames ...
        self.frame_offset = frame_offset  # ... and the first frame's centre column
        self.phase_count = max(1, round(frame_step))  # readings of a strip, one a column between frames

    @classmethod
    def build(cls, layers: list[Layer], weights: dict[str, npt.NDArray[np.float64]], where: str) -> StripReader:
        """Chain the layers (as strip_layer_specs checked them) on a one-digit strip; ThetaError
        unless they end in one row of BLANK + 1 channels, within MAX_MACS_PER_COLUMN."""
        steps = chain(layers, weights, where, (STRIP_HEIGHT, NOMINAL_WIDTH, 1))[0]
        height, _width, channels = steps[-1].shape
        if height != 1 or channels != BLANK + 1:
            raise ThetaError(f"{where}/{layers[-1].file}, strip layer {len(layers)}: {height} row(s) of {channels} "
                             f"channels, a strip reader must end in one row of {BLANK + 1} ({ALPHABET!r} and blank)")
        step, offset = 1.0, 0.0  # where a frame's window is centred: through each layer's stride and window
        for layer in layers:  # along the strip: each window's width
            window, stride = (layer.size[1], layer.size[1]) if layer.op == "maxpool" else \
                (layer.kernel[1], layer.stride)
            if layer.op == "maxpool" or layer.padding == "valid":
                offset += step * (window - 1) / 2
            step *= stride
        reader = cls(steps, step, offset)
        macs = chain(layers, weights, where, (STRIP_HEIGHT, WIDEST, 1))[1] / WIDEST * reader.phase_count
        if macs > MAX_MACS_PER_COLUMN:
            raise ThetaError(f"{where}: {macs:.0f} multiply-adds per strip column (its {reader.phase_count} "
                             f"phases together), over the limit of {MAX_MACS_PER_COLUMN}")
        return reader

    @property
    def architecture(self) -> str:
        return "strip:" + "-".join(step_name(s) for s in self.steps)

    def frames(self, strip: Floats) -> Frames:
        return self.read_at_phases(strip, 1)[0]  # one (STRIP_HEIGHT, width) strip read once

    def phases(self, strip: Floats) -> list[Frames]:
        """The strip's frames at every phase of the frame grid: where one phase merges two close
        digits or drops a thin one, the others mostly do not."""
        return self.read_at_phases(strip, self.phase_count)

    def read_at_phases(self, strip: Floats, count: int) -> list[Frames]:
        """The strip's frames at `count` phases in one pass, centred on columns of the strip as given;
        one narrower than NOMINAL_WIDTH (a lone thin 1) is widened, as a training batch pads it."""
        widened = np.pad(strip, ((0, 0), (0, max(0, NOMINAL_WIDTH - count + 1 - strip.shape[1]))))
        out = np.log(np.maximum(run(self.steps, at_phases(widened[None, :, :, None], count))[:, 0], 1e-30))
        along = self.frame_offset + self.frame_step * np.arange(out.shape[1], dtype=np.float64)
        return [Frames(out[shift].astype(np.float32), along - shift) for shift in range(count)]


def at_phases(strips: npt.NDArray[np.float32], count: int) -> npt.NDArray[np.float32]:
    """A (n, STRIP_HEIGHT, width, 1) batch at `count` phases, phase by phase: moved right by 0 ...
    count - 1 blank columns, count - 1 wider; workers and the trainer's validation share it."""
    return np.concatenate([np.pad(strips, ((0, 0), (0, 0), (shift, count - 1 - shift), (0, 0)))
                           for shift in range(count)])


def symbols(code: str) -> list[int]:
    """A code as the reader's symbols: digits and hyphens (a space is only a wider gap, not a symbol)."""
    return [ALPHABET.index(c) for c in code if c != " "]


def load_strip_reader(files: dict[str, bytes], manifest: dict[str, Any] | None, where: str) -> StripReader | None:
    """A version's strip reader, checked whole (ThetaError naming the file and the layer); None
    for a version without `strip_layers`."""
    if manifest is None or "strip_layers" not in manifest:
        return None
    layers = strip_layer_specs(manifest["strip_layers"], f"{where}/manifest.json")
    weights = {layer.file: parse_theta(files[layer.file], f"{where}/{layer.file}")
               for layer in layers if layer.file is not None}
    return StripReader.build(layers, weights, where)


def load_strip_reader_dir(directory: Path) -> StripReader | None:
    """The strip reader of a model directory (as `digits-trainer export` writes it), if it has one."""
    manifest_path = directory / "manifest.json"
    if not manifest_path.is_file():
        return None
    manifest = parse_manifest(manifest_path.read_bytes(), str(manifest_path))
    if "strip_layers" not in manifest:
        return None
    names = [layer.file for layer in strip_layer_specs(manifest["strip_layers"], str(manifest_path)) if layer.file]
    return load_strip_reader(read_files(directory, names), manifest, str(directory))


def best_path(log_probabilities: Floats, digits: int | None = None) -> list[tuple[int, int]]:
    """The symbols of the best path through the frames with repeats merged and blanks dropped,
    each with the frame where it peaks; with `digits`, the best path that writes exactly that many
    digits (hyphens do not count; empty if the strip has too few frames for them)."""
    if digits is None:
        return symbols_of(log_probabilities.argmax(axis=1), log_probabilities)
    frames, rows, numerals = len(log_probabilities), np.arange(digits), np.arange(10)
    scores = log_probabilities.astype(np.float64)
    free = [HYPHEN, BLANK]  # symbols that write no digit
    # score[k, s]: the best path through the frames so far that has written k digits and is on symbol s now
    score = np.full((digits + 1, BLANK + 1), -np.inf)
    score[0, free] = scores[0, free]
    if digits:
        score[1, :10] = scores[0, :10]
    came = np.zeros((frames, digits + 1, BLANK + 1), dtype=np.intp)  # the symbol of the frame before
    for t in range(1, frames):
        new = np.full_like(score, -np.inf)
        best = score.argmax(axis=1)  # a hyphen or a blank may follow any symbol, the count kept
        new[:, free] = score[np.arange(digits + 1), best][:, None] + scores[t, free]
        came[t][:, free] = best[:, None]
        # a digit: the same digit again (merged, the count kept), or a new one after any other symbol
        before = score[:-1]
        ranked = np.argsort(-before, axis=1)
        other = np.where(ranked[:, :1] == numerals, ranked[:, 1:2], ranked[:, :1])  # the best symbol but d
        moved = before[rows[:, None], other]
        again = score[1:, :10]
        keep = again >= moved
        new[1:, :10] = np.where(keep, again, moved) + scores[t, :10]
        came[t][1:, :10] = np.where(keep, numerals, other)
        score = new
    symbol = int(score[digits].argmax())
    if not np.isfinite(score[digits, symbol]):
        return []
    path, count = np.empty(frames, dtype=np.intp), digits
    path[-1] = symbol
    for t in range(frames - 1, 0, -1):
        previous = int(came[t, count, path[t]])
        if path[t] < 10 and previous != path[t]:
            count -= 1
        path[t - 1] = previous
    return symbols_of(path, log_probabilities)


def symbols_of(path: npt.NDArray[np.intp], log_probabilities: Floats) -> list[tuple[int, int]]:
    """A frame-by-frame path's symbols, repeats merged and blanks dropped, each with its peak frame."""
    found: list[tuple[int, int]] = []
    start = 0
    for t in range(1, len(path) + 1):
        if t == len(path) or path[t] != path[start]:
            symbol = int(path[start])
            if symbol != BLANK:
                run_frames = log_probabilities[start:t, symbol]
                found.append((symbol, start + int(run_frames.argmax())))
            start = t
    return found


def read_strip(strip: Strip, reader: StripReader, review_threshold: float, expect: Pattern | None = None) -> Reading:
    """One crop's code from its strip (the most probable of its phases' best paths), its digits'
    boxes in the crop, separators placed as cutting places them, and the confidence."""
    phases = reader.phases(strip.pixels)
    confidence, frames, symbols = most_probable(phases, expect.digits if expect else None)
    digit_frames = [t for symbol, t in symbols if symbol != HYPHEN]
    centres = [strip.crop_column(frames.centres[t]) for t in digit_frames]
    hyphens = [strip.crop_column(frames.centres[t]) for symbol, t in symbols if symbol == HYPHEN]
    boxes = digit_boxes(centres, strip)
    probabilities = np.exp(frames.log_probabilities[digit_frames, :10]) if digit_frames else np.zeros((0, 10))
    probabilities = (probabilities / np.maximum(probabilities.sum(axis=1, keepdims=True), 1e-30)).astype(np.float32)
    classes = probabilities.argmax(axis=1).tolist()
    separators = place_separators(boxes, hyphens, expect)
    code = "".join(separators.get(i, "") + str(d) for i, d in enumerate(classes))
    if not digit_frames or (expect is not None and len(digit_frames) != expect.digits):
        confidence = 0.0
    return Reading(code, probabilities, boxes, confidence, confidence < review_threshold)


def most_probable(phases: list[Frames], digits: int | None) -> tuple[float, Frames, list[tuple[int, int]]]:
    """Of the codes the phases' best paths write (of `digits` digits if given), the most probable:
    its probability, the first phase that wrote it, and its symbols with their peak frames."""
    best: tuple[float, Frames, list[tuple[int, int]]] = (0.0, phases[0], [])
    tried: set[tuple[int, ...]] = set()
    stacked = np.stack([frames.log_probabilities for frames in phases])
    for frames in phases:
        symbols = best_path(frames.log_probabilities, digits)
        written = tuple(symbol for symbol, _ in symbols)
        if not symbols or written in tried:
            continue
        tried.add(written)
        probability = code_probability(stacked, list(written))
        if probability > best[0] or not best[2]:
            best = (probability, frames, symbols)
    return best


def code_probability(phases: npt.NDArray[np.floating[Any]], labels: list[int]) -> float:
    """P(labels | strip): the probability of every frame-by-frame path that writes `labels`
    (repeats merged, blanks dropped), by CTC's forward pass in log space, averaged over the
    phases' frames (phases, frames, symbols), so that a code the phases disagree on is doubted
    where one phase alone would be sure of it."""
    frames = np.asarray(phases, dtype=np.float64)
    extended = np.full(2 * len(labels) + 1, BLANK)  # a blank before, between and after the symbols
    extended[1::2] = labels
    skips = np.zeros(len(extended), dtype=bool)  # a path may skip the blank between two different symbols
    skips[3::2] = extended[3::2] != extended[1:-2:2]
    alpha = np.full((len(frames), len(extended)), -np.inf)  # log P(a phase's first t frames end on extended[s])
    alpha[:, :2] = frames[:, 0, extended[:2]]
    for t in range(1, frames.shape[1]):
        moved = alpha.copy()
        moved[:, 1:] = np.logaddexp(moved[:, 1:], alpha[:, :-1])
        moved[:, 2:] = np.where(skips[2:], np.logaddexp(moved[:, 2:], alpha[:, :-2]), moved[:, 2:])
        alpha = moved + frames[:, t, extended]
    return float(np.exp(np.logaddexp(alpha[:, -1], alpha[:, -2])).mean())


def labelling_probability(log_probabilities: npt.NDArray[np.floating[Any]], labels: list[int]) -> float:
    """P(labels | frames) of one phase's frames (code_probability)."""
    return code_probability(log_probabilities[None], labels)


def read_crop(grey: Floats, reader: StripReader, model: Recogniser, review_threshold: float,
              expect: Pattern | None = None, check_below: float = CHECK_BELOW) -> Reading:
    """A crop's code as the strip reader reads it; one it reads less surely than `check_below` is
    read again by cutting (digits.reading). Where the two disagree, the surer reading is kept and
    its confidence cut by DISAGREED: two readers that work differently rarely make the same
    mistake, so a disagreement is the surest sign of an error (docs/postal.md)."""
    cleaned = clean(grey)  # once for both readers: most of a strip reading's time (docs/benchmarks.md)
    reading = read_strip(strip_of(cleaned), reader, review_threshold, expect)
    if reading.confidence >= check_below:
        return reading
    try:
        second: Reading | None = read([lattice(cleaned, finds_hyphens(expect))], model, review_threshold, expect)[0]
    except ImageError:
        second = None
    if second is not None and second.code == reading.code:
        return reading
    kept = second if second is not None and second.confidence > reading.confidence else reading
    confidence = kept.confidence * DISAGREED
    return replace(kept, confidence=confidence, review=confidence < review_threshold)


def digit_boxes(centres: list[float], strip: Strip) -> list[Box]:
    """Each digit's box in the crop: its ink's columns between halfway to each neighbour (half a
    digit's usual width at the ends; the whole slot where it has no ink), the ink's rows top to
    bottom. Tight to the ink, boxes keep the gaps by which place_separators finds a ZIP+4's space."""
    if not centres:
        return []
    half = 0.35 * (strip.bottom - strip.top)
    edges = [centres[0] - half, *((a + b) / 2 for a, b in pairwise(centres)), centres[-1] + half]
    inked = np.flatnonzero(strip.pixels.max(axis=0) > INKED)
    starts = strip.crop_column(inked.astype(np.float64))  # where each inked strip column starts in the crop
    boxes: list[Box] = []
    for low, high in pairwise(edges):
        inside = starts[(starts >= low) & (starts < high)]
        left, right = (float(inside[0]), float(inside[-1]) + strip.step) if len(inside) else (low, high)
        boxes.append((max(0, round(left)), strip.top, max(round(left) + 1, round(right)), strip.bottom))
    return boxes
