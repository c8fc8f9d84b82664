"""Shared fixtures: a private redis-server per test session, real worker processes, the default model,
and a redis-server locked down with the shipped ACL file (deploy/users.acl)."""

from __future__ import annotations

import gzip
import hashlib
import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest
import redis
from PIL import Image
from selenium import webdriver
from selenium.webdriver.chrome.options import Options
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.chrome.webdriver import WebDriver

from digits import keys
from digits.connection import connect, text
from digits.payload import BY_BATCH, RESULTS_FIELD
from digits.registry import DEFAULT_MODEL_DIR, Registry
from digits.results import Record, Result, event_batches, result_record, store_results
from producer.redis_server import RedisServer
from producer.runs import Settings, create_run
from producer.sending import enqueue_folder

ROOT = Path(__file__).resolve().parent.parent
ACL_FILE = ROOT / "deploy" / "users.acl"
ROLES = ("admin", "trainer", "producer", "worker")  # the users deploy/users.acl defines
PERSISTENT = ["--appendonly", "yes", "--appendfsync", "everysec", "--save", ""]  # compose's persistence
Digits = tuple[npt.NDArray[np.uint8], npt.NDArray[np.uint8]]  # images (n x 784), labels
MakeFolder = Callable[[int], tuple[Path, dict[str, int]]]
CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync"]


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    with RedisServer() as server:
        yield server


class AclRedis(RedisServer):
    """A redis-server run with deploy/users.acl as docs/security.md says, its password placeholders
    filled in; with AOF on, as compose runs it. `url` is the admin's; `url_for(role)` a role's."""

    def __init__(self, directory: Path, extra_args: list[str] | None = None) -> None:
        self.passwords = {role: secrets.token_hex(16) for role in ROLES}
        acl = ACL_FILE.read_text()
        for role, password in self.passwords.items():
            acl = acl.replace(f"#{role.upper()}_PASSWORD_SHA256", "#" + hashlib.sha256(password.encode()).hexdigest())
        assert "PASSWORD" not in acl, "deploy/users.acl has a placeholder this fixture does not fill"
        (directory / "users.acl").write_text(acl)
        args = [*PERSISTENT, *(extra_args or []), "--aclfile", str(directory / "users.acl")]
        super().__init__(extra_args=args, directory=directory, user="admin", password=self.passwords["admin"])

    def url_for(self, role: str) -> str:
        return f"redis://{role}:{self.passwords[role]}@127.0.0.1:{self.port}/0"

    def refusals(self) -> list[dict[str, Any]]:
        """What ACL LOG recorded: every command or key a user was refused since the last reset."""
        admin = redis.Redis.from_url(self.url, decode_responses=True)
        try:
            return list(admin.acl_log())
        finally:
            admin.close()


@pytest.fixture(scope="session")
def acl_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AclRedis]:
    with AclRedis(tmp_path_factory.mktemp("acl-redis")) as server:
        yield server


@pytest.fixture
def acl_connection(acl_redis: AclRedis) -> Iterator[redis.Redis]:
    """The admin's connection to a flushed acl_redis, its ACL LOG emptied."""
    client = connect(acl_redis.url)
    client.flushall()
    client.acl_log_reset()
    yield client
    client.close()


@pytest.fixture
def redis_url(redis_server: RedisServer) -> str:
    return redis_server.url


@pytest.fixture
def connection(redis_server: RedisServer) -> Iterator[redis.Redis]:
    client = connect(redis_server.url)
    client.flushall()
    yield client
    client.close()


@pytest.fixture
def registry(connection: redis.Redis) -> Registry:
    return Registry(connection)


@pytest.fixture(scope="session")
def published_default(redis_server: RedisServer) -> tuple[str, bytes]:
    """The bundled default model published once per session through the registry (parsing and
    validating its theta files takes seconds), as its version id and a DUMP of its key."""
    client = connect(redis_server.url)
    client.flushall()
    version = Registry(client).publish_dir(DEFAULT_MODEL_DIR)
    dumped = client.dump(keys.model(version))
    assert isinstance(dumped, bytes)
    return version, dumped


@pytest.fixture
def default_version(registry: Registry, published_default: tuple[str, bytes]) -> str:
    """The bundled default model, published and current (restored from the session's publication)."""
    version, dumped = published_default
    registry.redis.restore(keys.model(version), 0, dumped)
    registry.redis.zadd(keys.MODEL_VERSIONS, {version: time.time()})
    registry.redis.set(keys.MODEL_CURRENT, version)  # as promote does, without parsing it once more
    return version


class WorkerPool:
    """`digits-worker --count N` as a real process group, stopped at the end of the test."""

    def __init__(self, redis_url: str, count: int, extra: list[str] | None = None) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "worker", "--count", str(count), "--redis-url", redis_url,
             "--log-level", "WARNING", *(extra or [])],
            cwd=ROOT, start_new_session=True,
        )

    def wait_registered(self, connection: redis.Redis, count: int, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while connection.scard("rq:workers") < count:
            assert self.process.poll() is None, "worker pool exited early"
            assert time.monotonic() < deadline, "workers did not register in time"
            time.sleep(0.1)

    def stop(self) -> int:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        return self.process.returncode


@pytest.fixture
def start_workers(redis_url: str, connection: redis.Redis) -> Iterator[Callable[..., WorkerPool]]:
    pools: list[WorkerPool] = []

    def start(count: int = 1, extra: list[str] | None = None) -> WorkerPool:
        pool = WorkerPool(redis_url, count, extra)
        pools.append(pool)
        pool.wait_registered(connection, count)
        return pool

    yield start
    for pool in pools:
        pool.stop()


@pytest.fixture(scope="session")
def mnist_test() -> Digits:
    """The official MNIST test images (uint8, n x 784) and labels, checksum-verified."""
    from trainer.mnist import load

    data = load()
    return data.test_images, data.test_labels


def write_pngs(directory: Path, images: npt.NDArray[np.uint8], labels: npt.NDArray[np.uint8]) -> dict[str, int]:
    """Write digits as 28 x 28 PNGs named by index; return relative path -> true label."""
    directory.mkdir(parents=True, exist_ok=True)
    truth = {}
    for index, (pixels, label) in enumerate(zip(images, labels, strict=True)):
        name = f"{index:05d}.png"
        Image.fromarray(pixels.reshape(28, 28)).save(directory / name)
        truth[name] = int(label)
    return truth


@pytest.fixture
def digit_folder(tmp_path: Path, mnist_test: Digits) -> MakeFolder:
    """A folder of the first n MNIST test digits as PNGs, and their true labels."""

    def make(count: int) -> tuple[Path, dict[str, int]]:
        folder = tmp_path / f"digits-{count}"
        return folder, write_pngs(folder, mnist_test[0][:count], mnist_test[1][:count])

    return make


@pytest.fixture(scope="module")
def driver(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WebDriver]:
    """Headless Debian chromium through chromium-driver (scripts/install-chromium.sh installs them)."""
    missing = [str(path) for path in (CHROMIUM, CHROMEDRIVER) if not path.is_file()]
    if missing and os.geteuid() != 0:  # said in the summary (./test.sh runs pytest -rs), never silently
        pytest.skip(f"the browser tests need {' and '.join(missing)}; installing them needs root: "
                    "run `sudo scripts/install-chromium.sh`, then ./test.sh again")
    if missing:  # root (CI) could have installed them: their absence is a failure there
        pytest.fail(f"{' and '.join(missing)} not found: run scripts/install-chromium.sh "
                    "(installs Debian's chromium and chromium-driver)", pytrace=False)
    options = Options()
    options.binary_location = str(CHROMIUM)
    for flag in FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}")
    browser = webdriver.Chrome(options=options, service=Service(executable_path=str(CHROMEDRIVER)))
    try:
        browser.set_window_size(1000, 900)
        browser.set_script_timeout(60)
        yield browser
    finally:
        browser.quit()


@dataclass(frozen=True)
class FlaggedRun:
    """A finished run with codes flagged for review, and the files it read."""

    run_id: str
    folder: Path
    flagged: list[str]  # the review set, sorted as stations are served it
    truth: dict[str, str]  # path -> the true code, where known


@pytest.fixture
def flagged_run(tmp_path: Path, redis_url: str, connection: redis.Redis, default_version: str, mnist_test: Digits,
                start_workers: Callable[..., WorkerPool]) -> FlaggedRun:
    """32 generated 5-digit crops read by a real worker with `--review-threshold 0.999`: nearly all flagged."""
    from trainer.synth import generate, png_bytes

    folder = tmp_path / "crops"
    folder.mkdir()
    truth = {}
    for index, crop in enumerate(generate(32, *mnist_test, formats=("5",), seed=24)):
        (folder / f"crop-{index:02d}.png").write_bytes(png_bytes(crop))
        truth[f"crop-{index:02d}.png"] = crop.code
    start_workers(1)
    done = subprocess.run([sys.executable, "-m", "producer", "run", str(folder), "--review-threshold", "0.999",
                           "--redis-url", redis_url, "-o", os.devnull], cwd=ROOT, capture_output=True, text=True,
                          timeout=180, check=True)
    run_id = done.stderr.split()[1]
    flagged = sorted(text(path) for path in connection.smembers(keys.run_review(run_id)))
    assert len(flagged) >= 21, done.stderr
    return FlaggedRun(run_id, folder, flagged, truth)


def stored_run(connection: redis.Redis, folder: Path, count: int, flagged_every: int = 1,
               ttl: int = 3600) -> FlaggedRun:
    """A run of `count` small PNG crops whose results are stored as a worker stores them (no worker
    reads them: quick), every `flagged_every`-th one flagged for review with the code 12345."""
    folder.mkdir(parents=True, exist_ok=True)
    run_id = create_run(connection, folder, Settings(result_ttl=ttl))
    paths = [f"scan-{index:03d}.png" for index in range(count)]
    for path in paths:
        Image.new("L", (60, 20), 230).save(folder / path)
    connection.hset(keys.batch(run_id, 0), mapping={"paths": "[]", RESULTS_FIELD: BY_BATCH})
    records = [result_record(path, 0, code="12345", digits="12345", confidence=0.5, review=index % flagged_every == 0,
                             confidences=[0.9] * 5, boxes=[[2 + 11 * d, 2, 11 + 11 * d, 18] for d in range(5)],
                             model_version="test") for index, path in enumerate(paths)]
    assert store_results(connection, run_id, 0, records, ttl)
    connection.hset(keys.run(run_id), mapping={"status": "enqueued", "total": count})
    return FlaggedRun(run_id, folder, sorted(p for i, p in enumerate(paths) if i % flagged_every == 0), {})


def event_results(connection: redis.Redis, run_id: str, events: Any) -> list[Result]:
    """The results some entries of a run's events stream name, one by one, as a follower reads them."""
    return [result for batch in event_batches(connection, run_id, events) for result in batch.results()]


def stored_results(connection: redis.Redis, run_id: str) -> dict[str, Record]:
    """Every stored result of a run by path, read as a follower reads them (a path stored twice
    would show as fewer entries than results_count says)."""
    return {result.path: result.record for result in event_results(
        connection, run_id, connection.xrange(keys.run_events(run_id)))}


def send_folder(connection: redis.Redis, folder: Path, settings: Settings) -> str:
    """A new run of the folder, its batches all on the queue (no window to wait on): its id."""
    run_id = create_run(connection, folder, settings)
    enqueue_folder(connection, run_id, folder, settings)
    return run_id


CNN_LAYERS: list[dict[str, Any]] = [  # the cnn preset's layer list (trainer/train.py)
    {"op": "conv", "file": "layer1.csv", "kernel": 3, "stride": 1, "padding": "same", "activation": "relu"},
    {"op": "maxpool", "size": 2},
    {"op": "conv", "file": "layer2.csv", "kernel": 3, "stride": 1, "padding": "same", "activation": "relu"},
    {"op": "maxpool", "size": 2},
    {"op": "dense", "file": "layer3.csv", "activation": "relu"},
    {"op": "dense", "file": "layer4.csv", "activation": "softmax"},
]


def random_cnn(seed: int = 0, dense: int = 8) -> dict[str, bytes]:
    """The cnn preset's layer files (a smaller dense layer) with random weights, as the trainer
    writes them: quick to build without TensorFlow."""
    from digits.theta import to_csv

    rng = np.random.default_rng(seed)
    shapes = {"layer1.csv": (10, 16), "layer2.csv": (145, 32), "layer3.csv": (7 * 7 * 32 + 1, dense),
              "layer4.csv": (dense + 1, 10)}
    return {name: to_csv(rng.normal(scale=0.3, size=shape)) for name, shape in shapes.items()}


def cnn_manifest(files: dict[str, bytes], version: str) -> dict[str, Any]:
    from digits.manifest import layer_specs
    from digits.network import load_model
    from digits.registry import build_manifest

    layers = layer_specs(CNN_LAYERS, "test")
    return build_manifest(files, load_model(files, {"layers": CNN_LAYERS}, version), layers=layers,
                          preset="test-cnn", version=version)


SEED_PAIR = {name: gzip.decompress((DEFAULT_MODEL_DIR / f"{name}.gz").read_bytes())  # the bundled pair, seed format
             for name in ("theta1.csv", "theta2.csv")}
STRIP_LAYERS: list[dict[str, Any]] = [  # the strip reader's layer list (trainer/strips.py), narrower
    {"op": "conv", "file": "strip1.csv", "kernel": 3, "stride": 1, "padding": "same", "activation": "relu"},
    {"op": "maxpool", "size": 2},
    {"op": "conv", "file": "strip2.csv", "kernel": 3, "stride": 1, "padding": "same", "activation": "relu"},
    {"op": "maxpool", "size": 2},
    {"op": "conv", "file": "strip3.csv", "kernel": 7, "stride": 1, "padding": "valid", "activation": "relu"},
    {"op": "conv", "file": "strip4.csv", "kernel": 1, "stride": 1, "padding": "valid", "activation": "softmax"},
]


def random_strips(seed: int = 0) -> dict[str, bytes]:
    """A strip reader's layer files with random weights, as the trainer writes them (4, 8 and 16
    channels instead of 32, 64 and 256): quick to build without TensorFlow."""
    from digits.theta import to_csv

    rng = np.random.default_rng(seed)
    shapes = {"strip1.csv": (10, 4), "strip2.csv": (37, 8), "strip3.csv": (7 * 7 * 8 + 1, 16),
              "strip4.csv": (17, 12)}
    return {name: to_csv(rng.normal(scale=0.5, size=shape)) for name, shape in shapes.items()}


def strips_manifest(digit_files: dict[str, bytes], strip_files: dict[str, bytes], version: str) -> dict[str, Any]:
    """The manifest of the seed-format digit pair plus a strip reader, as `digits-trainer strips` writes it."""
    from digits.network import load_model
    from digits.registry import build_manifest

    files = {**digit_files, **strip_files}
    manifest = build_manifest(files, load_model(digit_files, None, version), preset="test-strips", version=version)
    manifest["strip_layers"] = STRIP_LAYERS
    return manifest


Damage = Callable[[list[dict[str, Any]], dict[str, bytes]], None]  # breaks a layer list or its files, in place


def replace_layer(index: int, **changes: Any) -> Damage:
    def damage(layers: list[dict[str, Any]], _files: dict[str, bytes]) -> None:
        layers[index].update(changes)
    return damage


def set_cell(name: str, line: int, column: int, value: bytes) -> Damage:
    """A layer file with one cell (0-based line of the CSV, column) replaced, e.g. by b"nan"."""
    def damage(_layers: list[dict[str, Any]], files: dict[str, bytes]) -> None:
        lines = files[name].splitlines(keepends=True)
        cells = lines[line].split(b",")
        cells[column] = value
        lines[line] = b",".join(cells)
        files[name] = b"".join(lines)
    return damage


def reshape_file(name: str, rows: int, columns: int) -> Damage:
    def damage(_layers: list[dict[str, Any]], files: dict[str, bytes]) -> None:
        from digits.theta import to_csv

        files[name] = to_csv(np.ones((rows, columns)))
    return damage
