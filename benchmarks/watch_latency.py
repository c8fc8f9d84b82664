"""Hot-folder latency: from a file landing (its write finished) to its result being emitted.

Run: .venv/bin/python -m benchmarks.watch_latency
Starts a private redis-server and 2 workers, runs the watcher in this process, and writes
MNIST digits as PNG files at a low and a high rate. Prints p50/p90/p99 per load and settle time.
"""

from __future__ import annotations

import io
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from PIL import Image

from benchmarks.pipeline import ROOT, machine
from digits.connection import connect
from digits.registry import DEFAULT_MODEL_DIR, Registry
from digits.results import Result
from producer import runs
from producer.redis_server import RedisServer
from producer.watch import Watcher, WatchSettings

LOADS = (("low: 5 files/s", 5.0, 25), ("high: 1,000 files/s", 1000.0, 3000))


def measure(url: str, pngs: list[bytes], rate: float, count: int, settle: float, name: str) -> list[float]:
    folder = Path(tempfile.mkdtemp(prefix="digits-watch-"))
    landed: dict[str, float] = {}
    emitted: dict[str, float] = {}
    stop = threading.Event()

    def emit(result: Result) -> None:
        emitted[result.path] = time.monotonic()

    watcher = Watcher(connect(url), folder, runs.Settings(batch_size=256), WatchSettings(settle=settle), emit, name)
    thread = threading.Thread(target=watcher.run, args=(stop.is_set,))
    thread.start()
    started = time.monotonic()
    for index in range(count):
        due = started + index / rate
        time.sleep(max(0.0, due - time.monotonic()))
        path = folder / f"{index:05d}.png"
        path.write_bytes(pngs[index % len(pngs)])
        landed[path.name] = time.monotonic()
    deadline = time.monotonic() + 120
    while len(emitted) < count and time.monotonic() < deadline:
        time.sleep(0.01)
    stop.set()
    thread.join()
    return [emitted[p] - landed[p] for p in landed if p in emitted]


def main() -> None:
    from trainer.mnist import load

    images = load().test_images[:500]
    pngs = []
    for pixels in images:
        buffer = io.BytesIO()
        Image.fromarray(pixels.reshape(28, 28)).save(buffer, "PNG")
        pngs.append(buffer.getvalue())
    rows = []
    with RedisServer() as server:
        connection = connect(server.url)
        Registry(connection).publish_dir(DEFAULT_MODEL_DIR, promote=True)
        pool = subprocess.Popen([sys.executable, "-m", "worker", "--count", "2", "--redis-url", server.url,
                                 "--log-level", "WARNING"], cwd=ROOT, start_new_session=True)
        try:
            while connection.scard("rq:workers") < 2:
                time.sleep(0.1)
            for settle in (0.2, 0.05):
                for number, (label, rate, count) in enumerate(LOADS):
                    latencies = sorted(measure(server.url, pngs, rate, count, settle, f"bench-{settle}-{number}"))
                    quantiles = statistics.quantiles(latencies, n=100)
                    rows.append((label, settle, len(latencies), count, quantiles[49], quantiles[89], quantiles[98]))
        finally:
            os.killpg(pool.pid, 15)
            pool.wait()
    print(f"machine: {machine()}")
    print("digits-producer watch, 2 workers, 28 x 28 PNG files, --max-delay 0.05\n")
    print("| load | --settle s | results | p50 ms | p90 ms | p99 ms |")
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    for label, settle, got, count, p50, p90, p99 in rows:
        print(f"| {label} | {settle} | {got}/{count} | {p50 * 1000:.0f} | {p90 * 1000:.0f} | {p99 * 1000:.0f} |")


if __name__ == "__main__":
    main()
