"""Runs: a folder cut into batches, enqueued under a window, and its results streamed back.

The window bounds how many images sit in Redis at once: a batch is enqueued only when the
images enqueued but not yet finished leave room for it. Producer and Redis memory stay flat
whatever the size of the folder.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from itertools import islice
from pathlib import Path
from typing import Any

import redis
from rq import Queue, Retry
from rq.job import Job
from rq.registry import FailedJobRegistry

from digits import keys
from digits.connection import text
from digits.images import DEFAULT_MAX_BYTES, EXTENSIONS
from digits.queueing import JOB_FUNCTION, batch_queue, job_id, parse_job_id
from digits.results import result_record, store_results
from producer.files import Found, read, walk

Record = dict[str, Any]


class RunError(RuntimeError):
    """A run cannot be found or driven; the message says why."""


@dataclass(frozen=True)
class Settings:
    """How a folder is cut and paced; the defaults are measured in docs/benchmarks.md."""

    batch_size: int = 256
    window: int = 8192
    result_ttl: int = 7 * 24 * 3600
    queue: str = keys.DEFAULT_QUEUE
    max_bytes: int = DEFAULT_MAX_BYTES
    job_timeout: int = 600
    retries: int = 2
    extensions: tuple[str, ...] = EXTENSIONS
    globs: tuple[str, ...] = ()


def new_run_id() -> str:
    return f"{datetime.now(UTC):%Y%m%d-%H%M%S}-{uuid.uuid4().hex[:6]}"


def chunks(items: Iterable[Found], size: int) -> Iterator[list[Found]]:
    """Consecutive lists of `size` items (the last may be shorter), read lazily."""
    iterator = iter(items)
    while chunk := list(islice(iterator, size)):
        yield chunk


def decode_hash(raw: dict[bytes, bytes]) -> dict[str, str]:
    return {k.decode(): v.decode() for k, v in raw.items()}


def create_run(connection: redis.Redis, root: Path, settings: Settings, run_id: str | None = None) -> str:
    run_id = run_id or new_run_id()
    with connection.pipeline(transaction=True) as pipe:
        pipe.hset(keys.run(run_id), mapping={
            "root": str(root), "created_at": time.time(), "status": "enqueueing", "total": 0,
            "batches": 0, "batch_size": settings.batch_size, "window": settings.window,
            "queue": settings.queue, "result_ttl": settings.result_ttl,
        })
        pipe.expire(keys.run(run_id), settings.result_ttl)
        pipe.zadd(keys.RUNS, {run_id: time.time()})
        pipe.execute()
    return run_id


def in_flight(connection: redis.Redis, run_id: str, enqueued: int) -> int:
    """Images enqueued for this run whose results are not stored yet."""
    return enqueued - int(connection.hlen(keys.run_results(run_id)))


def enqueue_folder(connection: redis.Redis, run_id: str, root: Path, settings: Settings) -> int:
    """Send every matching file of root as batch jobs, never exceeding the window; return the count."""
    queue = batch_queue(connection, settings.queue)
    enqueued = 0
    last_reap = time.monotonic()
    for index, chunk in enumerate(chunks(walk(root, settings.extensions, settings.globs),
                                         settings.batch_size)):
        while in_flight(connection, run_id, enqueued) + len(chunk) > max(settings.window, len(chunk)):
            if time.monotonic() - last_reap > 2.0:
                reap_failed_batches(connection, run_id)
                last_reap = time.monotonic()
            time.sleep(0.02)
        enqueue_batch(connection, queue, run_id, index, chunk, settings)
        enqueued += len(chunk)
    connection.hset(keys.run(run_id), mapping={"status": "enqueued", "enqueued_at": time.time()})
    return enqueued


def enqueue_batch(connection: redis.Redis, queue: Queue, run_id: str, index: int, chunk: list[Found],
                  settings: Settings) -> None:
    """Store one batch's file bytes (or why a file cannot be read) and enqueue its job."""
    payload: dict[str, bytes | str] = {"paths": json.dumps([f.relative for f in chunk])}
    for position, found in enumerate(chunk):
        data, problem = read(found, settings.max_bytes)
        if data is None:
            payload[f"{position}:error"] = problem or "unreadable"
        else:
            payload[str(position)] = data
    with connection.pipeline(transaction=True) as pipe:
        pipe.hset(keys.batch(run_id, index), mapping=payload)  # type: ignore[arg-type]
        pipe.expire(keys.batch(run_id, index), settings.result_ttl)
        pipe.hincrby(keys.run(run_id), "total", len(chunk))
        pipe.hincrby(keys.run(run_id), "batches", 1)
        pipe.execute()
    queue.enqueue(
        JOB_FUNCTION, args=(run_id, index, settings.result_ttl), job_id=job_id(run_id, index),
        description=f"classify run {run_id} batch {index} ({len(chunk)} images)",
        job_timeout=settings.job_timeout, result_ttl=3600, failure_ttl=settings.result_ttl,
        retry=Retry(max=settings.retries) if settings.retries else None,
    )


def reap_failed_batches(connection: redis.Redis, run_id: str) -> int:
    """Give every image of a batch whose job failed for good a failed result naming the reason."""
    run_meta = decode_hash(connection.hgetall(keys.run(run_id)))  # type: ignore[arg-type]
    queue = batch_queue(connection, run_meta.get("queue", keys.DEFAULT_QUEUE))
    registry = FailedJobRegistry(queue=queue)
    reaped = 0
    for failed_id in registry.get_job_ids():
        parsed = parse_job_id(failed_id)
        if parsed is None or parsed[0] != run_id:
            continue
        batch = parsed[1]
        raw_paths = connection.hget(keys.batch(run_id, batch), "paths")
        if raw_paths is None:
            continue  # its results are stored already
        reason = failure_reason(connection, failed_id)
        records = [result_record(path, batch, error=f"{path}: batch {batch} failed in the worker: {reason}")
                   for path in json.loads(raw_paths)]
        if store_results(connection, run_id, batch, records, int(run_meta.get("result_ttl", 86400))):
            reaped += 1
    return reaped


def failure_reason(connection: redis.Redis, failed_id: str) -> str:
    try:
        job = Job.fetch(failed_id, connection=connection, serializer=batch_queue(connection).serializer)
        result = job.latest_result()
    except Exception as exc:  # the job hash may be gone; the failure still needs reporting
        return f"job {failed_id} failed ({exc.__class__.__name__})"
    text = (result.exc_string if result is not None else None) or "unknown error"
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return lines[-1] if lines else "unknown error"


def follow(connection: redis.Redis, run_id: str, *, wait: bool = True,
           should_stop: Callable[[], bool] = lambda: False) -> Iterator[Record]:
    """Yield a run's results in the order they finished; with wait, until the run is complete."""
    for line in follow_lines(connection, run_id, wait=wait, should_stop=should_stop):
        yield json.loads(line)


def follow_lines(connection: redis.Redis, run_id: str, *, wait: bool = True,
                 should_stop: Callable[[], bool] = lambda: False) -> Iterator[str]:
    """Like `follow`, as the stored JSON lines: no parsing when they are only passed on."""
    if not connection.exists(keys.run(run_id)):
        raise RunError(f"no such run: {run_id} (never created, or its results expired)")
    last_id = "0-0"
    seen = 0
    last_reap = time.monotonic()
    while True:
        block = 500 if wait else None
        response: list[Any] = connection.xread(  # type: ignore[assignment]
            {keys.run_events(run_id): last_id}, count=200, block=block)
        for _stream, entries in response or []:
            for entry_id, fields in entries:
                last_id = text(entry_id)
                for line in text(fields.get(b"results", b"")).splitlines():
                    seen += 1
                    yield line
        if response:
            continue
        meta = decode_hash(connection.hgetall(keys.run(run_id)))  # type: ignore[arg-type]
        complete = meta.get("status") == "enqueued" and seen >= int(meta.get("total", 0))
        if complete or not wait or should_stop():
            return
        if time.monotonic() - last_reap > 2.0:
            reap_failed_batches(connection, run_id)
            last_reap = time.monotonic()


def run_status(connection: redis.Redis, run_id: str) -> dict[str, Any]:
    """Counts for one run: images total, queued, in progress, done, failed, and throughput."""
    meta = decode_hash(connection.hgetall(keys.run(run_id)))  # type: ignore[arg-type]
    if not meta:
        raise RunError(f"no such run: {run_id} (never created, or its results expired)")
    total = int(meta.get("total", 0))
    finished = int(connection.hlen(keys.run_results(run_id)))
    failed = int(connection.scard(keys.run_failed(run_id)))
    queue = batch_queue(connection, meta.get("queue", keys.DEFAULT_QUEUE))
    started = sum(1 for j in queue.started_job_registry.get_job_ids()
                  if (p := parse_job_id(j)) is not None and p[0] == run_id)
    in_progress = min(started * int(meta.get("batch_size", 1)), total - finished)
    created = float(meta.get("created_at", time.time()))
    last: list[Any] = connection.xrevrange(keys.run_events(run_id), count=1)  # type: ignore[assignment]
    finished_at = int(text(last[0][0]).split("-")[0]) / 1000 if last else created
    elapsed = max(finished_at - created, 1e-9)
    return {
        "run": run_id, "root": meta.get("root"), "status": meta.get("status"),
        "complete": meta.get("status") == "enqueued" and finished >= total,
        "total": total, "queued": total - finished - in_progress, "in_progress": in_progress,
        "done": finished - failed, "failed": failed,
        "images_per_second": round(finished / elapsed, 1) if finished else 0.0,
    }
