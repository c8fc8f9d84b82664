"""`digits-producer watch`: a hot folder. Files are enqueued as they land and settle, in
micro-batches cut by size or by a maximum delay, and their results stream out as they finish.

A file counts as landed once its size and modification time have not changed for `settle`
seconds, so a file still being written waits. When its result is out, the file moves to
DIR/.digits/done (or DIR/.digits/failed); one that cannot be moved (a folder the watcher may not
write) stays, and is not sent again unless it changes. The files enqueued but not yet handled, and how far
the results were read, are kept in Redis, so a restarted watcher neither sends a file twice
nor loses a result.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import redis

from digits import defaults, keys
from digits.connection import text
from digits.queueing import batch_queue
from digits.recovery import reap_failed_batches
from digits.results import Result
from producer import runs
from producer.batches import enqueue_batch
from producer.files import Found, Share, walk
from producer.following import Follower
from producer.leases import ShareLease

log = logging.getLogger(__name__)
STATE_DIR = ".digits"


@dataclass(frozen=True)
class WatchSettings:
    settle: float = defaults.SETTLE  # seconds a file must stay unchanged before it is sent
    max_delay: float = defaults.MAX_DELAY  # seconds the first file of a micro-batch may wait for more
    poll: float = defaults.POLL  # seconds between folder scans


def make_state_dir(root: Path) -> None:
    """DIR/.digits, where the watch keeps the files it handled (done/, failed/) and, if told to, its
    results (`--output DIR/.digits/results.jsonl`, as in compose): made at start so that file can
    be opened. A folder the watcher may not write still gets its results streamed elsewhere."""
    try:
        (root / STATE_DIR).mkdir(exist_ok=True)
    except OSError as exc:
        log.warning("cannot make %s (%s): files will stay where they land", root / STATE_DIR, exc)


def watch_run_id(root: Path, name: str | None) -> str:
    """A stable run id per watched folder, so a restart continues the same run."""
    if name:
        return "watch-" + re.sub(r"[^A-Za-z0-9-]", "-", name)
    digest = hashlib.sha256(str(root.resolve()).encode()).hexdigest()[:8]
    return "watch-" + re.sub(r"[^A-Za-z0-9-]", "-", root.resolve().name)[:40] + f"-{digest}"


class Watcher:
    def __init__(self, connection: redis.Redis, root: Path, settings: runs.Settings, watch: WatchSettings,
                 emit: Callable[[Result], None], name: str | None = None) -> None:
        self.redis = connection
        self.root = root.resolve()
        self.settings = settings
        self.watch = watch
        self.emit = emit
        self.run_id = watch_run_id(self.root, name)
        self.queue = batch_queue(connection, settings.queue)
        try:
            meta = runs.run_meta(connection, self.run_id)
        except runs.RunError:  # a new watch
            runs.create_run(connection, self.root, settings, run_id=self.run_id)
            meta = {}
        connection.hset(keys.run(self.run_id), "status", "watching")
        self.follower = Follower(connection, self.run_id, meta.get("cursor", "0-0"))
        pending: dict[bytes, bytes] = connection.hgetall(keys.run_pending(self.run_id))  # type: ignore[assignment]
        self.pending: dict[str, bytes] = {text(k): v for k, v in pending.items()}  # display path -> real path
        unmoved: dict[bytes, bytes] = connection.hgetall(keys.run_unmoved(self.run_id))  # type: ignore[assignment]
        self.unmoved = {text(k): text(v) for k, v in unmoved.items()}  # handled, but could not be moved away
        self.seen: dict[str, tuple[tuple[int, int], float]] = {}  # path -> (size, mtime), unchanged since
        self.ready: list[Found] = []
        self.sizes: dict[str, int] = {}  # bytes of each ready or pending file sent by this process
        self.held_bytes = 0  # ... of those pending: with the images, bounded like a run's open batches
        self.most_bytes = settings.open_batches(settings.window) * settings.batch_bytes
        self.ready_since = 0.0
        self.last_reap = time.monotonic()
        self.lease = ShareLease(connection, self.run_id, Share())

    def run(self, should_stop: Callable[[], bool]) -> None:
        """Watch until should_stop says so, holding the run's lease all along: two watches of one
        folder under one name would send each file twice (ShareBusy for the second)."""
        log.info("watching %s as run %s (%d files pending from before)", self.root, self.run_id, len(self.pending))
        with self.lease:
            while not should_stop():
                self.step()

    def step(self) -> None:
        """One look at the folder: new files noted, due micro-batches sent, results collected."""
        self.scan()
        self.send_due()
        self.collect(block_ms=max(1, int(self.watch.poll * 1000)))
        if time.monotonic() - self.last_reap > defaults.PRODUCER_SWEEP_SECONDS:
            reap_failed_batches(self.redis, self.run_id, self.queue)
            self.last_reap = time.monotonic()

    def scan(self) -> None:
        """Note new or changed files; those unchanged for `settle` seconds become ready."""
        now = time.monotonic()
        present = set()
        waiting = {f.relative for f in self.ready}
        for found in walk(self.root, self.settings.extensions, self.settings.globs, skip_dirs=(STATE_DIR,),
                          part=self.settings.part_of_folder()):
            present.add(found.relative)
            if found.relative in self.pending or found.relative in waiting:
                continue
            state = signature(found.path)
            if found.relative in self.unmoved:
                if self.unmoved[found.relative] == f"{state[0]}:{state[1]}":
                    continue  # handled already; it stays because it could not be moved
                self.forget_unmoved(found.relative)  # it changed: a new file under the same name
            previous = self.seen.get(found.relative)
            if previous is None or previous[0] != state:
                self.seen[found.relative] = (state, now)
            elif now - previous[1] >= self.watch.settle:
                del self.seen[found.relative]
                if not self.ready:
                    self.ready_since = now
                self.ready.append(found)
                self.sizes[found.relative] = max(state[0], 0)
        for gone in set(self.seen) - present:
            del self.seen[gone]
        for gone in set(self.unmoved) - present:
            self.forget_unmoved(gone)

    def forget_unmoved(self, relative: str) -> None:
        del self.unmoved[relative]
        self.redis.hdel(keys.run_unmoved(self.run_id), relative)

    def send_due(self) -> None:
        """Enqueue a micro-batch when it is full (--batch-size files, or --batch-bytes) or its first
        file has waited `max_delay`; the window bounds the images pending, and their bytes as a
        run's open batches are bounded (those pending from before a restart count as none)."""
        while self.ready:
            chunk, chunk_bytes = self.micro_batch()
            full = len(chunk) < len(self.ready) or len(chunk) == self.settings.batch_size
            if not full and time.monotonic() - self.ready_since < self.watch.max_delay:
                return
            if (len(self.pending) + len(chunk) > self.settings.window
                    or (self.pending and self.held_bytes + chunk_bytes > self.most_bytes)):
                return  # the window is full: wait for results
            self.lease.check()
            self.ready = self.ready[len(chunk):]
            self.held_bytes += chunk_bytes
            real = {f.relative: os.fsencode(f.path) for f in chunk}
            self.redis.hset(keys.run_pending(self.run_id), mapping=real)  # type: ignore[arg-type]
            enqueue_batch(self.redis, self.queue, self.run_id, chunk, self.settings)
            self.redis.hincrby(keys.run(self.run_id), "total", len(chunk))
            self.pending.update(real)
            self.ready_since = time.monotonic()

    def micro_batch(self) -> tuple[list[Found], int]:
        """The next ready files, as many as --batch-size allows and until they hold --batch-bytes
        (the rule producer/batches.py applies to a run), and their bytes."""
        held = 0
        for count, found in enumerate(self.ready[:self.settings.batch_size]):
            if held >= self.settings.batch_bytes:
                return self.ready[:count], held
            held += self.sizes[found.relative]
        return self.ready[:self.settings.batch_size], held

    def collect(self, block_ms: int) -> None:
        """Emit finished results, move their files away, and remember how far we read."""
        cursor = self.follower.cursor
        found = self.follower.read(block_ms, count=100)
        for result in (result for batch in found for result in batch.results()):
            path = result.path
            if path not in self.pending:
                continue  # handled before a restart
            self.emit(result)
            self.held_bytes -= self.sizes.pop(path, 0)
            self.file_away(path, self.pending.pop(path), failed=result.failed)
            self.redis.hdel(keys.run_pending(self.run_id), path)
        if self.follower.cursor != cursor:
            self.redis.hset(keys.run(self.run_id), "cursor", self.follower.cursor)

    def file_away(self, relative: str, real_path: bytes, failed: bool) -> None:
        source = os.fsdecode(real_path)
        target = self.root / STATE_DIR / ("failed" if failed else "done") / os.path.relpath(source, self.root)
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            os.replace(source, target)
        except OSError as exc:
            size, mtime = signature(source)  # remembered, so that it is not sent again while unchanged
            self.unmoved[relative] = f"{size}:{mtime}"
            self.redis.hset(keys.run_unmoved(self.run_id), relative, self.unmoved[relative])
            log.warning("cannot move %s to %s (%s): its result is out; it stays, and is not sent again "
                        "unless it changes", source, target, exc)


def signature(path: str) -> tuple[int, int]:
    """A file's size and modification time, (-1, -1) if it cannot be read (a broken link, or a file
    that just went: it settles like any other, and gets a result that says why)."""
    try:
        stat = os.stat(path)
    except OSError:
        return -1, -1
    return stat.st_size, stat.st_mtime_ns
