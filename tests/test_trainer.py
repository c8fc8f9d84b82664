"""The trainer: MNIST verification, a real (tiny) TensorFlow run, and the registry commands."""

from __future__ import annotations

import gzip
import json
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest
import redis

from digits.network import load_model, load_model_dir
from digits.registry import DEFAULT_MODEL_DIR, PLOT_FILES, Registry
from digits.theta import Model, load_dir
from tests.conftest import Digits
from trainer import mnist
from trainer.calibrate import TEMPERATURES

SAVETXT_LINE = re.compile(r"^-?\d\.\d{18}e[+-]\d{2}(,-?\d\.\d{18}e[+-]\d{2})*$")


def trainer(redis_url: str, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    """`python -m trainer ARGS` in a working directory of its own: a run's default checkpoints
    (.checkpoints/ there) used to land in the checkout, where two test runs at once trained the
    same recipe into the same files and one failed (h5py could not create its backup)."""
    with tempfile.TemporaryDirectory(prefix="trainer-") as cwd:
        return subprocess.run([sys.executable, "-m", "trainer", *args, "--redis-url", redis_url],
                              cwd=cwd, capture_output=True, text=True, timeout=timeout, check=False)


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


def test_cnn_export_computes_what_keras_computes(mnist_test: Digits) -> None:
    """The workers' NumPy forward pass of an exported CNN against the Keras model it came from."""
    import tensorflow as tf

    from trainer.train import export_layers, network, preset_with

    net = network(preset_with("cnn", hidden=32), 0.0, 1.0, total_steps=20)
    x = mnist_test[0][:500].reshape(-1, 784).astype(np.float32) / 255.0
    net.fit(x, np.eye(10, dtype=np.float32)[mnist_test[1][:500]], batch_size=50, epochs=1, verbose=0)
    files, layers = export_layers(net)
    assert [layer.op for layer in layers] == ["conv", "maxpool", "conv", "maxpool", "dense", "dense"]
    model = load_model(files, {"layers": [layer.as_json() for layer in layers]}, "exported")
    keras = tf.nn.softmax(net(x, training=False)).numpy()
    assert np.abs(model.probabilities(x) - keras).max() <= 1e-5


def test_short_cnn_run_publishes_layer_files_that_round_trip(redis_url: str, connection: redis.Redis,
                                                             tmp_path: Path, mnist_test: Digits) -> None:
    """`train --preset cnn` publishes one CSV a layer in the seed's format with the layer list in
    its manifest; `export` and `import` give the same files and sha256."""
    out = tmp_path / "version"
    done = trainer(redis_url, "train", "--preset", "cnn", "--steps", "60", "--hidden", "16", "--crops", "0",
                   "--dropout", "0.5", "--out", str(out), "--promote")
    assert done.returncode == 0, done.stderr
    version = done.stdout.strip().splitlines()[-1]
    manifest = json.loads((out / "manifest.json").read_text())
    assert [layer["op"] for layer in manifest["layers"]] == ["conv", "maxpool", "conv", "maxpool", "dense", "dense"]
    assert manifest["architecture"] == "conv3x16-pool2-conv3x32-pool2-dense16-dense10"
    assert manifest["hyperparameters"]["dropout"] == 0.5 and manifest["hyperparameters"]["arch"] == "cnn"
    for name, shape in (("layer1.csv", (10, 16)), ("layer2.csv", (145, 32)), ("layer3.csv", (1569, 16)),
                        ("layer4.csv", (17, 10))):
        lines = (out / name).read_text().splitlines()
        assert len(lines) == shape[0] and all(SAVETXT_LINE.match(line) for line in lines)
        assert manifest["files"][name]["shape"] == list(shape)
    model = load_model_dir(out)
    accuracy = (model.probabilities(mnist_test[0] / 255.0).argmax(axis=1) == mnist_test[1]).mean()
    assert accuracy == pytest.approx(manifest["metrics"]["test_accuracy"], abs=1e-9)  # 60 steps: no more
    assert Registry(connection).current() == version
    exported = tmp_path / "exported"
    assert trainer(redis_url, "export", version, str(exported)).returncode == 0
    assert all((exported / name).read_bytes() == (out / name).read_bytes() for name in manifest["files"])
    shown = trainer(redis_url, "show", version)
    assert "conv3x16-pool2-conv3x32-pool2-dense16-dense10" in shown.stdout, shown.stderr


def test_a_short_strips_run_publishes_the_base_digit_model_with_a_strip_reader(
        redis_url: str, connection: redis.Redis, tmp_path: Path) -> None:
    """`strips` trains a strip reader for a moment (real TensorFlow, CTC) and publishes it beside
    the bundled digit model: the seed's pair unchanged, five strip CSVs in the seed's format
    listed in `strip_layers`, one sha256 over all seven; `show` lists its metrics."""
    out = tmp_path / "version"
    done = trainer(redis_url, "strips", "--crops", "64", "--epochs", "1", "--validation-crops", "16",
                   "--out", str(out), "--promote")
    assert done.returncode == 0, done.stderr
    version = done.stdout.strip().splitlines()[-1]
    manifest = json.loads((out / "manifest.json").read_text())
    base = json.loads((DEFAULT_MODEL_DIR / "manifest.json").read_text())
    assert manifest["base_version"] == base["version"] and manifest["preset"] == "best-strips"
    assert [layer["op"] for layer in manifest["strip_layers"]] == ["conv", "maxpool", "conv", "maxpool", "conv", "conv",
                                                                   "conv"]
    for name, shape in (("strip1.csv", (10, 32)), ("strip2.csv", (289, 64)), ("strip3.csv", (577, 64)),
                        ("strip4.csv", (3137, 256)), ("strip5.csv", (257, 12))):
        assert manifest["files"][name]["shape"] == list(shape)
        assert all(SAVETXT_LINE.match(line) for line in (out / name).read_text().splitlines()[:3])
    assert manifest["files"]["theta1.csv"] == base["files"]["theta1.csv"]
    assert manifest["hyperparameters"]["strips"]["crops"] == 64
    assert manifest["hyperparameters"]["strips"]["dropout"] == 0.3
    assert 0.0 <= manifest["metrics"]["strips"]["validation_whole_codes"] <= 1.0
    assert manifest["metrics"]["strips"]["temperature"] in TEMPERATURES  # calibrated on the validation strips
    assert Registry(connection).current() == version
    readers = Registry(connection).load(version)
    assert readers.strips is not None and readers.model.architecture == "dense1024-dense10"
    shown = trainer(redis_url, "show", version)
    assert "strips.validation_whole_codes" in shown.stdout and "strips.history" not in shown.stdout, shown.stderr


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
    shown = json.loads(trainer(redis_url, "show", "--json").stdout)
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
    assert accuracy >= 0.993
    assert accuracy == pytest.approx(manifest["metrics"]["test_accuracy"], abs=1e-9)
    assert manifest["preset"] == "best" and manifest["hidden"] <= 1024
    for name in PLOT_FILES:
        assert (DEFAULT_MODEL_DIR / name).read_bytes().startswith(b"\x89PNG")


def small(data: mnist.Mnist, train_images: int = 1000) -> mnist.Mnist:
    """The real split with fewer training images (validation and test untouched): epochs of 7 steps."""
    keep = mnist.VALIDATION_SIZE + train_images
    return mnist.Mnist(data.train_images[:keep], data.train_labels[:keep], data.test_images, data.test_labels)


def test_best_recipe_is_reproducible_and_folds_its_input_scaling() -> None:
    from trainer.train import preset_with, train

    data = small(mnist.load())
    recipe = preset_with("best", steps=14, hidden=16, crops=8)
    first, second = (train(data, recipe, report=lambda _line: None) for _ in range(2))
    assert first.files == second.files
    assert len(first.history["validation"]) == 2 and first.best_epoch in (1, 2)
    # The export runs on raw [0, 1] pixels, so the numpy accuracy is the one Keras validated.
    assert first.validation_accuracy == pytest.approx(first.history["validation"][first.best_epoch - 1], abs=2e-3)
    other = train(data, preset_with("best", steps=14, hidden=16, crops=8, seed=1), report=lambda _line: None)
    assert other.files["theta1.csv"] != first.files["theta1.csv"]


def test_fold_scaling_matches_standardised_inputs() -> None:
    from trainer.train import fold_scaling

    rng = np.random.default_rng(0)
    x, w1, b1 = rng.random((5, 784)), rng.normal(size=(784, 3)), rng.normal(size=3)
    folded_w, folded_b = fold_scaling(w1, b1, mean=0.13, std=0.31)
    assert np.allclose(x @ folded_w + folded_b, ((x - 0.13) / 0.31) @ w1 + b1)


def test_interrupted_run_resumes_from_its_last_epoch(tmp_path: Path) -> None:
    from trainer.train import preset_with, train

    data = small(mnist.load())
    recipe = preset_with("best", steps=7 * 4, hidden=16, crops=8)
    lines: list[str] = []

    def interrupt_after_two(line: str) -> None:
        lines.append(line)
        if line.startswith("epoch 2/"):
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train(data, recipe, report=interrupt_after_two, checkpoint_dir=tmp_path)
    assert len(json.loads((tmp_path / "journal.json").read_text())["history"]["validation"]) == 2
    resumed: list[str] = []
    trained = train(data, recipe, report=resumed.append, checkpoint_dir=tmp_path)
    assert [line.split()[1] for line in resumed] == ["3/4", "4/4"]  # and the crops were not cut again
    assert "ETA" in resumed[0]
    assert len(trained.history["validation"]) == 4
    epochs = [line for line in lines if line.startswith("epoch ")]
    assert lines[0].startswith("cut 8 generated crops") and len(epochs) == 2
    assert trained.history["validation"][:2] == pytest.approx([float(line.split()[5]) for line in epochs], abs=1e-4)


def test_best_preset_publishes_plots_and_show_points_to_them(redis_url: str, connection: redis.Redis,
                                                            tmp_path: Path) -> None:
    out = tmp_path / "version"
    done = trainer(redis_url, "train", "--preset", "best", "--steps", "429", "--hidden", "32", "--crops", "8",
                   "--out", str(out), "--checkpoint-dir", str(tmp_path / "checkpoint"))
    assert done.returncode == 0, done.stderr
    version = done.stdout.strip().splitlines()[-1]
    assert "epoch 1/1" in done.stderr and "ETA" in done.stderr
    assert not (tmp_path / "checkpoint").exists()  # removed once the version is out
    assert Model(load_dir(out)).w1.shape == (784, 32)
    for name in PLOT_FILES:
        assert (out / name).read_bytes().startswith(b"\x89PNG")
    shown = trainer(redis_url, "show", version)
    assert shown.returncode == 0, shown.stderr
    assert re.search(r"test_accuracy\s+0\.\d{4}\n", shown.stdout)  # one epoch of a tiny net: any accuracy
    assert f"digits-trainer export {version} DIR" in shown.stdout and "confusion.png" in shown.stdout
    exported = tmp_path / "exported"
    assert trainer(redis_url, "export", version, str(exported)).returncode == 0
    assert (exported / "worst.png").read_bytes() == (out / "worst.png").read_bytes()
    table = trainer(redis_url, "robustness", version)
    assert table.returncode == 0, table.stderr
    assert re.search(r"slant \+15 deg\s+\d+\.\d\d%", table.stdout)


def test_best_recipe_trains_on_cut_candidates() -> None:
    from trainer.train import preset_with, train

    data = small(mnist.load())
    lines: list[str] = []
    trained = train(data, preset_with("best", steps=14, hidden=16, crops=8), report=lines.append)
    assert re.match(r"cut 8 generated crops into \d+ labelled candidates \(\d+ digits\) in \d+ s$", lines[0])
    assert len(trained.history["train"]) == 2 and all(0 < value <= 1 for value in trained.history["train"])
    assert trained.layers is None and trained.model.architecture == "dense16-dense10"


def test_training_accuracy_counts_digits_not_wrong_cuts() -> None:
    from trainer.train import digit_accuracy

    metric = digit_accuracy()
    y_true = np.array([np.eye(10)[3], np.full(10, 0.1), np.eye(10)[7]], np.float32)
    y_pred = np.array([np.eye(10)[3], np.eye(10)[5], np.eye(10)[1]], np.float32)
    metric.update_state(y_true, y_pred)
    assert float(metric.result()) == pytest.approx(0.5)  # the no-digit row counts neither way


@pytest.mark.parametrize("manifest", ["[]", "{not json", '{"version": 12345}'])
def test_import_of_a_bad_manifest_is_refused_in_one_line(manifest: str, redis_url: str, tmp_path: Path) -> None:
    """A malformed manifest gave a bare traceback, and a {"version": 12345} one was imported."""
    for name in ("theta1.csv.gz", "theta2.csv.gz"):
        (tmp_path / name).write_bytes((DEFAULT_MODEL_DIR / name).read_bytes())
    (tmp_path / "manifest.json").write_text(manifest)
    done = trainer(redis_url, "import", str(tmp_path), "--promote")
    assert done.returncode == 1 and "Traceback" not in done.stderr
    [line] = done.stderr.strip().splitlines()
    assert line.startswith(f"Error: {tmp_path}/manifest.json: ")
