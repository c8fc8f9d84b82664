"""`digits-worker`: start N worker processes on this host against one Redis."""

from __future__ import annotations

import logging
import multiprocessing
import os
import signal
import socket
import sys
import time
import uuid
from types import FrameType

import click

from digits import keys
from digits.connection import URL_ENV, connect, default_url, redact

log = logging.getLogger("digits.worker")
LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s [%(process)d] %(message)s"


def run_one(url: str, queues: list[str], burst: bool, log_level: str) -> None:
    """One worker process: connect, load the model lazily, work until told to stop."""
    from digits.queueing import batch_queue
    from worker.worker import DigitsWorker

    logging.basicConfig(level=log_level, format=LOG_FORMAT)
    connection = connect(url)
    name = f"{socket.gethostname()}.{os.getpid()}.{uuid.uuid4().hex[:6]}"
    worker = DigitsWorker([batch_queue(connection, q) for q in queues], connection=connection, name=name)
    # RQ registers the worker before it installs its signal handlers; a stop signal in that
    # window would kill the process and leave a stale registration behind, so exit cleanly.
    signal.signal(signal.SIGTERM, exit_now)
    signal.signal(signal.SIGINT, exit_now)
    try:
        worker.work(burst=burst, logging_level=log_level)
    except SystemExit:
        worker.register_death()


def exit_now(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(0)


def supervise(count: int, url: str, queues: list[str], burst: bool, log_level: str) -> int:
    """Run `count` worker processes; respawn any that dies, stop all on SIGTERM or Ctrl-C."""
    context = multiprocessing.get_context("spawn")
    stopping = False

    def spawn() -> multiprocessing.process.BaseProcess:
        process = context.Process(target=run_one, args=(url, queues, burst, log_level), daemon=False)
        process.start()
        return process

    def stop(signum: int, frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True
        for process in processes:
            if process.is_alive() and process.pid is not None:
                os.kill(process.pid, signal.SIGTERM)  # each finishes its current job first

    processes = [spawn() for _ in range(count)]
    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    log.info("started %d worker process(es) on %s, queues %s", count, redact(url), ",".join(queues))
    while processes:
        running = []
        for process in processes:
            if process.is_alive():
                running.append(process)
                continue
            process.join()
            if not (stopping or burst or process.exitcode == 0):
                log.warning("worker pid %s exited with %s; starting a new one", process.pid, process.exitcode)
                time.sleep(1.0)
                running.append(spawn())
        processes = running
        time.sleep(0.2)
    return 0


@click.command()
@click.option("--count", "-n", default=1, show_default=True, type=click.IntRange(min=1),
              help="Worker processes to start on this host.")
@click.option("--redis-url", envvar=URL_ENV, default=default_url, show_default=True,
              help="redis://[user:password@]host:port/db, or rediss:// for TLS.")
@click.option("--queue", "queues", multiple=True, default=[keys.DEFAULT_QUEUE], show_default=True,
              help="Queue to listen on (repeatable).")
@click.option("--burst", is_flag=True, help="Exit once the queues are empty.")
@click.option("--log-level", default="INFO", show_default=True,
              type=click.Choice(["DEBUG", "INFO", "WARNING", "ERROR"]))
def main(count: int, redis_url: str, queues: tuple[str, ...], burst: bool, log_level: str) -> None:
    """Start COUNT RQ worker processes that classify digit batches."""
    logging.basicConfig(level=log_level, format=LOG_FORMAT)
    connect(redis_url).ping()
    sys.exit(supervise(count, redis_url, list(queues), burst, log_level))
