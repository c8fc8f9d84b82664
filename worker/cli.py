"""`digits-worker`: start N worker processes on this host against one Redis."""

from __future__ import annotations

import logging
import multiprocessing
import os
import signal
import socket
import sys
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from types import FrameType

import click
import redis

from digits import keys, logs
from digits.connection import Command, connect, redact, redis_url_option, text
from digits.limits import DEFAULT_MAX_PIXELS
from digits.reading import DEFAULT_REVIEW_THRESHOLD

log = logging.getLogger("digits.worker")


def run_one(name: str, url: str, queues: list[str], burst: bool, log_level: str, log_format: str,
            metrics_port: int | None) -> None:
    """One worker process: connect, load the model lazily, work until told to stop."""
    from digits.queueing import batch_queue
    from digits.recovery import Lease
    from worker import metrics
    from worker.serving import SERVER, NoModelError
    from worker.worker import DigitsWorker

    logs.setup(log_level, log_format)
    if metrics_port is not None:
        metrics.serve(metrics_port)
    connection = connect(url, check=False)  # a Redis that is restarting is waited for, with backoff
    lease = Lease(connection, name).start()
    try:
        SERVER.refresh(connection, name)  # ready before the first job, not during it
    except NoModelError as exc:
        log.warning("%s; jobs will fail until a version is promoted", exc)
    worker = DigitsWorker([batch_queue(connection, q) for q in queues], connection=connection, name=name,
                          lease=lease)
    # RQ registers the worker before it installs its signal handlers; a stop signal in that
    # window would kill the process and leave a stale registration behind, so exit cleanly.
    signal.signal(signal.SIGTERM, exit_now)
    signal.signal(signal.SIGINT, exit_now)
    threading.Thread(target=stop_when_orphaned, args=(os.getppid(),), daemon=True).start()
    try:
        worker.work(burst=burst, logging_level=log_level)
    except SystemExit:
        worker.register_death()
    finally:
        lease.end()


def exit_now(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(0)


def stop_when_orphaned(parent: int) -> None:
    """If the supervisor dies (even by SIGKILL), finish the current job and stop, like on SIGTERM."""
    while os.getppid() == parent:
        time.sleep(1.0)
    log.warning("supervisor %d is gone; stopping after the current job", parent)
    os.kill(os.getpid(), signal.SIGTERM)


def worker_name(slot: int) -> str:
    """Unique per process start: host, supervisor pid, slot and a random suffix."""
    return f"{socket.gethostname()}.{os.getpid()}.{slot}.{uuid.uuid4().hex[:6]}"


class Recoverer:
    """The supervisor's Redis side: clears a dead worker's traces and requeues abandoned batches."""

    def __init__(self, url: str, queues: list[str]) -> None:
        from digits.queueing import batch_queue

        self.connection = connect(url, check=False)
        self.queues = [batch_queue(self.connection, q) for q in queues]
        self.last_sweep = 0.0

    def bury(self, name: str) -> None:
        """A worker process died without deregistering: drop its registration and lease now."""
        from rq import Worker

        from worker.worker import DigitsWorker

        try:
            found = DigitsWorker.find_by_key(Worker.redis_worker_namespace_prefix + name, self.connection)
            if found is not None:
                found.register_death()
            self.connection.delete(keys.worker_lease(name))
            self.sweep()
        except redis.RedisError as exc:
            log.warning("cannot clean up after worker %s yet: %s", name, exc)

    def sweep(self, every: float = 0.0) -> None:
        from digits.recovery import recover_abandoned

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


SWEEP_SECONDS = 5.0  # how often each supervisor looks for batches abandoned by dead workers anywhere
QUICK_DEATH = 5.0  # a process that fails this soon after starting makes the next start wait twice as long
MAX_RESPAWN_DELAY = 30.0


def supervise(count: int, url: str, queues: list[str], burst: bool, log_level: str, log_format: str = "text",
              metrics_port: int | None = None) -> int:
    """Run `count` worker processes; respawn any that dies, stop all on SIGTERM or Ctrl-C.

    A dead worker's batch is requeued at once. Respawns wait 1 s, and back off exponentially
    (2 s, 4 s, ... 30 s) while processes keep failing right after they start. With a metrics port, process i
    serves Prometheus metrics on metrics_port + i.
    """
    context = multiprocessing.get_context("spawn")
    stopping = False
    recoverer = Recoverer(url, queues)

    def spawn(slot: int, delay: float = 1.0) -> Slot:
        name = worker_name(slot)
        port = None if metrics_port is None else metrics_port + slot
        process = context.Process(target=run_one, args=(name, url, queues, burst, log_level, log_format, port),
                                  daemon=False)
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
    log.info("started %d worker process(es) on %s, queues %s", count, redact(url), ",".join(queues))
    while any(s is not None for s in slots):
        for index, slot in enumerate(slots):
            if slot is None or slot.process.is_alive():
                continue
            slot.process.join()
            if stopping or burst or slot.process.exitcode == 0:
                slots[index] = None
                continue
            recoverer.bury(slot.name)
            lived = time.monotonic() - slot.started
            crash_loop = (slot.process.exitcode or 0) > 0 and lived < QUICK_DEATH  # killed by a signal: exit code < 0
            delay = min(slot.delay * 2, MAX_RESPAWN_DELAY) if crash_loop else 1.0
            log.warning("worker pid %s exited with %s after %.0f s; starting a new one in %.0f s",
                        slot.process.pid, slot.process.exitcode, lived, delay)
            if sleep_unless(lambda: stopping, delay):
                slots[index] = spawn(index, delay)
            else:
                slots[index] = None
        if not stopping and not burst:
            recoverer.sweep(every=SWEEP_SECONDS)
        time.sleep(0.2)
    return 0


def sleep_unless(stopped: Callable[[], bool], seconds: float) -> bool:
    """Sleep, but return False at once if told to stop meanwhile."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if stopped():
            return False
        time.sleep(0.1)
    return not stopped()


def probe(connection: redis.Redis, kind: str) -> tuple[bool, str]:
    """live: Redis answers and a worker of this host is registered (heartbeats expire in 35 s).
    ready: also, one of them has loaded the current model version."""
    from rq import Worker

    from digits.registry import Registry

    host = socket.gethostname()
    try:
        mine = [w.name for w in Worker.all(connection=connection) if w.name.startswith(f"{host}.")]
        current = Registry(connection).current()
        loaded = [text(v) if v else None for v in connection.mget([keys.worker_model(n) for n in mine])] if mine else []
    except redis.RedisError as exc:
        return False, f"unhealthy: Redis: {exc}"
    if not mine:
        return False, f"unhealthy: no worker of host {host} is registered"
    if kind == "live":
        return True, f"live: {len(mine)} worker(s) of host {host} registered"
    if current is None:
        return False, "not ready: no model version is current"
    if current not in loaded:
        return False, f"not ready: no worker of host {host} has loaded {current} yet"
    return True, f"ready: {loaded.count(current)} of {len(mine)} worker(s) serve {current}"


@click.command(cls=Command)
@click.option("--count", "-n", default=1, show_default=True, type=click.IntRange(min=1),
              help="Worker processes to start on this host.")
@redis_url_option
@click.option("--queue", "queues", multiple=True, default=[keys.DEFAULT_QUEUE], show_default=True,
              help="Queue to listen on (repeatable).")
@click.option("--burst", is_flag=True, help="Exit once the queues are empty.")
@click.option("--metrics-port", type=click.IntRange(1, 65535), default=None,
              help="Serve Prometheus metrics: process i of --count listens on this port + i.")
@click.option("--health", type=click.Choice(["live", "ready"]), default=None,
              help="Probe this host's workers and exit 0 or 1 (for compose and Kubernetes health checks).")
@click.option("--log-level", default="INFO", show_default=True,
              type=click.Choice(["DEBUG", "INFO", "WARNING", "ERROR"]))
@click.option("--log-format", envvar="DIGITS_LOG_FORMAT", default="text", show_default=True,
              type=click.Choice(logs.FORMATS), help="json: one JSON object per line, with run, batch, model, worker.")
@click.option("--review-threshold", envvar="DIGITS_REVIEW_THRESHOLD", type=click.FloatRange(0, 1),
              default=DEFAULT_REVIEW_THRESHOLD, show_default=True,
              help="Codes read with less confidence get review: true, unless their run sets its own threshold.")
@click.option("--max-pixels", envvar="DIGITS_MAX_PIXELS", type=click.IntRange(1), default=DEFAULT_MAX_PIXELS,
              show_default=True, help="Images with more pixels are refused before they are decoded.")
def main(count: int, redis_url: str, queues: tuple[str, ...], burst: bool, metrics_port: int | None,
         health: str | None, log_level: str, log_format: str, review_threshold: float, max_pixels: int) -> None:
    """Start COUNT RQ worker processes that classify digit batches."""
    os.environ["DIGITS_REVIEW_THRESHOLD"] = str(review_threshold)  # read by each worker process
    os.environ["DIGITS_MAX_PIXELS"] = str(max_pixels)
    if health is not None:
        healthy, message = probe(connect(redis_url, patient=False, check=False), health)
        click.echo(message)
        sys.exit(0 if healthy else 1)
    logs.setup(log_level, log_format)
    connect(redis_url).ping()
    sys.exit(supervise(count, redis_url, list(queues), burst, log_level, log_format, metrics_port))
