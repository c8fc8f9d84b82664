"""Producer and Redis memory while a big folder goes through `digits-producer run`.

The window (32,768 images in at most 32 batches by default) bounds the image payloads held in
Redis, and the producer walks the folder lazily, so neither should grow with the folder. Results are a different
matter: they stay in Redis (hash and event stream) for the run's result TTL by design, so
they are reported apart from the payloads.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import redis

from benchmarks.pipeline import ROOT, Workers
from benchmarks.procs import status_kb
from digits import keys
from digits.connection import connect, text
from digits.registry import DEFAULT_MODEL_DIR, Registry
from digits.results import results_count
from producer.redis_server import RedisServer

MIB = 1024 * 1024
PAYLOAD_EVERY = 0.5  # seconds between samples of the payload keys' memory


@dataclass(frozen=True)
class MemoryRun:
    """What one `digits-producer run` over `files` files held, in MiB."""

    files: int
    seconds: float
    producer_peak: float  # the producer's peak RSS (VmHWM, sampled until it exits)
    producer_at_10k: float  # its RSS when the 10,000th result came back
    redis_peak: float  # sampled peak of Redis' used_memory during the run, less its value before
    results: float  # the run's results hash and event stream at the end
    payload_peak: float  # sampled peak of the batch payloads (image bytes) in Redis


def payload_bytes(connection: redis.Redis) -> int:
    """Memory of every batch payload in Redis now."""
    names = list(connection.scan_iter(f"{keys.PREFIX}:run:*:batch:*", count=1000))
    if not names:
        return 0
    with connection.pipeline(transaction=False) as pipe:
        for name in names:
            pipe.memory_usage(name, samples=0)  # every field: the default samples 5, and `paths` outweighs many images
        return sum(int(size or 0) for size in pipe.execute())


def producer_memory(folder: Path, files: int, workers: int = 2) -> MemoryRun:
    """Run `digits-producer run` on `folder` with `workers` workers on a fresh Redis, sampling memory."""
    with RedisServer() as server:
        connection = connect(server.url)
        Registry(connection).publish_dir(DEFAULT_MODEL_DIR, promote=True)
        with Workers(server.url, workers):
            baseline = int(connection.info("memory")["used_memory"])
            started = time.perf_counter()
            process = subprocess.Popen(
                [sys.executable, "-m", "producer", "run", str(folder), "--redis-url", server.url,
                 "--output", os.devnull, "--no-progress"], cwd=ROOT, stderr=subprocess.DEVNULL)
            at_10k = payload_peak = hwm = used_peak = 0
            last_payload = 0.0
            run_id: str | None = None
            while True:
                # ru_maxrss is no use here: Linux carries this (big) process's peak over fork and exec
                hwm = max(hwm, status_kb(process.pid, "VmHWM"))
                pid, status = os.waitpid(process.pid, os.WNOHANG)
                if pid:
                    break
                if run_id is None:
                    newest = connection.zrevrange(keys.RUNS, 0, 0)
                    run_id = text(newest[0]) if newest else None
                if run_id is not None and not at_10k and results_count(connection, run_id) >= 10_000:
                    at_10k = status_kb(process.pid)
                # used_memory_peak is no use either: it keeps the model's publication, and no command resets it
                used_peak = max(used_peak, int(connection.info("memory")["used_memory"]))
                if time.monotonic() - last_payload > PAYLOAD_EVERY:
                    payload_peak = max(payload_peak, payload_bytes(connection))
                    last_payload = time.monotonic()
                time.sleep(0.02)
            seconds = time.perf_counter() - started
            process.returncode = os.waitstatus_to_exitcode(status)
            if process.returncode not in (0, 1) or run_id is None:
                raise RuntimeError(f"digits-producer run exited with {process.returncode}")
            results = sum(int(connection.memory_usage(key, samples=0) or 0)
                          for key in (keys.run_batch_results(run_id), keys.run_results(run_id),
                                      keys.run_events(run_id)))
    return MemoryRun(files, seconds, hwm / 1024, at_10k / 1024, (used_peak - baseline) / MIB,
                     results / MIB, payload_peak / MIB)
