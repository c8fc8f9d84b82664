"""The supervisor of `digits-worker --count N`: N worker processes, respawned when they die,
stopped together; and its Redis side, which requeues what dead workers abandoned."""

from __future__ import annotations

import logging
import multiprocessing
import os
import signal
import socket
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from types import FrameType

import redis
from rq import Worker

from digits import defaults, keys
from digits.connection import connect, redact
from digits.queueing import batch_queue
from digits.recovery import recover_abandoned
from worker.process import FATAL, run_one
from worker.settings import WorkerSettings
from worker.worker import DigitsWorker

log = logging.getLogger("digits.worker")


def worker_name(slot: int) -> str:
    """Unique per process start: host, supervisor pid, slot and a random suffix."""
    return f"{socket.gethostname()}.{os.getpid()}.{slot}.{uuid.uuid4().hex[:6]}"


class Recoverer:
    """The supervisor's Redis side: clears a dead worker's traces and requeues abandoned batches."""

    def __init__(self, url: str, queues: tuple[str, ...]) -> None:
        self.connection = connect(url, check=False)
        self.queues = [batch_queue(self.connection, q) for q in queues]
        self.last_sweep = 0.0

    def bury(self, name: str) -> None:
        """A worker process died without deregistering: drop its registration and lease now."""
        try:
            found = DigitsWorker.find_by_key(Worker.redis_worker_namespace_prefix + name, self.connection)
            if found is not None:
                found.register_death()
            self.connection.delete(keys.worker_lease(name))
            self.sweep()
        except redis.RedisError as exc:
            log.warning("cannot clean up after worker %s yet: %s", name, exc)

    def sweep(self, every: float = 0.0) -> None:
        if time.monotonic() - self.last_sweep < every:
            return
        self.last_sweep = time.monotonic()
        try:
            for queue in self.queues:
                recover_abandoned(self.connection, queue)
        except redis.RedisError as exc:
            log.warning("cannot look for abandoned jobs: %s", exc)


@dataclass
class Slot:
    """One supervised worker process: its name, and how long its next respawn waits."""

    name: str
    process: multiprocessing.process.BaseProcess
    started: float
    delay: float = 1.0


def supervise(count: int, settings: WorkerSettings) -> int:
    """Run `count` worker processes; respawn any that dies, stop all on SIGTERM or Ctrl-C.

    A dead worker's batch is requeued at once. Respawns wait 1 s, and back off exponentially
    (2 s, 4 s, ... MAX_RESPAWN_DELAY) while processes keep failing right after they start; a
    process that exits FATAL stops them all, and the supervisor returns FATAL. It sweeps once
    before it starts any (a Redis error there is the command's error). With a metrics port,
    process i serves Prometheus metrics on metrics_port + i.
    """
    context = multiprocessing.get_context("spawn")
    stopping = fatal = False
    recoverer = Recoverer(settings.url, settings.queues)
    for queue in recoverer.queues:  # at once, and a user Redis refuses it stops here, with its error
        recover_abandoned(recoverer.connection, queue)

    def spawn(slot: int, delay: float = 1.0) -> Slot:
        name = worker_name(slot)
        port = None if settings.metrics_port is None else settings.metrics_port + slot
        process = context.Process(target=run_one, args=(name, settings, port), daemon=False)
        process.start()
        return Slot(name, process, time.monotonic(), delay)

    def stop(signum: int, frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True
        for slot in slots:
            if slot is not None and slot.process.is_alive() and slot.process.pid is not None:
                os.kill(slot.process.pid, signal.SIGTERM)  # each finishes its current job first

    slots: list[Slot | None] = [spawn(index) for index in range(count)]
    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    log.info("started %d worker process(es) on %s, queues %s", count, redact(settings.url), ",".join(settings.queues))
    while any(s is not None for s in slots):
        for index, slot in enumerate(slots):
            if slot is None or slot.process.is_alive():
                continue
            slot.process.join()
            if slot.process.exitcode == FATAL and not stopping:
                fatal = True
                stop(signal.SIGTERM, None)  # the others cannot work either
            if stopping or settings.burst or slot.process.exitcode == 0:
                slots[index] = None
                continue
            recoverer.bury(slot.name)
            slots[index] = respawn(slot, index, spawn, lambda: stopping)
        if not stopping and not settings.burst:
            recoverer.sweep(every=defaults.SUPERVISOR_SWEEP_SECONDS)
        time.sleep(0.2)
    return FATAL if fatal else 0


def respawn(slot: Slot, index: int, spawn: Callable[[int, float], Slot], stopping: Callable[[], bool]) -> Slot | None:
    """A new process for a slot whose process died, after a delay that doubles while it keeps
    dying right after starting; None if told to stop meanwhile."""
    lived = time.monotonic() - slot.started
    crash_loop = (slot.process.exitcode or 0) > 0 and lived < defaults.QUICK_DEATH  # a signal's exit code is < 0
    delay = min(slot.delay * 2, defaults.MAX_RESPAWN_DELAY) if crash_loop else 1.0
    log.warning("worker pid %s exited with %s after %.0f s; starting a new one in %.0f s",
                slot.process.pid, slot.process.exitcode, lived, delay)
    return spawn(index, delay) if sleep_unless(stopping, delay) else None


def sleep_unless(stopped: Callable[[], bool], seconds: float) -> bool:
    """Sleep, but return False at once if told to stop meanwhile."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if stopped():
            return False
        time.sleep(0.1)
    return not stopped()
