"""Latency of one image, from enqueue to result, on warm idle workers.

The clock starts before the producer's own enqueue step (read the file, store the payload,
enqueue the job) and stops when the batch's result event reaches the producer (the XREAD that
`digits-producer run` and `results --follow` block on). Images go one at a time, so it is the
latency of a lone image, not of one in a busy queue.
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path
from typing import Any

from digits import keys
from digits.connection import connect
from digits.queueing import batch_queue
from producer import runs
from producer.batches import enqueue_batch
from producer.files import Found

WARM_UP = 20


def one_image_latencies(url: str, image: Path, count: int) -> list[float]:
    """Seconds from enqueue to result for `count` single-image batches, sent one after the other."""
    connection = connect(url)
    settings = runs.Settings(batch_size=1)
    run_id = runs.create_run(connection, image.parent, settings)
    queue = batch_queue(connection, settings.queue)
    found = Found(image.name, str(image))
    events = keys.run_events(run_id)
    last_id = "0-0"
    latencies = []
    for sent in range(WARM_UP + count):
        started = time.perf_counter()
        index, _taken = enqueue_batch(connection, queue, run_id, [found], settings)
        reply: list[Any] = connection.xread({events: last_id}, count=1, block=30_000)  # type: ignore[assignment]
        if not reply:
            raise RuntimeError(f"no result for a single image within 30 s (run {run_id}, batch {index})")
        last_id = reply[0][1][-1][0]
        if sent >= WARM_UP:
            latencies.append(time.perf_counter() - started)
    return latencies


def percentiles(values: list[float]) -> tuple[float, float]:
    """(p50, p99)."""
    cuts = statistics.quantiles(values, n=100, method="inclusive")
    return cuts[49], cuts[98]
