"""Runs: a folder cut into batches, enqueued under a window, and its results streamed back.

The window bounds how many images sit in Redis at once: a batch is enqueued only when the
images enqueued but not yet finished leave room for it. Producer and Redis memory stay flat
whatever the size of the folder.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from itertools import islice
from pathlib import Path
from typing import Any

import redis
from rq import Queue, Retry
from rq.job import Job, JobStatus
from rq.registry import FailedJobRegistry

from digits import keys
from digits.connection import text
from digits.limits import DEFAULT_MAX_BYTES, EXTENSIONS
from digits.queueing import JOB_FUNCTION, batch_queue, job_id, parse_job_id
from digits.recovery import recover_abandoned
from digits.results import event_lines, result_record, store_results
from producer.files import Found, read, walk

log = logging.getLogger(__name__)

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
    expect: str | None = None  # digits per image, as a count ("5") or a pattern ("#####-####")
    review_threshold: float | None = None  # None: each worker's own threshold

    def reading_options(self) -> dict[str, Any]:
        """What the worker needs to know about reading this run's images (stored with each batch)."""
        return {k: v for k, v in (("expect", self.expect), ("review_threshold", self.review_threshold))
                if v is not None}


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
            "root": str(root.resolve()), "created_at": time.time(), "status": "enqueueing", "total": 0,
            "batches": 0, "batch_size": settings.batch_size, "window": settings.window,
            "queue": settings.queue, "result_ttl": settings.result_ttl, "settings": settings_json(settings),
        })
        pipe.expire(keys.run(run_id), settings.result_ttl)
        pipe.zadd(keys.RUNS, {run_id: time.time()})
        pipe.execute()
    return run_id


def settings_json(settings: Settings) -> str:
    return json.dumps(asdict(settings))


def stored_settings(connection: redis.Redis, run_id: str) -> tuple[Path, Settings]:
    """The folder and settings a run was created with, so `--resume` sends the rest the same way."""
    meta = decode_hash(connection.hgetall(keys.run(run_id)))  # type: ignore[arg-type]
    if not meta:
        raise RunError(f"no such run: {run_id} (never created, or its results expired)")
    if "settings" not in meta:
        raise RunError(f"run {run_id} cannot be resumed: it was made by `watch` or an older version")
    fields = json.loads(meta["settings"])
    fields["extensions"], fields["globs"] = tuple(fields["extensions"]), tuple(fields["globs"])
    return Path(meta["root"]), Settings(**fields)


SWEEP_SECONDS = 2.0  # how often a producer checks the jobs of its open batches


class Sender:
    """Sends a folder's files as batches under the window, and sees every batch through.

    A pass sends every file that has no result yet and is not in an open batch, so the same
    pass resumes a run whose producer was killed, and re-sends what a Redis restart lost. The
    open batches (payload in Redis, no results yet) are tracked here: a batch whose job is lost,
    or finished while its payload is still there (its results were lost), is enqueued again; a
    batch whose job failed for good gets failed results naming the reason.
    """

    def __init__(self, connection: redis.Redis, run_id: str, root: Path, settings: Settings) -> None:
        self.redis = connection
        self.run_id = run_id
        self.root = root
        self.settings = settings
        self.queue = batch_queue(connection, settings.queue)
        self.open: dict[int, int] = {}  # batch index -> images, for batches not finished yet
        self.unplaced: set[int] = set()  # open batches whose job the last sweep found nowhere
        self.next_index = int(connection.hget(keys.run(run_id), "batches") or 0)
        self.last_sweep = time.monotonic()

    def deliver(self) -> int:
        """Passes until one finds nothing left to send and every batch is finished; return the file count."""
        while True:
            sent, total = self.send_pass()
            self.wait_for_open(0)
            if sent == 0:
                return total

    def send_pass(self) -> tuple[int, int]:
        """Send every file without a result that no open batch holds; return (sent, files found)."""
        held = self.adopt_open_batches()
        sent = total = 0
        waiting: list[Found] = []
        size = self.settings.batch_size
        for chunk in chunks(walk(self.root, self.settings.extensions, self.settings.globs), size):
            total += len(chunk)
            done = self.redis.hmget(keys.run_results(self.run_id), [f.relative for f in chunk])
            waiting += [f for f, result in zip(chunk, done, strict=True)
                        if result is None and f.relative not in held]
            while len(waiting) >= size:
                self.send(waiting[:size])
                sent += size
                waiting = waiting[size:]
            self.redis.hset(keys.run(self.run_id), "total", max(total, self.known_total()))
        if waiting:
            self.send(waiting)
            sent += len(waiting)
        self.redis.hset(keys.run(self.run_id), mapping={"total": total, "status": "enqueued",
                                                        "enqueued_at": time.time()})
        return sent, total

    def known_total(self) -> int:
        return int(self.redis.hget(keys.run(self.run_id), "total") or 0)

    def adopt_open_batches(self) -> set[str]:
        """Batches left open by an earlier pass or producer: watch them, and return the paths they hold."""
        indexes = range(self.next_index)
        with self.redis.pipeline(transaction=False) as pipe:
            for index in indexes:
                pipe.hget(keys.batch(self.run_id, index), "paths")
            replies: list[bytes | None] = pipe.execute()
        held: set[str] = set()
        for index, raw in zip(indexes, replies, strict=True):
            if raw is not None:
                paths = json.loads(raw)
                self.open[index] = len(paths)
                held.update(paths)
        return held

    def send(self, chunk: list[Found]) -> None:
        self.wait_for_open(max(self.settings.window - len(chunk), 0))
        index = self.next_index
        self.next_index += 1
        enqueue_batch(self.redis, self.queue, self.run_id, index, chunk, self.settings)
        self.open[index] = len(chunk)

    def wait_for_open(self, most: int) -> None:
        """Wait until at most `most` images are in open batches, seeing each batch through."""
        while sum(self.open.values()) > most:
            self.forget_finished()
            if time.monotonic() - self.last_sweep > SWEEP_SECONDS:
                self.sweep()
                self.last_sweep = time.monotonic()
            if sum(self.open.values()) > most:
                time.sleep(0.02)

    def forget_finished(self) -> None:
        """A batch is no longer open once its payload is gone: finished, or lost (the next pass sees which)."""
        indexes = list(self.open)
        with self.redis.pipeline(transaction=False) as pipe:
            for index in indexes:
                pipe.exists(keys.batch(self.run_id, index))
            exists: list[int] = pipe.execute()
        for index, present in zip(indexes, exists, strict=True):
            if not present:
                del self.open[index]

    def sweep(self) -> None:
        """Enqueue again the open batches whose job is lost, finished without results, or dropped
        by a sweeper that died mid-recovery; fail the failed."""
        recover_abandoned(self.redis, self.queue)
        ids = [job_id(self.run_id, index) for index in self.open]
        jobs = Job.fetch_many(ids, connection=self.redis, serializer=self.queue.serializer)
        waiting = []
        for index, job in zip(list(self.open), jobs, strict=True):
            status = job.get_status(refresh=False) if job is not None else None
            if status is None or status == JobStatus.FINISHED:
                log.warning("run %s batch %d: job %s, enqueueing it again", self.run_id, index,
                            "lost" if status is None else "finished but its results are missing")
                enqueue_job(self.queue, self.run_id, index, self.open[index], self.settings)
            elif status in (JobStatus.FAILED, JobStatus.STOPPED, JobStatus.CANCELED):
                reap_batch(self.redis, self.run_id, index, job_id(self.run_id, index), self.settings.result_ttl)
            elif status in (JobStatus.QUEUED, JobStatus.STARTED):
                waiting.append(index)
        unplaced = self.find_unplaced(waiting)
        for index in unplaced & self.unplaced:  # nowhere on two sweeps in a row: nobody will run it
            log.warning("run %s batch %d: job is in no queue or registry, enqueueing it again", self.run_id, index)
            enqueue_job(self.queue, self.run_id, index, self.open[index], self.settings)
        self.unplaced = unplaced

    def find_unplaced(self, indexes: list[int]) -> set[int]:
        """The batches whose job is neither queued, popped by a worker, nor started (read atomically)."""
        if not indexes:
            return set()
        with self.redis.pipeline(transaction=True) as pipe:
            pipe.lrange(self.queue.key, 0, -1)
            pipe.lrange(self.queue.intermediate_queue_key, 0, -1)
            pipe.zrange(self.queue.started_job_registry.key, 0, -1)
            queued, popped, started = pipe.execute()
        placed = {text(j) for j in queued + popped} | {text(e).rsplit(":", 1)[0] for e in started}
        return {index for index in indexes if job_id(self.run_id, index) not in placed}


def enqueue_folder(connection: redis.Redis, run_id: str, root: Path, settings: Settings) -> int:
    """One pass: send every file of root that has no result yet, under the window; return the count sent."""
    sent, _total = Sender(connection, run_id, root, settings).send_pass()
    return sent


def deliver(connection: redis.Redis, run_id: str, root: Path, settings: Settings) -> int:
    """Send root and see every batch through, re-sending whatever got lost; return the file count."""
    return Sender(connection, run_id, root, settings).deliver()


def enqueue_batch(connection: redis.Redis, queue: Queue, run_id: str, index: int, chunk: list[Found],
                  settings: Settings) -> None:
    """Store one batch's file bytes (or why a file cannot be read) and enqueue its job."""
    payload: dict[str, bytes | str] = {"paths": json.dumps([f.relative for f in chunk])}
    if options := settings.reading_options():
        payload["options"] = json.dumps(options)
    for position, found in enumerate(chunk):
        data, problem = read(found, settings.max_bytes)
        if data is None:
            payload[f"{position}:error"] = problem or "unreadable"
        else:
            payload[str(position)] = data
    with connection.pipeline(transaction=True) as pipe:  # payload and job land together, in one round trip
        pipe.multi()  # explicit, as RQ expects of a pipeline it is handed
        pipe.hset(keys.batch(run_id, index), mapping=payload)  # type: ignore[arg-type]
        pipe.expire(keys.batch(run_id, index), settings.result_ttl)
        pipe.hset(keys.run(run_id), "batches", index + 1)  # indexes only grow: a retry sets the same value
        enqueue_job(queue, run_id, index, len(chunk), settings, pipe)
        pipe.execute()


def enqueue_job(queue: Queue, run_id: str, index: int, images: int, settings: Settings,
                pipeline: redis.client.Pipeline | None = None) -> None:
    """The job of a stored batch; enqueueing it again (same id) replaces the lost or stale one.

    With a pipeline, the job is only queued on it: it reaches Redis when the caller executes it."""
    queue.enqueue(
        JOB_FUNCTION, args=(run_id, index, settings.result_ttl), job_id=job_id(run_id, index),
        description=f"classify run {run_id} batch {index} ({images} images)",
        job_timeout=settings.job_timeout, result_ttl=3600, failure_ttl=settings.result_ttl,
        retry=Retry(max=settings.retries) if settings.retries else None, pipeline=pipeline,
    )


def reap_failed_batches(connection: redis.Redis, run_id: str) -> int:
    """Give every image of a batch whose job failed for good a failed result naming the reason."""
    run_meta = decode_hash(connection.hgetall(keys.run(run_id)))  # type: ignore[arg-type]
    queue = batch_queue(connection, run_meta.get("queue", keys.DEFAULT_QUEUE))
    reaped = 0
    for failed_id in FailedJobRegistry(queue=queue).get_job_ids():
        parsed = parse_job_id(failed_id)
        if parsed is not None and parsed[0] == run_id and reap_batch(
                connection, run_id, parsed[1], failed_id, int(run_meta.get("result_ttl", 86400))):
            reaped += 1
    return reaped


def reap_batch(connection: redis.Redis, run_id: str, batch: int, failed_id: str, result_ttl: int) -> bool:
    """Finish one batch whose job failed: each of its images gets a result with the job's error."""
    raw_paths = connection.hget(keys.batch(run_id, batch), "paths")
    if raw_paths is None:
        return False  # its results are stored already
    reason = failure_reason(connection, failed_id)
    records = [result_record(path, batch, error=f"{path}: batch {batch} failed in the worker: {reason}")
               for path in json.loads(raw_paths)]
    return store_results(connection, run_id, batch, records, result_ttl)


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
    for _line, record in follow_records(connection, run_id, wait=wait, should_stop=should_stop):
        yield record


def follow_lines(connection: redis.Redis, run_id: str, *, wait: bool = True,
                 should_stop: Callable[[], bool] = lambda: False) -> Iterator[str]:
    """Like `follow`, as the stored JSON lines: each image once, even if a batch was redone."""
    for line, _record in follow_records(connection, run_id, wait=wait, should_stop=should_stop):
        yield line


def follow_records(connection: redis.Redis, run_id: str, *, wait: bool = True,
                   should_stop: Callable[[], bool] = lambda: False) -> Iterator[tuple[str, Record]]:
    """Like `follow`, each result as its stored JSON line and parsed (parsed once: it is needed for the path)."""
    if not connection.exists(keys.run(run_id)):
        raise RunError(f"no such run: {run_id} (never created, or its results expired)")
    last_id = "0-0"
    seen: set[str] = set()  # a batch redone after a Redis restart lost its first result must not repeat
    last_sweep = time.monotonic()
    total = 0  # the run's total when last read: completion is worth checking once that many are seen
    while True:
        block = 500 if wait else None
        response: list[Any] = connection.xread(  # type: ignore[assignment]
            {keys.run_events(run_id): last_id}, count=200, block=block)
        for _stream, entries in response or []:
            last_id = text(entries[-1][0])
            for line in event_lines(connection, run_id, entries):
                record = json.loads(line)
                if record["path"] not in seen:
                    seen.add(record["path"])
                    yield line, record
        if response and (not wait or len(seen) < total):
            continue
        # Checked right after the last result too: blocking once more would add half a second to every run.
        meta = decode_hash(connection.hgetall(keys.run(run_id)))  # type: ignore[arg-type]
        total = int(meta.get("total", 0))
        if meta.get("status") == "enqueued" and len(seen) >= total:
            return
        if response:
            continue
        if not wait or should_stop():
            return
        if time.monotonic() - last_sweep > SWEEP_SECONDS:
            recover_abandoned(connection, batch_queue(connection, meta.get("queue", keys.DEFAULT_QUEUE)))
            reap_failed_batches(connection, run_id)
            last_sweep = time.monotonic()


def run_status(connection: redis.Redis, run_id: str) -> dict[str, Any]:
    """Counts for one run: images total, queued, in progress, done, failed, flagged for review,
    and throughput."""
    meta = decode_hash(connection.hgetall(keys.run(run_id)))  # type: ignore[arg-type]
    if not meta:
        raise RunError(f"no such run: {run_id} (never created, or its results expired)")
    total = int(meta.get("total", 0))
    finished = int(connection.hlen(keys.run_results(run_id)))
    failed = int(connection.scard(keys.run_failed(run_id)))
    review = int(connection.scard(keys.run_review(run_id)))
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
        "done": finished - failed, "failed": failed, "review": review,
        "images_per_second": round(finished / elapsed, 1) if finished else 0.0,
    }
