"""The naive baseline: one RQ job per image, run by RQ's default (fork-per-job) `rq worker`.

This is what RQ's documentation leads a user to: a module-level job function taking a path,
`Queue.enqueue(classify_one, path)` once per file, and `rq worker` started from the command
line with its default worker class, default (pickle) serializer and default logging.

The model is loaded once, at this module's import. `rq worker -c benchmarks.naive` imports the
module in the worker's main process (RQ reads its settings from it; it defines none), so every
forked work horse inherits the loaded model: the best case for this design. Without that, each
job's horse would import the module and parse the theta CSVs again.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import redis
from rq import Queue

from digits.defaults import REVIEW_THRESHOLD
from digits.images import decode
from digits.network import load_model_dir
from digits.reading import lattice_of, read
from digits.registry import DEFAULT_MODEL_DIR
from producer.redis_server import RedisServer

ROOT = Path(__file__).resolve().parent.parent
model = load_model_dir(DEFAULT_MODEL_DIR)  # lower case: RQ would read an upper-case name as a setting


def classify_one(path: str) -> dict[str, Any]:
    """Decode, cut and classify one image; RQ stores the returned dict as the job's result."""
    reading = read([lattice_of(decode(Path(path).read_bytes()))], model, REVIEW_THRESHOLD)[0]
    return {"path": path, "code": reading.code, "confidence": reading.confidence}


def start_workers(url: str, count: int) -> list[subprocess.Popen[bytes]]:
    """`rq worker` processes exactly as the CLI starts them, plus `-c` so the model is loaded before forking."""
    rq = str(Path(sys.executable).with_name("rq"))
    return [subprocess.Popen([rq, "worker", "--url", url, "-c", "benchmarks.naive"], cwd=ROOT,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
            for _ in range(count)]


def naive(paths: list[Path], workers: int) -> float:
    """Images/s of one job per image through `workers` default RQ workers, from the first enqueue
    to the last job finished (or failed)."""
    with RedisServer() as server:
        connection = redis.Redis.from_url(server.url)
        processes = start_workers(server.url, workers)
        try:
            while connection.scard("rq:workers") < workers:
                if any(p.poll() is not None for p in processes):
                    raise RuntimeError("rq worker exited early")
                time.sleep(0.1)
            time.sleep(1.0)
            queue = Queue(connection=connection)
            started = time.perf_counter()
            for path in paths:
                queue.enqueue(classify_one, str(path))
            while queue.finished_job_registry.count + queue.failed_job_registry.count < len(paths):
                time.sleep(0.02)
            seconds = time.perf_counter() - started
            if queue.failed_job_registry.count > len(paths) // 10:
                raise RuntimeError(f"{queue.failed_job_registry.count} of {len(paths)} naive jobs failed")
            return len(paths) / seconds
        finally:
            for process in processes:
                os.killpg(process.pid, 15)
                process.wait()
