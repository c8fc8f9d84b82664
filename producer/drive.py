"""Driving one run from one process: send its folder and write its results as they finish,
with a progress bar and a summary (`digits-producer run`, and the demo)."""

from __future__ import annotations

import signal
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import IO, NoReturn

import redis
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from digits import keys
from digits.results import Finished, results_count
from producer.files import walk
from producer.following import follow_batches
from producer.output import ResultWriter
from producer.runs import Settings
from producer.sending import deliver
from producer.status import workers_reading_no_share

err = Console(stderr=True, soft_wrap=True)  # a status line stays one line in logs, whatever their width


@dataclass
class Outcome:
    """What a run's results came to, as they are written."""

    total: int = 0  # files in the folder
    ok: int = 0
    failed: int = 0
    review: int = 0
    new: int = 0  # results that were not there when this producer started (a resumed run has old ones)
    seconds: float = 0.0
    versions: Counter[str] = field(default_factory=Counter)

    def count(self, batch: Finished) -> None:
        read = len(batch.paths) - len(batch.failed)
        self.ok += read
        self.failed += len(batch.failed)
        self.review += len(batch.review)
        if batch.version and read:
            self.versions[batch.version] += read


def drive(connection: redis.Redis, run_id: str, directory: Path, settings: Settings, stream: IO[str], fmt: str,
          show_progress: bool, send: Callable[[threading.Event], int] | None = None) -> Outcome:
    """Enqueue and follow one run. The folder is sent by `send` (given a stop event, it returns
    the file count): by default a thread of this process; `run --jobs N` passes N sender processes.
    On Ctrl-C or SIGTERM (KeyboardInterrupt, see stop_on_sigterm) the sending stops too, at once,
    and the interrupt goes on to the caller.

    Results are written from the run's start, so a resumed run's output is complete.
    """
    err.print(f"run [bold]{run_id}[/]")
    files = walk(directory, settings.extensions, settings.globs, part=settings.part_of_folder())
    expected = sum(1 for _ in files) if show_progress else 0
    writer = ResultWriter(stream, fmt)
    outcome = Outcome()
    before = results_count(connection, run_id)
    started = time.monotonic()
    progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                        TextColumn("{task.fields[rate]} img/s"), TimeRemainingColumn(),
                        console=err, disable=not show_progress)
    stop = threading.Event()
    with progress, ThreadPoolExecutor(1) as pool:
        task = progress.add_task("classifying", total=expected or None, rate="-")
        enqueued = pool.submit(send or (lambda event: deliver(connection, run_id, directory, settings, event)), stop)
        try:
            for batch in follow_batches(connection, run_id,
                                        should_stop=lambda: enqueued.done() and enqueued.exception() is not None):
                writer.write_batch(batch)
                outcome.count(batch)
                if show_progress:
                    done = outcome.ok + outcome.failed
                    rate = done / max(time.monotonic() - started, 1e-9)
                    progress.update(task, completed=done, rate=f"{rate:,.0f}")
        except BaseException:
            stop.set()  # before the pool's exit waits for the sender
            raise
        outcome.total = enqueued.result()
    stream.flush()
    outcome.seconds = time.monotonic() - started
    outcome.new = results_count(connection, run_id) - before
    return outcome


def stop_on_sigterm() -> None:
    """SIGTERM stops like Ctrl-C: a KeyboardInterrupt where the main thread is."""
    def interrupt(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, interrupt)
    signal.signal(signal.SIGINT, interrupt)  # also when started in the background with SIGINT ignored


def interrupted(connection: redis.Redis, run_id: str, command: str) -> NoReturn:
    """Say how far the run got and how to continue it; exit 130, as a shell does after Ctrl-C."""
    done = results_count(connection, run_id)
    total = int(connection.hget(keys.run(run_id), "total") or 0)
    err.print(f"stopped: run {run_id} has {done} results so far ({total} files found); what was sent is kept. "
              f"Continue it with: digits-producer {command} --resume {run_id}")
    sys.exit(130)


def warn_empty(directory: Path, settings: Settings) -> None:
    """An empty selection is not an error, but it must never look like a silent success."""
    globs = f" and {', '.join(settings.globs)}" if settings.globs else ""
    err.print(f"[yellow]no images found under {directory} matching {' '.join(settings.extensions)}{globs}[/]")


def warn_unshared(connection: redis.Redis, settings: Settings) -> None:
    """A run sent by path fails the images that a worker without --files-root takes: say so before
    sending, if such workers listen on the run's queue now."""
    if settings.shared_folder is None:
        return
    without, live = workers_reading_no_share(connection, settings.queue)
    if without:
        err.print(f"[yellow]{without} of the {live} live workers on queue {settings.queue} read no shared folder "
                  "(--files-root): the images they take will fail. Give the share's workers a queue of their "
                  "own (--queue).[/]")


def print_summary(run_id: str, outcome: Outcome) -> None:
    """One line: counts, time, and the rate of the images classified by this producer (a resumed
    run's earlier results are in the counts, not in the rate)."""
    rate = (f"{outcome.new / max(outcome.seconds, 1e-9):,.0f} images/s" if outcome.new
            else "nothing left to classify")
    err.print(f"run {run_id}: {outcome.total} images, {outcome.ok} classified, {outcome.failed} failed, "
              f"{outcome.review} for review, {outcome.seconds:.2f} s, {rate}")
    for version, count in sorted(outcome.versions.items()):
        err.print(f"  model {version}: {count} images")
