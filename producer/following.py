"""Following a run: its results in the order they finished, read from its events stream.

Each finished batch adds one event naming its paths; the batch's results are one stored value
(digits/results.py), read and passed on whole, as a `Finished` batch. `Follower` reads from a
cursor, so a reader that keeps its cursor (as `watch` does, in Redis) resumes where it stopped;
`follow_batches` reads a whole run, and `follow` the same one result at a time.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import redis

from digits import defaults, keys
from digits.connection import text
from digits.queueing import batch_queue
from digits.recovery import reap_failed_batches, recover_abandoned
from digits.results import Finished, Result, event_batches
from producer.keying import with_keyed
from producer.runs import RunError, run_meta


class Follower:
    """Reads a run's results from a cursor in its events stream, advancing it."""

    def __init__(self, connection: redis.Redis, run_id: str, cursor: str = "0-0") -> None:
        self.redis = connection
        self.run_id = run_id
        self.cursor = cursor

    def read(self, block_ms: int | None, count: int = defaults.FOLLOW_BATCHES) -> list[Finished]:
        """The batches finished after the cursor, up to `count` (with the codes a keying station
        keyed, if any); with block_ms, wait that long for one if there is none yet."""
        response: list[Any] = self.redis.xread(  # type: ignore[assignment]
            {keys.run_events(self.run_id): self.cursor}, count=count, block=block_ms)
        found: list[Finished] = []
        for _stream, entries in response or []:
            self.cursor = text(entries[-1][0])
            found += event_batches(self.redis, self.run_id, entries)
        return with_keyed(self.redis, self.run_id, found)


def follow_batches(connection: redis.Redis, run_id: str, *, wait: bool = True,
                   should_stop: Callable[[], bool] = lambda: False) -> Iterator[Finished]:
    """A run's finished batches in the order they finished, each image once (a batch redone after a
    Redis restart lost its first result must not repeat); with wait, until the run is complete,
    sweeping for abandoned and failed batches meanwhile."""
    queue = batch_queue(connection, run_meta(connection, run_id).get("queue", keys.DEFAULT_QUEUE))
    follower = Follower(connection, run_id)
    seen: set[str] = set()
    last_sweep = time.monotonic()
    total = 0  # the run's total when last read: completion is worth checking once that many are seen
    while True:
        found = follower.read(block_ms=500 if wait else None)
        for batch in found:
            if seen.isdisjoint(batch.paths):  # a set operation a batch, not a Python step an image
                seen.update(batch.paths)
                yield batch
            elif unseen := [result for result in batch.results() if result.path not in seen]:
                seen.update(result.path for result in unseen)
                yield Finished.of(unseen)
        if found and (not wait or len(seen) < total):
            continue
        # Checked right after the last result too: blocking once more would add half a second to every run.
        meta = run_meta(connection, run_id)
        total = int(meta.get("total", 0))
        if meta.get("status") == "enqueued" and len(seen) >= total:
            return
        if found:
            continue
        if not wait or should_stop():
            return
        if time.monotonic() - last_sweep > defaults.PRODUCER_SWEEP_SECONDS:
            recover_abandoned(connection, queue)
            reap_failed_batches(connection, run_id, queue)
            last_sweep = time.monotonic()


def follow(connection: redis.Redis, run_id: str, *, wait: bool = True,
           should_stop: Callable[[], bool] = lambda: False) -> Iterator[Result]:
    """A run's results one at a time, as follow_batches finds them."""
    for batch in follow_batches(connection, run_id, wait=wait, should_stop=should_stop):
        yield from batch.results()


def await_run(connection: redis.Redis, run_id: str, seconds: float) -> dict[str, str]:
    """The run's hash once it exists, for a follower started beside the run's senders; RunError
    (no such run) if it does not within `seconds`."""
    deadline = time.monotonic() + seconds
    while True:
        try:
            return run_meta(connection, run_id)
        except RunError:
            if time.monotonic() >= deadline:
                raise
            time.sleep(0.2)
