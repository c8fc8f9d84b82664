"""One run sent from several processes: `digits-producer run --jobs N` starts N senders, each
`digits-producer enqueue --resume RUN --share K/N --wait`, and follows the results itself.

Each sender is an ordinary producer process with its own share of the folder (runs.Share), so
the same commands started on several hosts feed one run from all of them (docs/operations.md).
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from typing import IO

import redis

from digits import defaults, keys
from digits.connection import URL_ENV
from producer.sending import Stopped


class SenderFailed(RuntimeError):
    """A sender process ended with an error; the message names its share and its last words."""


def sender_command(run_id: str, share: int, jobs: int) -> list[str]:
    return [sys.executable, "-m", "producer", "enqueue", "--resume", run_id, "--share", f"{share}/{jobs}", "--wait",
            "--parent", str(os.getpid())]


def stop_with_parent(parent: int, period: float = defaults.SENDER_PARENT_SECONDS) -> None:
    """Stop this process as SIGTERM does once `parent`, the `run --jobs` that started it, is gone.
    A run killed outright (SIGKILL, the OOM killer, a container stopped) cannot stop its senders
    itself, and a sender left running would race the sender of its share that `run --resume`
    starts, both sending the files neither has seen sent."""
    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(period)
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


def send_in_processes(connection: redis.Redis, redis_url: str, run_id: str, jobs: int,
                      stop: threading.Event) -> int:
    """Run the run's `jobs` senders to the end; return the run's file count.

    Setting `stop` stops them all (SIGTERM: each keeps what it sent); one failing stops the others.
    The Redis URL reaches them in their environment, never in a command line that `ps` shows.
    """
    with contextlib.ExitStack() as stack:
        logs = [stack.enter_context(tempfile.TemporaryFile(mode="w+", encoding="utf-8")) for _ in range(jobs)]
        senders = [subprocess.Popen(sender_command(run_id, share, jobs), env={**os.environ, URL_ENV: redis_url},
                                    stdout=subprocess.DEVNULL, stderr=log, start_new_session=True)
                   for share, log in zip(range(1, jobs + 1), logs, strict=True)]
        try:
            while (codes := [sender.poll() for sender in senders]).count(0) < jobs:
                if stop.is_set():
                    raise Stopped(f"run {run_id}: stopped its {jobs} senders")
                failed = next((share for share, code in enumerate(codes, 1) if code not in (None, 0)), None)
                if failed is not None:
                    raise SenderFailed(f"run {run_id}: the sender of share {failed}/{jobs} failed "
                                       f"(exit {codes[failed - 1]}): {last_line(logs[failed - 1])}")
                time.sleep(0.05)
            return int(connection.hget(keys.run(run_id), "total") or 0)
        finally:
            for sender in senders:
                if sender.poll() is None:
                    sender.send_signal(signal.SIGTERM)
            for sender in senders:
                sender.wait()


def last_line(log: IO[str]) -> str:
    log.seek(0)
    lines = [line.strip() for line in log if line.strip()]
    return lines[-1] if lines else "no message"

