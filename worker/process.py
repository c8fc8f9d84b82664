"""One worker process: connect, load the current model, work until told to stop."""

from __future__ import annotations

import importlib
import logging
import os
import signal
import sys
import threading
import time
from pathlib import Path
from types import FrameType

import redis

from digits import logs
from digits.connection import connect
from digits.defaults import WORKER_TTL
from worker.settings import WorkerSettings

log = logging.getLogger("digits.worker")


FATAL = 3  # exit code of a worker process that no respawn can help: the supervisor stops them all


def run_one(name: str, settings: WorkerSettings, metrics_port: int | None) -> None:
    """A worker process (spawned by the supervisor). Redis refusing its user ends it with one line
    and FATAL: a user without the worker's permissions would be refused again at every respawn."""
    try:
        serve(name, settings, metrics_port)
    except (redis.exceptions.NoPermissionError, redis.AuthenticationError) as exc:
        log.error("Redis refused this worker's user: %s (docs/security.md says what it needs)", exc)
        sys.exit(FATAL)


def serve(name: str, settings: WorkerSettings, metrics_port: int | None) -> None:
    """The body of a worker process (imports the model's libraries here, not in the supervisor)."""
    from digits.queueing import JOB_FUNCTION, batch_queue
    from digits.recovery import Lease
    from worker import metrics
    from worker.serving import ModelServer, NoModelError, Serving
    from worker.worker import DigitsWorker

    logs.setup(settings.log_level, settings.log_format)
    # RQ imports the job's module when the first job comes: imported now, its libraries (Pillow,
    # SciPy: 0.17 s) do not delay the first batch.
    importlib.import_module(JOB_FUNCTION.rpartition(".")[0])
    if metrics_port is not None:
        try:
            metrics.serve(metrics_port)
        except OSError as exc:  # taken since the supervisor checked it: serve without metrics, do not crash-loop
            log.error("cannot serve metrics on port %d (%s); this process goes on without them", metrics_port, exc)
    # A Redis that is restarting is waited for, with backoff. RQ pops jobs blocking for up to
    # WORKER_TTL - 15 s, on whichever connection of the pool is free: none may time out sooner.
    connection = connect(settings.url, check=False, timeout=WORKER_TTL)
    lease = Lease(connection, name).start()
    serving = Serving(ModelServer(), settings.review_threshold, settings.max_pixels,
                      Path(settings.files_root) if settings.files_root else None, settings.max_bytes)
    try:
        serving.models.refresh(connection, name)  # ready before the first job, not during it
    except NoModelError as exc:
        log.warning("%s; jobs will fail until a version is promoted", exc)
    worker = DigitsWorker([batch_queue(connection, q) for q in settings.queues], connection=connection, name=name,
                          lease=lease, serving=serving)
    # RQ registers the worker before it installs its signal handlers; a stop signal in that
    # window would kill the process and leave a stale registration behind, so exit cleanly.
    signal.signal(signal.SIGTERM, exit_now)
    signal.signal(signal.SIGINT, exit_now)
    threading.Thread(target=stop_when_orphaned, args=(os.getppid(),), daemon=True).start()
    try:
        worker.work(burst=settings.burst, logging_level=settings.log_level)
    except SystemExit:
        worker.register_death()
    finally:
        lease.end()


def exit_now(signum: int, frame: FrameType | None) -> None:
    """Stop before RQ's own handlers are in place. The stop comes twice (the process group's
    signal, then the supervisor's), and a second one raised inside register_death would leave
    the registration behind: further ones are ignored."""
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    raise SystemExit(0)


def stop_when_orphaned(parent: int) -> None:
    """If the supervisor dies (even by SIGKILL), finish the current job and stop, like on SIGTERM."""
    while os.getppid() == parent:
        time.sleep(1.0)
    log.warning("supervisor %d is gone; stopping after the current job", parent)
    os.kill(os.getpid(), signal.SIGTERM)
