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
from types import FrameType

import click
import redis

from digits import keys, logs
from digits.connection import Command, connect, redact, redis_url_option, text

log = logging.getLogger("digits.worker")


def run_one(url: str, queues: list[str], burst: bool, log_level: str, log_format: str,
            metrics_port: int | None) -> None:
    """One worker process: connect, load the model lazily, work until told to stop."""
    from digits.queueing import batch_queue
    from worker import metrics
    from worker.serving import SERVER, NoModelError
    from worker.worker import DigitsWorker

    logs.setup(log_level, log_format)
    if metrics_port is not None:
        metrics.serve(metrics_port)
    connection = connect(url)
    name = f"{socket.gethostname()}.{os.getpid()}.{uuid.uuid4().hex[:6]}"
    try:
        SERVER.refresh(connection, name)  # ready before the first job, not during it
    except NoModelError as exc:
        log.warning("%s; jobs will fail until a version is promoted", exc)
    worker = DigitsWorker([batch_queue(connection, q) for q in queues], connection=connection, name=name)
    # RQ registers the worker before it installs its signal handlers; a stop signal in that
    # window would kill the process and leave a stale registration behind, so exit cleanly.
    signal.signal(signal.SIGTERM, exit_now)
    signal.signal(signal.SIGINT, exit_now)
    threading.Thread(target=stop_when_orphaned, args=(os.getppid(),), daemon=True).start()
    try:
        worker.work(burst=burst, logging_level=log_level)
    except SystemExit:
        worker.register_death()


def exit_now(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(0)


def stop_when_orphaned(parent: int) -> None:
    """If the supervisor dies (even by SIGKILL), finish the current job and stop, like on SIGTERM."""
    while os.getppid() == parent:
        time.sleep(1.0)
    log.warning("supervisor %d is gone; stopping after the current job", parent)
    os.kill(os.getpid(), signal.SIGTERM)


def supervise(count: int, url: str, queues: list[str], burst: bool, log_level: str, log_format: str = "text",
              metrics_port: int | None = None) -> int:
    """Run `count` worker processes; respawn any that dies, stop all on SIGTERM or Ctrl-C.

    With a metrics port, process i serves Prometheus metrics on metrics_port + i.
    """
    context = multiprocessing.get_context("spawn")
    stopping = False

    def spawn(slot: int) -> multiprocessing.process.BaseProcess:
        port = None if metrics_port is None else metrics_port + slot
        process = context.Process(target=run_one, args=(url, queues, burst, log_level, log_format, port), daemon=False)
        process.start()
        return process

    def stop(signum: int, frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True
        for process in processes:
            if process is not None and process.is_alive() and process.pid is not None:
                os.kill(process.pid, signal.SIGTERM)  # each finishes its current job first

    processes: list[multiprocessing.process.BaseProcess | None] = [spawn(slot) for slot in range(count)]
    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    log.info("started %d worker process(es) on %s, queues %s", count, redact(url), ",".join(queues))
    while any(p is not None for p in processes):
        for slot, process in enumerate(processes):
            if process is None or process.is_alive():
                continue
            process.join()
            if stopping or burst or process.exitcode == 0:
                processes[slot] = None
            else:
                log.warning("worker pid %s exited with %s; starting a new one", process.pid, process.exitcode)
                time.sleep(1.0)
                processes[slot] = spawn(slot)
        time.sleep(0.2)
    return 0


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
def main(count: int, redis_url: str, queues: tuple[str, ...], burst: bool, metrics_port: int | None,
         health: str | None, log_level: str, log_format: str) -> None:
    """Start COUNT RQ worker processes that classify digit batches."""
    if health is not None:
        healthy, message = probe(connect(redis_url), health)
        click.echo(message)
        sys.exit(0 if healthy else 1)
    logs.setup(log_level, log_format)
    connect(redis_url).ping()
    sys.exit(supervise(count, redis_url, list(queues), burst, log_level, log_format, metrics_port))
