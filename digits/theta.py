"""The public model contract: two comma-separated theta files, bias row first.

theta1 is 785 x H (row 0 is b1, rows 1-784 are W1), theta2 is (H+1) x 10
(row 0 is b2, then W2), as the 2017 notebook wrote them with
``np.savetxt(..., delimiter=",")``. Inputs are 784 pixels in [0, 1], row-major,
ink bright. The hidden layer is a sigmoid, the output a softmax.
"""

from __future__ import annotations

import hashlib
import io
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from digits.arrays import Floats
from digits.defaults import MAX_HIDDEN, MAX_THETA_FILE_BYTES, MAX_THETA_TEXT_BYTES, MAX_WEIGHT_ROWS

N_INPUT = 784
N_CLASSES = 10
BLOCK_ROWS = 1024  # rows per matrix product: bounds the hidden layer's temporaries (rows x H floats) in any batch

FLOAT32_MAX = float(np.finfo(np.float32).max)


class ThetaError(ValueError):
    """A theta file breaks the contract; the message names the file and what is wrong."""


def sha256_hex(*parts: bytes) -> str:
    """The sha256 of the parts one after the other: of one file, or of a model's theta files in
    order (a model's fingerprint, `model_sha256` in its manifest)."""
    digest = hashlib.sha256()
    for part in parts:
        digest.update(part)
    return digest.hexdigest()


def plain_bytes(data: bytes, name: str = "theta file", limit: int = MAX_THETA_TEXT_BYTES) -> bytes:
    """Return the CSV text, un-gzipping it if needed, so hashes never depend on compression.
    A gzip file that inflates past `limit` is refused as soon as it does (a gzip bomb costs no
    more than the limit)."""
    if data[:2] != b"\x1f\x8b":
        return data
    try:
        return gunzip(data, limit, name)
    except (OSError, EOFError, zlib.error) as exc:
        raise ThetaError(f"{name}: not a readable gzip file ({exc})") from None


def gunzip(data: bytes, limit: int, name: str) -> bytes:
    """The gzip file's text, member after member. A file whose trailer says it inflates past
    `limit` is refused before any work; one whose trailer lies stops once `limit` is passed."""
    too_big = ThetaError(f"{name}: inflates to more than {limit} bytes of CSV text, over the limit")
    if (said := int.from_bytes(data[-4:], "little")) > limit:  # the last member's size (mod 4 GiB)
        raise ThetaError(f"{name}: not a readable gzip file, or one that inflates past the limit of {limit} "
                         f"bytes of CSV text: its trailer says {said}")
    parts: list[bytes] = []
    size, rest = 0, data
    while rest:
        member = zlib.decompressobj(wbits=31)
        parts.append(member.decompress(rest, limit + 1 - size))
        size += len(parts[-1])
        if size > limit or member.unconsumed_tail:
            raise too_big
        if not member.eof:
            raise ThetaError(f"{name}: not a readable gzip file (truncated)")
        rest = member.unused_data
    return parts[0] if len(parts) == 1 else b"".join(parts)


def parse_theta(data: bytes, name: str) -> npt.NDArray[np.float64]:
    """Parse one theta CSV (plain or gzipped) into a 2-D float64 array, refusing bad cells.

    The rows are handed to np.loadtxt one at a time: a list of lines or a decoded copy of the
    text would add two copies of the file (20 MB for H = 1,024) to a worker's peak memory.
    """
    plain = plain_bytes(data, name)
    if not plain.isascii():
        offset = next(i for i, byte in enumerate(plain) if byte > 127)
        raise ThetaError(f"{name}: not a readable CSV text file (byte {plain[offset]:#04x} at offset {offset})")
    if not plain or plain.isspace():  # not strip(): that would copy the whole file
        raise ThetaError(f"{name}: file is empty")
    check_size(plain, name)
    try:
        array = np.loadtxt(checked_rows(plain, name), delimiter=",", dtype=np.float64, ndmin=2)
    except ThetaError:
        raise
    except ValueError:
        raise bad_cell_error(plain, name) from None
    bad = np.argwhere(~(np.abs(array) <= FLOAT32_MAX))  # NaN, inf, or too big for float32 inference
    if bad.size:
        row, column = (int(i) + 1 for i in bad[0])
        raise ThetaError(
            f"{name}: row {row}, column {column}: {array[row - 1, column - 1]} is not a finite float32 number"
        )
    return array


def check_size(plain: bytes, name: str) -> None:
    """Refuse a matrix larger than any valid theta file before parsing it: counting is cheap."""
    end = plain.find(b"\n", 0, 1 << 20)
    first = plain[:end if end >= 0 else 1 << 20]
    columns, rows = first.count(b",") + 1, plain.count(b"\n") + (not plain.endswith(b"\n"))
    if columns > MAX_HIDDEN:
        raise ThetaError(f"{name}: row 1 has {columns} columns, over the limit of {MAX_HIDDEN} hidden units")
    if rows > MAX_WEIGHT_ROWS + 1:
        raise ThetaError(f"{name}: {rows} rows, over the limit of {MAX_WEIGHT_ROWS + 1} (a bias row and "
                         f"{MAX_WEIGHT_ROWS} weight rows)")


def csv_shape(plain: bytes) -> tuple[int, int]:
    """(rows, columns) of a CSV text that parse_theta accepts, counted without parsing it again:
    the non-blank rows, read one at a time, and the first row's columns."""
    rows = (line for line in io.BytesIO(plain) if line.strip())
    first = next(rows, b"")
    return bool(first) + sum(1 for _ in rows), first.count(b",") + 1 if first else 0


def checked_rows(plain: bytes, name: str) -> Iterator[str]:
    """The non-blank rows, each checked to have as many columns as the first."""
    width = 0
    for number, raw in enumerate(io.BytesIO(plain), start=1):
        line = raw.decode("ascii")
        if not line.strip():
            continue
        columns = line.count(",") + 1
        width = width or columns
        if columns != width:
            raise ThetaError(f"{name}: row {number} has {columns} columns, expected {width} like row 1")
        yield line


def bad_cell_error(plain: bytes, name: str) -> ThetaError:
    """Name the first cell np.loadtxt could not read as a number."""
    for number, raw in enumerate(io.BytesIO(plain), start=1):
        cells = raw.decode("ascii").split(",") if raw.strip() else []
        for column, cell in enumerate(cells, start=1):
            try:
                float(cell)
            except ValueError:
                return ThetaError(f"{name}: row {number}, column {column}: {cell.strip()[:40]!r} is not a number")
    return ThetaError(f"{name}: could not be parsed as comma-separated numbers")


@dataclass(frozen=True)
class Theta:
    """A validated pair of theta matrices; H comes from the files."""

    theta1: npt.NDArray[np.float64]
    theta2: npt.NDArray[np.float64]

    @property
    def hidden(self) -> int:
        return int(self.theta1.shape[1])


def validate_shapes(theta1: npt.NDArray[np.float64], theta2: npt.NDArray[np.float64],
                    name1: str = "theta1.csv", name2: str = "theta2.csv") -> Theta:
    """Check both shapes against each other and the contract; a model is never half-valid."""
    if theta1.ndim != 2 or theta1.shape[0] != N_INPUT + 1:
        raise ThetaError(
            f"{name1}: expected shape ({N_INPUT + 1}, H), found {theta1.shape}"
        )
    hidden = theta1.shape[1]
    if theta2.shape != (hidden + 1, N_CLASSES):
        raise ThetaError(
            f"{name2}: expected shape ({hidden + 1}, {N_CLASSES}) to match H={hidden} "
            f"from {name1}, found {theta2.shape}"
        )
    return Theta(theta1, theta2)


def parse_pair(data1: bytes, data2: bytes, name1: str = "theta1.csv",
               name2: str = "theta2.csv") -> Theta:
    return validate_shapes(parse_theta(data1, name1), parse_theta(data2, name2), name1, name2)


def find_file(directory: Path, stem: str) -> Path:
    """Find ``stem.csv`` or ``stem.csv.gz`` in a directory."""
    for candidate in (directory / f"{stem}.csv", directory / f"{stem}.csv.gz"):
        if candidate.is_file():
            return candidate
    raise ThetaError(f"{directory}: no {stem}.csv or {stem}.csv.gz found")


def read_pair(directory: Path) -> tuple[tuple[str, bytes], tuple[str, bytes]]:
    """A directory's theta1 and theta2 files (.csv or .csv.gz), each as its path and plain CSV text."""
    path1, path2 = find_file(directory, "theta1"), find_file(directory, "theta2")
    return (str(path1), read_limited(path1)), (str(path2), read_limited(path2))


def read_files(directory: Path, names: Sequence[str]) -> dict[str, bytes]:
    """A directory's model files by name ("layer1.csv" is read from layer1.csv or layer1.csv.gz),
    each as plain CSV text."""
    return {name: read_limited(find_file(directory, name.removesuffix(".csv"))) for name in names}


def read_limited(path: Path, limit: int = MAX_THETA_FILE_BYTES) -> bytes:
    """A theta file's plain text, refused unread if it is larger than any valid one."""
    size = path.stat().st_size
    if size > limit:
        raise ThetaError(f"{path}: {size} bytes, over the limit of {limit} for a theta file")
    return plain_bytes(path.read_bytes(), str(path))


def load_dir(directory: Path) -> Theta:
    (name1, plain1), (name2, plain2) = read_pair(directory)
    return parse_pair(plain1, plain2, name1, name2)


def to_csv(matrix: npt.NDArray[np.floating]) -> bytes:
    """Write a matrix exactly as the seed did: ``np.savetxt(..., delimiter=",")``."""
    buffer = io.BytesIO()
    np.savetxt(buffer, np.asarray(matrix, dtype=np.float64), delimiter=",")
    return buffer.getvalue()


def pack(b1: npt.ArrayLike, w1: npt.ArrayLike, b2: npt.ArrayLike, w2: npt.ArrayLike) -> Theta:
    """Stack biases on top of weights, as the seed's notebook did."""
    theta1 = np.vstack([np.reshape(b1, (1, -1)), np.asarray(w1)]).astype(np.float64)
    theta2 = np.vstack([np.reshape(b2, (1, -1)), np.asarray(w2)]).astype(np.float64)
    return validate_shapes(theta1, theta2)


class Model:
    """The forward pass in float32: one matrix product per layer per batch."""

    def __init__(self, theta: Theta) -> None:
        self.b1: Floats = theta.theta1[0].astype(np.float32)
        self.w1: Floats = np.ascontiguousarray(theta.theta1[1:], dtype=np.float32)
        self.b2: Floats = theta.theta2[0].astype(np.float32)
        self.w2: Floats = np.ascontiguousarray(theta.theta2[1:], dtype=np.float32)

    @property
    def hidden(self) -> int:
        return int(self.w1.shape[1])

    @property
    def architecture(self) -> str:
        """As digits.network names layers: "dense1024-dense10" (the hidden layer a sigmoid)."""
        return f"dense{self.hidden}-dense{N_CLASSES}"

    def probabilities(self, pixels: npt.NDArray[np.floating[Any]]) -> Floats:
        """Map an (n, 784) batch of pixels in [0, 1] to (n, 10) class probabilities, BLOCK_ROWS
        rows at a time: a large batch costs no more memory than a block."""
        x = np.asarray(pixels, dtype=np.float32).reshape(-1, N_INPUT)
        probs: Floats = np.empty((len(x), N_CLASSES), dtype=np.float32)
        for start in range(0, len(x), BLOCK_ROWS):
            probs[start:start + BLOCK_ROWS] = self.forward(x[start:start + BLOCK_ROWS])
        return probs

    def forward(self, x: Floats) -> Floats:
        """The network itself, on one block of (rows, 784) float32 pixels."""
        hidden = 0.5 + 0.5 * np.tanh(0.5 * (x @ self.w1 + self.b1))  # sigmoid, overflow-free
        logits = hidden @ self.w2 + self.b2
        logits -= logits.max(axis=1, keepdims=True)
        exps = np.exp(logits)
        probs: Floats = exps / exps.sum(axis=1, keepdims=True)
        return probs
