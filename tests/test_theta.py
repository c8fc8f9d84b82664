"""The public model contract (digits/theta.py): files exactly as the 2017 notebook wrote them.

The seed wrote theta1 (785 x H) and theta2 ((H+1) x 10), bias row first, with
``np.savetxt(path, array, delimiter=",")``. Those files must load unchanged and classify like
a plain float64 forward pass; anything else must be refused with a message that says where.
"""

from __future__ import annotations

import gzip
import io
import shutil
import time
import tracemalloc
import warnings
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest

from digits.defaults import MAX_HIDDEN, MAX_THETA_TEXT_BYTES
from digits.registry import DEFAULT_MODEL_DIR
from digits.theta import (
    BLOCK_ROWS,
    Model,
    Theta,
    ThetaError,
    find_file,
    load_dir,
    pack,
    parse_theta,
    plain_bytes,
    to_csv,
    validate_shapes,
)

F64 = npt.NDArray[np.float64]


def seed_arrays(hidden: int = 300, seed: int = 2017) -> tuple[F64, F64]:
    """Random float64 theta pair of the seed's layout: 785 x H and (H+1) x 10.

    W2's columns are centred and b2 is small, so random inputs spread over many classes and
    an argmax comparison means something.
    """
    rng = np.random.default_rng(seed)
    theta1 = rng.normal(0.0, 0.1, size=(785, hidden))
    theta2 = rng.normal(0.0, 1.0, size=(hidden + 1, 10))
    theta2[1:] -= theta2[1:].mean(axis=0)
    theta2[0] *= 0.1
    return theta1, theta2


def write_seed_files(directory: Path, theta1: F64, theta2: F64) -> Path:
    """Write both files exactly as the 2017 notebook did."""
    directory.mkdir(parents=True, exist_ok=True)
    np.savetxt(directory / "theta1.csv", theta1, delimiter=",")
    np.savetxt(directory / "theta2.csv", theta2, delimiter=",")
    return directory


def reference_probabilities(theta1: F64, theta2: F64, pixels: F64) -> F64:
    """The forward pass written out independently: sigmoid hidden layer, softmax output, float64."""
    with np.errstate(over="ignore"):  # exp(-x) -> inf for very negative x gives the right 0
        hidden = 1.0 / (1.0 + np.exp(-(pixels @ theta1[1:] + theta1[0])))
    logits = hidden @ theta2[1:] + theta2[0]
    exps = np.exp(logits - logits.max(axis=1, keepdims=True))
    probabilities: F64 = exps / exps.sum(axis=1, keepdims=True)
    return probabilities


def pixels(count: int, seed: int = 1) -> F64:
    batch: F64 = np.random.default_rng(seed).uniform(0.0, 1.0, size=(count, 784))
    return batch


@pytest.fixture(scope="module")
def seed_pair() -> tuple[F64, F64]:
    return seed_arrays()


@pytest.fixture(scope="module")
def seed_dir(tmp_path_factory: pytest.TempPathFactory, seed_pair: tuple[F64, F64]) -> Path:
    return write_seed_files(tmp_path_factory.mktemp("seed"), *seed_pair)


# -- loading the seed's files ------------------------------------------------------------------

def test_seed_files_load_exactly(seed_dir: Path, seed_pair: tuple[F64, F64]) -> None:
    """np.savetxt's %.18e text round-trips float64 exactly: not one weight may move."""
    theta = load_dir(seed_dir)
    assert theta.theta1.dtype == np.float64 and theta.theta2.dtype == np.float64
    np.testing.assert_array_equal(theta.theta1, seed_pair[0])
    np.testing.assert_array_equal(theta.theta2, seed_pair[1])
    assert theta.hidden == 300


def test_seed_files_classify_like_a_float64_forward_pass(seed_dir: Path, seed_pair: tuple[F64, F64]) -> None:
    """The float32 Model must agree with the notebook's maths to 1e-5 and on every argmax."""
    batch = pixels(500)
    expected = reference_probabilities(*seed_pair, batch)
    got = Model(load_dir(seed_dir)).probabilities(batch.astype(np.float32))
    assert got.shape == (500, 10)
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-5)
    np.testing.assert_array_equal(got.argmax(axis=1), expected.argmax(axis=1))
    assert len(set(expected.argmax(axis=1).tolist())) > 3  # the comparison is not trivially one class


def test_gzipped_seed_files_load_identically(seed_dir: Path, tmp_path: Path) -> None:
    """The bundled model ships as .csv.gz; gzip must change nothing but the size."""
    for name in ("theta1.csv", "theta2.csv"):
        (tmp_path / f"{name}.gz").write_bytes(gzip.compress((seed_dir / name).read_bytes()))
    plain, zipped = load_dir(seed_dir), load_dir(tmp_path)
    np.testing.assert_array_equal(zipped.theta1, plain.theta1)
    np.testing.assert_array_equal(zipped.theta2, plain.theta2)
    batch = pixels(50).astype(np.float32)
    np.testing.assert_array_equal(Model(zipped).probabilities(batch), Model(plain).probabilities(batch))


def test_gzip_of_several_members_loads_whole(seed_dir: Path, tmp_path: Path) -> None:
    """`cat a.gz b.gz` is a valid gzip file; the fast one-member path must not drop the second half."""
    for name in ("theta1.csv", "theta2.csv"):
        data = (seed_dir / name).read_bytes()
        middle = data.index(b"\n", len(data) // 2) + 1
        (tmp_path / f"{name}.gz").write_bytes(gzip.compress(data[:middle]) + gzip.compress(data[middle:]))
    plain, zipped = load_dir(seed_dir), load_dir(tmp_path)
    np.testing.assert_array_equal(zipped.theta1, plain.theta1)
    np.testing.assert_array_equal(zipped.theta2, plain.theta2)


def test_hidden_size_comes_from_the_files(tmp_path: Path) -> None:
    """H is not fixed at 300: a 17-unit model is as valid as the seed's."""
    theta1, theta2 = seed_arrays(hidden=17, seed=5)
    theta = load_dir(write_seed_files(tmp_path, theta1, theta2))
    model = Model(theta)
    assert theta.hidden == 17 and model.hidden == 17
    batch = pixels(100)
    got = model.probabilities(batch.astype(np.float32))
    expected = reference_probabilities(theta1, theta2, batch)
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-5)
    np.testing.assert_array_equal(got.argmax(axis=1), expected.argmax(axis=1))


def test_missing_file_is_named(tmp_path: Path) -> None:
    np.savetxt(tmp_path / "theta1.csv", np.zeros((785, 3)), delimiter=",")
    with pytest.raises(ThetaError, match=r"no theta2\.csv or theta2\.csv\.gz found"):
        load_dir(tmp_path)
    assert find_file(tmp_path, "theta1") == tmp_path / "theta1.csv"


# -- refusals ----------------------------------------------------------------------------------

SMALL_H = 3


def small_pair() -> tuple[F64, F64]:
    return seed_arrays(hidden=SMALL_H, seed=11)


def write_lines(path: Path, lines: list[str]) -> None:
    path.write_text("".join(line + "\n" for line in lines))


def csv_lines(array: F64) -> list[str]:
    return to_csv(array).decode().splitlines()


@pytest.mark.parametrize(
    ("shape1", "shape2", "bad_file", "expected", "found"),
    [
        ((784, 3), (4, 10), "theta1.csv", "(785, H)", "(784, 3)"),  # a row short: bias row missing
        ((786, 3), (4, 10), "theta1.csv", "(785, H)", "(786, 3)"),
        ((785, 3), (3, 10), "theta2.csv", "(4, 10)", "(3, 10)"),  # theta2 rows != H+1
        ((785, 3), (5, 10), "theta2.csv", "(4, 10)", "(5, 10)"),
        ((785, 3), (4, 9), "theta2.csv", "(4, 10)", "(4, 9)"),  # nine classes
        ((785, 4), (4, 10), "theta2.csv", "(5, 10)", "(4, 10)"),  # a mismatched pair
    ],
)
def test_wrong_shapes_are_refused(tmp_path: Path, shape1: tuple[int, int], shape2: tuple[int, int],
                                  bad_file: str, expected: str, found: str) -> None:
    """A wrong shape must fail at load, naming the file and both the expected and the found shape."""
    np.savetxt(tmp_path / "theta1.csv", np.zeros(shape1), delimiter=",")
    np.savetxt(tmp_path / "theta2.csv", np.zeros(shape2), delimiter=",")
    with pytest.raises(ThetaError) as caught:
        load_dir(tmp_path)
    message = str(caught.value)
    assert str(tmp_path / bad_file) in message
    assert f"expected shape {expected}" in message
    assert f"found {found}" in message


@pytest.mark.parametrize(
    ("cell", "complaint"),
    [
        ("abc", "'abc' is not a number"),
        ("0.5.1", "'0.5.1' is not a number"),
        ("", "'' is not a number"),
        ("nan", "nan is not a finite float32 number"),
        ("inf", "inf is not a finite float32 number"),
        ("-inf", "-inf is not a finite float32 number"),
        ("1e999", "inf is not a finite float32 number"),  # overflows float64 while parsing
    ],
)
def test_bad_cells_are_refused_with_row_and_column(tmp_path: Path, cell: str, complaint: str) -> None:
    """One bad weight poisons every prediction, so it must be found and pointed at."""
    theta1, theta2 = small_pair()
    write_seed_files(tmp_path, theta1, theta2)
    lines = csv_lines(theta2)
    cells = lines[2].split(",")
    cells[6] = cell  # row 3, column 7
    lines[2] = ",".join(cells)
    write_lines(tmp_path / "theta2.csv", lines)
    with pytest.raises(ThetaError) as caught:
        load_dir(tmp_path)
    message = str(caught.value)
    assert str(tmp_path / "theta2.csv") in message
    assert "row 3, column 7" in message
    assert complaint in message


@pytest.mark.parametrize("content", ["", "\n\n", "   \n"])
def test_empty_file_is_refused(tmp_path: Path, content: str) -> None:
    theta1, theta2 = small_pair()
    write_seed_files(tmp_path, theta1, theta2)
    (tmp_path / "theta1.csv").write_text(content)
    with pytest.raises(ThetaError, match="file is empty") as caught:
        load_dir(tmp_path)
    assert str(tmp_path / "theta1.csv") in str(caught.value)


def test_ragged_row_is_refused(tmp_path: Path) -> None:
    """A row with a missing cell must not be silently padded or shifted."""
    theta1, theta2 = small_pair()
    write_seed_files(tmp_path, theta1, theta2)
    lines = csv_lines(theta1)
    lines[3] = ",".join(lines[3].split(",")[:-1])
    write_lines(tmp_path / "theta1.csv", lines)
    with pytest.raises(ThetaError) as caught:
        load_dir(tmp_path)
    message = str(caught.value)
    assert str(tmp_path / "theta1.csv") in message
    assert f"row 4 has {SMALL_H - 1} columns, expected {SMALL_H}" in message


def test_truncated_file_is_refused(tmp_path: Path) -> None:
    """An upload cut mid-row: the last row is short, so the file is refused."""
    theta1, theta2 = small_pair()
    write_seed_files(tmp_path, theta1, theta2)
    data = (tmp_path / "theta1.csv").read_bytes()
    (tmp_path / "theta1.csv").write_bytes(data[: len(data) // 2])
    with pytest.raises(ThetaError, match=r"theta1\.csv: row \d+ has \d columns, expected 3"):
        load_dir(tmp_path)


def test_truncated_gzip_is_refused(tmp_path: Path) -> None:
    theta1, theta2 = small_pair()
    write_seed_files(tmp_path, theta1, theta2)
    zipped = gzip.compress((tmp_path / "theta2.csv").read_bytes())
    (tmp_path / "theta2.csv").unlink()
    (tmp_path / "theta2.csv.gz").write_bytes(zipped[: len(zipped) // 2])
    with pytest.raises(ThetaError, match=r"theta2\.csv\.gz: not a readable gzip file"):
        load_dir(tmp_path)


def test_binary_file_is_refused() -> None:
    with pytest.raises(ThetaError, match=r"weights\.bin: not a readable CSV text file"):
        parse_theta(bytes(range(256)), "weights.bin")


def test_weights_beyond_float32_are_refused_or_handled(tmp_path: Path) -> None:
    """The Model computes in float32; a weight it cannot hold must not silently give NaN."""
    theta1, theta2 = small_pair()
    theta1[10, 1] = 1e39
    write_seed_files(tmp_path, theta1, theta2)
    try:
        theta = load_dir(tmp_path)
    except ThetaError as error:
        assert "row 11, column 2" in str(error)
        return
    batch = pixels(5).astype(np.float32)
    batch[0] = 0.0  # 0 * inf is NaN: a blank input shows the damage
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        probabilities = Model(theta).probabilities(batch)
    assert np.isfinite(probabilities).all()


# -- writing -----------------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_to_csv_is_byte_identical_to_savetxt(tmp_path: Path, dtype: type[np.floating]) -> None:
    """The registry stores and hashes to_csv output; it must be the seed's exact bytes."""
    theta1, _ = seed_arrays(hidden=7, seed=3)
    array = theta1.astype(dtype)
    np.savetxt(tmp_path / "theta.csv", array, delimiter=",")
    assert to_csv(array) == (tmp_path / "theta.csv").read_bytes()
    buffer = io.BytesIO()
    np.savetxt(buffer, array, delimiter=",")
    assert to_csv(array) == buffer.getvalue()
    np.testing.assert_array_equal(parse_theta(to_csv(array), "theta.csv"), array.astype(np.float64))


def test_pack_puts_the_bias_row_first() -> None:
    """The trainer's (W, b) become the seed's layout: row 0 is the bias."""
    rng = np.random.default_rng(4)
    w1, b1 = rng.normal(size=(784, 5)), rng.normal(size=5)
    w2, b2 = rng.normal(size=(5, 10)), rng.normal(size=10)
    theta = pack(b1, w1, b2, w2)
    assert theta.theta1.shape == (785, 5) and theta.theta2.shape == (6, 10)
    np.testing.assert_array_equal(theta.theta1[0], b1)
    np.testing.assert_array_equal(theta.theta1[1:], w1)
    np.testing.assert_array_equal(theta.theta2[0], b2)
    np.testing.assert_array_equal(theta.theta2[1:], w2)
    with pytest.raises(ThetaError, match=r"theta2\.csv"):
        pack(b1, w1, b2, w2[:4])


# -- the forward pass --------------------------------------------------------------------------

def test_probabilities_rows_sum_to_one(seed_dir: Path) -> None:
    probabilities = Model(load_dir(seed_dir)).probabilities(pixels(200).astype(np.float32))
    assert (probabilities >= 0).all()
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=0, atol=1e-5)


def test_a_batch_larger_than_a_block_reads_every_row(seed_dir: Path) -> None:
    """Rows are multiplied BLOCK_ROWS at a time; every row of a longer batch still gets its own
    probabilities, in order, as the float64 reference computes them."""
    theta = load_dir(seed_dir)
    batch = pixels(2 * BLOCK_ROWS + 37, seed=3)
    probabilities = Model(theta).probabilities(batch.astype(np.float32))
    expected = reference_probabilities(theta.theta1, theta.theta2, batch)
    assert probabilities.shape == (2 * BLOCK_ROWS + 37, 10)
    np.testing.assert_allclose(probabilities, expected, rtol=0, atol=1e-4)


def test_huge_activations_do_not_overflow() -> None:
    """Logits of 1e5 overflow a naive exp(); the softmax must stay finite and warning-free."""
    theta1 = np.full((785, 4), 50.0)
    theta1[0] = -20_000.0  # hidden pre-activations of about +-20,000
    theta1[1:, 1] = -50.0
    theta2 = np.zeros((5, 10))
    theta2[0] = np.linspace(-1e5, 1e5, 10)
    theta2[1:, 3] = 3e5
    model = Model(validate_shapes(theta1, theta2))
    batch = np.zeros((3, 784), dtype=np.float32)
    batch[1] = 1.0
    batch[2, :300] = 1.0
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        probabilities = model.probabilities(batch)
    assert np.isfinite(probabilities).all()
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=0, atol=1e-6)
    expected = reference_probabilities(theta1, theta2, batch.astype(np.float64))
    np.testing.assert_allclose(probabilities, expected, rtol=0, atol=1e-5)
    assert probabilities[0].argmax() == 9 and probabilities[1].argmax() == 3


def test_theta_is_a_value() -> None:
    """Theta is frozen: a loaded model cannot be changed under a running worker."""
    theta = Theta(np.zeros((785, 1)), np.zeros((2, 10)))
    with pytest.raises(AttributeError):
        theta.theta1 = np.ones((785, 1))  # type: ignore[misc]


def test_a_huge_sparse_theta_file_is_refused_unread(tmp_path: Path) -> None:
    """A 2 GB sparse file took 51 s and 4.1 GB before a MemoryError; its size is checked first."""
    shutil.copy(DEFAULT_MODEL_DIR / "theta2.csv.gz", tmp_path / "theta2.csv.gz")
    with (tmp_path / "theta1.csv").open("wb") as handle:
        handle.truncate(2 * 1024**3)
    started = time.perf_counter()
    with pytest.raises(ThetaError, match=r"theta1.csv: 2147483648 bytes, over the limit of \d+ for a theta file"):
        load_dir(tmp_path)
    assert time.perf_counter() - started < 1.0


@pytest.mark.parametrize("lying", [False, True])
def test_a_gzip_bomb_is_refused_while_decompressing(lying: bool) -> None:
    """1 MiB of gzip that inflates to 1 GiB cost 1.07 GB at import. Refused from its trailer,
    or, when the trailer lies, once it has inflated past the limit."""
    bomb = gzip.compress(b"0" * (1024**3), compresslevel=9)
    assert len(bomb) < 2 * 1024**2
    if lying:
        bomb = bomb[:-4] + (1000).to_bytes(4, "little")
    tracemalloc.start()
    try:
        with pytest.raises(ThetaError, match=r"theta1\.csv: inflates to more than 100663296 bytes" if lying
                           else r"inflates past the limit of 100663296 bytes of CSV text: its trailer says 1073741824"):
            plain_bytes(bomb, "theta1.csv")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < (2.2 * MAX_THETA_TEXT_BYTES if lying else 1024**2)


def test_too_many_columns_are_refused_before_parsing() -> None:
    row = ",".join(["0"] * (MAX_HIDDEN + 1)) + "\n"
    with pytest.raises(ThetaError, match=f"row 1 has {MAX_HIDDEN + 1} columns, over the limit"):
        parse_theta(row.encode() * 3, "theta1.csv")


def test_too_many_rows_are_refused_before_parsing() -> None:
    with pytest.raises(ThetaError, match=r"theta2\.csv: 16386 rows, over the limit of 16385"):
        parse_theta(b"0,1\n" * 16386, "theta2.csv")
    assert parse_theta(b"0,1\n" * 16385, "strip3.csv").shape == (16385, 2)
