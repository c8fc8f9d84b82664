"""Driving one run from one process: send its folder and write its results as they finish,
with a progress bar and a summary (`digits-producer run`, and the demo)."""

from __future__ import annotations

import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import IO

import redis
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from producer.files import walk
from producer.following import follow
from producer.output import ResultWriter
from producer.runs import Settings
from producer.sending import deliver

err = Console(stderr=True, soft_wrap=True)  # a status line stays one line in logs, whatever their width


def drive(connection: redis.Redis, run_id: str, directory: Path, settings: Settings, stream: IO[str], fmt: str,
          show_progress: bool) -> tuple[Counter[str], int, float]:
    """Enqueue and follow one run in one process; return outcome counts, total, seconds.

    Results are written from the run's start, so a resumed run's output is complete.
    """
    err.print(f"run [bold]{run_id}[/]")
    expected = sum(1 for _ in walk(directory, settings.extensions, settings.globs)) if show_progress else 0
    writer = ResultWriter(stream, fmt)
    outcome: Counter[str] = Counter()
    versions: Counter[str] = Counter()
    started = time.monotonic()
    progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                        TextColumn("{task.fields[rate]} img/s"), TimeRemainingColumn(),
                        console=err, disable=not show_progress)
    with progress, ThreadPoolExecutor(1) as pool:
        task = progress.add_task("classifying", total=expected or None, rate="-")
        enqueued = pool.submit(deliver, connection, run_id, directory, settings)
        failed_to_enqueue = lambda: enqueued.done() and enqueued.exception() is not None  # noqa: E731
        for line, record in follow(connection, run_id, should_stop=failed_to_enqueue):
            writer.write(record, line)
            outcome["failed" if record["error"] else "ok"] += 1
            outcome["review"] += bool(record["review"])
            if record["model_version"]:
                versions[record["model_version"]] += 1
            done = outcome["ok"] + outcome["failed"]
            if show_progress and (done % 64 == 0 or done == expected):
                rate = done / max(time.monotonic() - started, 1e-9)
                progress.update(task, completed=done, rate=f"{rate:,.0f}")
        total = enqueued.result()
    stream.flush()
    outcome.update({f"model {v}": n for v, n in versions.items()})
    return outcome, total, time.monotonic() - started


def warn_empty(directory: Path, settings: Settings) -> None:
    """An empty selection is not an error, but it must never look like a silent success."""
    globs = f" and {', '.join(settings.globs)}" if settings.globs else ""
    err.print(f"[yellow]no images found under {directory} matching {' '.join(settings.extensions)}{globs}[/]")


def print_summary(run_id: str, outcome: Counter[str], total: int, seconds: float) -> None:
    done = outcome["ok"] + outcome["failed"]
    err.print(f"run {run_id}: {total} images, {outcome['ok']} classified, {outcome['failed']} failed, "
              f"{outcome['review']} for review, {seconds:.2f} s, {done / max(seconds, 1e-9):,.0f} images/s")
    for key, count in sorted(outcome.items()):
        if key.startswith("model "):
            err.print(f"  {key}: {count} images")
