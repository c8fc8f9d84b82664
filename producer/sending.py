"""Sending a folder: its files cut into batches, enqueued under a window, each batch seen through.

A batch holds up to --batch-size images, fewer once their bytes reach --batch-bytes. The window
bounds the images in Redis: a batch is enqueued only when those not yet finished leave room for
it and fewer than window / batch size batches are open (so large files hold no more bytes than
small ones). Producer and Redis memory stay flat whatever the size of the folder.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from collections.abc import Iterable, Iterator
from itertools import islice
from pathlib import Path
from typing import Any, NamedTuple

import redis
from rq.job import Job, JobStatus

from digits import defaults, keys
from digits.connection import text
from digits.payload import PayloadError, batch_paths
from digits.queueing import batch_queue, job_id
from digits.recovery import fail_batch, failure_reason, recover_abandoned
from digits.results import paths_with_results, results_count
from producer.batches import enqueue_batch, enqueue_job
from producer.files import Found, Share, walk
from producer.leases import ShareLease
from producer.runs import Settings, finish_shares, run_shares, show_found

log = logging.getLogger(__name__)


class Stopped(Exception):
    """The sender was told to stop (Ctrl-C, SIGTERM): what it sent stays sent, `--resume` sends the rest."""


def chunks(items: Iterable[Found], size: int) -> Iterator[list[Found]]:
    """Consecutive lists of `size` items (the last may be shorter), read lazily."""
    iterator = iter(items)
    while chunk := list(islice(iterator, size)):
        yield chunk


class Pass(NamedTuple):
    """What one pass over the folder did."""

    sent: int  # files sent in new batches
    found: int  # files of the share found
    adopted: int  # files in batches left open by an earlier pass or producer, seen through by this one


class Sender:
    """Sends a folder's files as batches under the window, and sees every batch through.

    A pass sends every file that has no result yet and is not in an open batch, so the same
    pass resumes a run whose producer was killed, and re-sends what a Redis restart lost. The
    open batches (payload in Redis, no results yet) are tracked here: a batch whose job is lost,
    or finished while its payload is still there (its results were lost), is enqueued again; a
    batch whose job failed for good gets failed results naming the reason.
    """

    def __init__(self, connection: redis.Redis, run_id: str, root: Path, settings: Settings,
                 stop: threading.Event | None = None, share: Share | None = None) -> None:
        self.stop = stop or threading.Event()
        self.share = share or Share.whole(run_shares(connection, run_id))
        self.redis = connection
        self.run_id = run_id
        self.root = root
        self.settings = settings
        # producers sharing a run share its window too, so the run's images in Redis stay within it
        self.window = max(settings.window * len(self.share.parts) // self.share.of, 1)
        self.most_batches = settings.open_batches(self.window)
        self.queue = batch_queue(connection, settings.queue)
        self.open: dict[int, int] = {}  # batch index -> images, for batches not finished yet
        self.unplaced: set[int] = set()  # open batches whose job the last sweep found nowhere
        self.last_sweep = time.monotonic()
        newest = connection.xrevrange(keys.run_events(run_id), count=1)
        self.cursor = text(newest[0][0]) if newest else "0-0"  # batches finish after this event
        self.lease = ShareLease(connection, run_id, self.share)  # held by deliver and enqueue_folder

    def deliver(self) -> int:
        """Passes until every file of the share has its result; return the file count.

        A pass after which the run's results grew by exactly the files it sent and adopted is the
        last: each of those has its result, and every other file it found had one already. The
        pass that would check again (a walk and an HMGET of every path: 3.4-4.1 µs of the
        producer's CPU a digit, benchmarks.follow) is spared. When the count falls short (a Redis
        restart lost payloads or results), or other producers add to the run, the next pass finds
        what is missing. A share of a run that others send too ends only on a pass that sent
        nothing: their results grow the count, so it says nothing of this share's.
        """
        alone = len(self.share.parts) == self.share.of  # no other producer adds results to the run
        while True:
            before = self.results_count()
            done = self.send_pass()
            self.wait_for_open(0)
            if done.sent == 0 or (alone and self.results_count() == before + done.sent + done.adopted):
                return done.found

    def results_count(self) -> int:
        return results_count(self.redis, self.run_id)

    def send_pass(self) -> Pass:
        """Send every file of the share without a result that no open batch holds."""
        held = self.adopt_open_batches()
        # The paths with a result, read after the open batches: a batch's payload goes only as its
        # results and event are written, so none is missed. A run with no batch open and no result
        # yet (a new run's first pass) has none to read.
        mine = None if len(self.share.parts) == self.share.of else self.share.holds
        done = paths_with_results(self.redis, self.run_id, mine) if held or self.results_count() else set()
        sent = total = 0
        totals: Counter[int] = Counter()  # files found in each part of the share
        waiting: list[Found] = []
        size = self.settings.batch_size
        for chunk in chunks(self.files(totals), size):
            total += len(chunk)
            waiting += [f for f in chunk if f.relative not in done and f.relative not in held]
            while len(waiting) >= size:
                taken = self.send(waiting[:size])
                sent += taken
                waiting = waiting[taken:]
            show_found(self.redis, self.run_id, self.share, totals)
        while waiting:
            taken = self.send(waiting)
            sent += taken
            waiting = waiting[taken:]
        finish_shares(self.redis, self.run_id, self.share, totals)
        return Pass(sent, total, len(held))

    def files(self, totals: Counter[int]) -> Iterator[Found]:
        """The folder's files in this producer's share, counted by part as they are found."""
        for found in walk(self.root, self.settings.extensions, self.settings.globs,
                          part=self.settings.part_of_folder()):
            part = self.share.part_of(found.relative)
            if part in self.share.parts:
                totals[part] += 1
                yield found

    def adopt_open_batches(self) -> set[str]:
        """Batches of this share left open by an earlier pass or producer: watch them, and return
        the paths they hold."""
        indexes = range(int(self.redis.hget(keys.run(self.run_id), "batches") or 0))
        with self.redis.pipeline(transaction=False) as pipe:
            for index in indexes:
                pipe.hget(keys.batch(self.run_id, index), "paths")
            replies: list[Any] = pipe.execute(raise_on_error=False)  # a key of another type is a corrupt payload
        held: set[str] = set()
        for index, raw in zip(indexes, replies, strict=True):
            if raw is None:
                continue  # finished
            try:
                if isinstance(raw, Exception):
                    raise PayloadError(f"run {self.run_id} batch {index}: payload unreadable ({raw})")
                paths = batch_paths(raw, self.run_id, index)
            except PayloadError as exc:
                log.warning("%s: dropping it; its files are sent again", exc)
                self.redis.delete(keys.batch(self.run_id, index))
                continue
            if paths and not self.share.holds(paths[0]):
                continue  # another producer's share: that producer sees it through
            self.open[index] = len(paths)
            held.update(paths)
        return held

    def send(self, chunk: list[Found]) -> int:
        """Enqueue chunk's first files as a batch once the window has room; return how many it took."""
        self.wait_for_open(max(self.window - len(chunk), 0), self.most_batches - 1)
        if self.stop.is_set():
            raise Stopped(f"run {self.run_id}: stopped with {len(chunk)} more images to send")
        self.lease.check()
        index, taken = enqueue_batch(self.redis, self.queue, self.run_id, chunk, self.settings,
                                     self.settings.batch_bytes)
        self.open[index] = taken
        return taken

    def wait_for_open(self, most: int, most_batches: int | None = None) -> None:
        """Wait until at most `most` images (and `most_batches` batches) are open, seeing each through."""
        while self.too_many_open(most, most_batches):
            if self.stop.is_set():
                raise Stopped(f"run {self.run_id}: stopped while {sum(self.open.values())} images are in flight")
            self.lease.check()  # a producer that took the share over sees these batches through
            if time.monotonic() - self.last_sweep > defaults.PRODUCER_SWEEP_SECONDS:
                self.forget_finished()
                self.sweep()
                self.last_sweep = time.monotonic()
            if self.too_many_open(most, most_batches):
                self.await_finished()

    def too_many_open(self, most: int, most_batches: int | None) -> bool:
        return sum(self.open.values()) > most or (most_batches is not None and len(self.open) > most_batches)

    def await_finished(self) -> None:
        """Block until batches finish (their events), or a tenth of a second passes, and close
        them: no polling of every open batch while the workers are busy (a sweep still checks
        each batch's payload, for those whose results a Redis restart lost)."""
        reply: list[Any] = self.redis.xread(  # type: ignore[assignment]
            {keys.run_events(self.run_id): self.cursor}, count=1000, block=100)
        for _stream, entries in reply or []:
            self.cursor = text(entries[-1][0])
            for _id, fields in entries:
                self.open.pop(int(fields[b"batch"]), None)

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
            if status == JobStatus.FINISHED and not self.redis.exists(keys.batch(self.run_id, index)):
                del self.open[index]  # it finished after forget_finished looked: its results are stored
            elif status is None or status == JobStatus.FINISHED:
                log.warning("run %s batch %d: job %s, enqueueing it again", self.run_id, index,
                            "lost" if status is None else "finished but its results are missing")
                enqueue_job(self.queue, self.run_id, index, self.open[index], self.settings)
            elif status in (JobStatus.FAILED, JobStatus.STOPPED, JobStatus.CANCELED):
                reason = failure_reason(self.redis, job_id(self.run_id, index))
                fail_batch(self.redis, self.run_id, index, f"batch {index} failed in the worker: {reason}")
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


def enqueue_folder(connection: redis.Redis, run_id: str, root: Path, settings: Settings,
                   share: Share | None = None) -> int:
    """One pass: send every file of root (or of its share) that has no result yet, under the
    window; return the count sent. ShareBusy if another producer sends that share now."""
    sender = Sender(connection, run_id, root, settings, share=share)
    with sender.lease:
        return sender.send_pass().sent


def deliver(connection: redis.Redis, run_id: str, root: Path, settings: Settings,
            stop: threading.Event | None = None, share: Share | None = None) -> int:
    """Send root (or its share) and see every batch through, re-sending whatever got lost; return
    the file count. Raises Stopped soon after `stop` is set, ShareBusy if another producer sends
    that share now (ShareLost if one took it over while this one stalled)."""
    sender = Sender(connection, run_id, root, settings, stop, share)
    with sender.lease:
        return sender.deliver()
