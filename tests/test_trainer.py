"""The trainer: MNIST verification, a real (tiny) TensorFlow run, and the registry commands."""

from __future__ import annotations

import gzip
import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import redis

from digits.registry import DEFAULT_MODEL_DIR, Registry
from digits.theta import Model, load_dir
from tests.conftest import ROOT, Digits
from trainer import mnist

SAVETXT_LINE = re.compile(r"^-?\d\.\d{18}e[+-]\d{2}(,-?\d\.\d{18}e[+-]\d{2})*$")


def trainer(redis_url: str, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "trainer", *args, "--redis-url", redis_url],
                          cwd=ROOT, capture_output=True, text=True, timeout=timeout, check=False)


def test_mnist_is_the_official_data_and_split(mnist_test: Digits) -> None:
    data = mnist.load()
    x_train, y_train, x_val, y_val = data.split()
    assert (y_val == data.train_labels[:5000]).all() and len(y_train) == 55_000
    assert (len(x_train), len(x_val), len(data.test_images)) == (55_000, 5_000, 10_000)
    assert (x_val == data.train_images[:5000]).all()
    assert list(data.test_labels[:5]) == [7, 2, 1, 0, 4]


def test_tampered_mnist_is_refused(mnist_test: Digits) -> None:
    images = mnist_test[0].reshape(-1, 28, 28).copy()
    images[0, 0, 0] ^= 1
    with pytest.raises(mnist.MnistError, match=r"t10k-images: md5 \w+ does not match"):
        mnist.verify("t10k-images", images)


def test_idx_directory_loads_and_verifies(tmp_path: Path) -> None:
    data = mnist.load()
    arrays = {"train-images": data.train_images.reshape(-1, 28, 28), "train-labels": data.train_labels,
              "t10k-images": data.test_images.reshape(-1, 28, 28), "t10k-labels": data.test_labels}
    for name, array in arrays.items():
        (tmp_path / (mnist.IDX_NAMES[name] + ".gz")).write_bytes(gzip.compress(mnist.idx_bytes(array), 1))
    loaded = mnist.load(tmp_path)
    assert (loaded.test_images == data.test_images).all()
    (tmp_path / "t10k-labels-idx1-ubyte.gz").write_bytes(gzip.compress(mnist.idx_bytes(data.test_labels[::-1])))
    with pytest.raises(mnist.MnistError, match="t10k-labels"):
        mnist.load(tmp_path)


def test_short_seed_run_exports_seed_format_and_publishes(redis_url: str, connection: redis.Redis,
                                                         tmp_path: Path, mnist_test: Digits) -> None:
    out = tmp_path / "version"
    done = trainer(redis_url, "train", "--preset", "seed", "--steps", "300", "--hidden", "32",
                   "--seed", "1", "--out", str(out), "--promote")
    assert done.returncode == 0, done.stderr
    version = done.stdout.strip().splitlines()[-1]
    for name, shape in (("theta1.csv", (785, 32)), ("theta2.csv", (33, 10))):
        lines = (out / name).read_text().splitlines()
        assert len(lines) == shape[0] and all(SAVETXT_LINE.match(line) for line in lines)
        assert np.loadtxt(out / name, delimiter=",").shape == shape
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["version"] == version and manifest["hidden"] == 32 and manifest["preset"] == "seed"
    assert manifest["hyperparameters"]["learning_rate"] == 0.005
    assert manifest["hyperparameters"]["batch_size"] == 50 and manifest["hyperparameters"]["steps"] == 300
    assert 0.85 < manifest["metrics"]["test_accuracy"] <= 1
    model = Model(load_dir(out))
    accuracy = (model.probabilities(mnist_test[0] / 255.0).argmax(axis=1) == mnist_test[1]).mean()
    assert accuracy == pytest.approx(manifest["metrics"]["test_accuracy"], abs=1e-9)
    registry = Registry(connection)
    assert registry.current() == version
    assert registry.manifest(version)["files"] == manifest["files"]


def test_registry_commands(redis_url: str, connection: redis.Redis, tmp_path: Path) -> None:
    first = trainer(redis_url, "import", str(DEFAULT_MODEL_DIR), "--promote")
    assert first.returncode == 0, first.stderr
    default = first.stdout.strip()
    exported = tmp_path / "exported"
    assert trainer(redis_url, "export", default, str(exported)).returncode == 0
    (exported / "manifest.json").unlink()  # files from outside come without a manifest
    second = trainer(redis_url, "import", str(exported))
    assert second.returncode == 0, second.stderr
    imported = second.stdout.strip()
    assert "imported" in imported

    listing = trainer(redis_url, "list").stdout
    assert f"* {default}" in listing and f"  {imported}" in listing
    assert trainer(redis_url, "promote", imported).returncode == 0
    assert Registry(connection).current() == imported
    assert trainer(redis_url, "rollback").stdout.strip() == f"current is now {default}"
    shown = json.loads(trainer(redis_url, "show").stdout)
    assert shown["version"] == default and shown["metrics"]["test_accuracy"] >= 0.97
    refused = trainer(redis_url, "promote", "no-such-version")
    assert refused.returncode != 0 and "no such version: no-such-version" in refused.stderr

    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "theta1.csv").write_text("1,2\n3,4\n")
    (bad / "theta2.csv").write_text("1\n")
    rejected = trainer(redis_url, "import", str(bad))
    assert rejected.returncode != 0 and "expected shape (785, H), found (2, 2)" in rejected.stderr


def test_default_model_accuracy(mnist_test: Digits) -> None:
    """The shipped model, run through the workers' numpy forward pass on the 10,000 test digits."""
    model = Model(load_dir(DEFAULT_MODEL_DIR))
    accuracy = (model.probabilities(mnist_test[0] / 255.0).argmax(axis=1) == mnist_test[1]).mean()
    manifest = json.loads((DEFAULT_MODEL_DIR / "manifest.json").read_text())
    assert accuracy >= 0.97
    assert accuracy == pytest.approx(manifest["metrics"]["test_accuracy"], abs=1e-9)
