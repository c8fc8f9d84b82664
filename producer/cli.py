"""`digits-producer`: enqueue folders, follow and read results, show status, run the demo."""

from __future__ import annotations

import gc
import json
import signal
import sys
import threading
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.table import Table

from digits import defaults, keys
from digits.connection import Group, connect, redis_url_option
from digits.results import Finished, Result, find_results
from producer import runs
from producer.drive import drive, err, interrupted, print_summary, stop_on_sigterm, warn_empty, warn_unshared
from producer.files import Share
from producer.following import await_run, follow_batches
from producer.keying import with_keyed
from producer.keying_cli import corrections, review
from producer.leases import ShareBusy
from producer.options import (
    folder_options,
    open_output,
    resume_option,
    run_id_option,
    settings_from,
    share_option,
    shared_root_option,
    start_or_resume,
)
from producer.output import FORMATS, ResultWriter
from producer.senders import SenderFailed, send_in_processes, stop_with_parent
from producer.sending import deliver, enqueue_folder
from producer.status import status_report
from producer.watch import Watcher, WatchSettings, make_state_dir


@click.group(cls=Group)
def main() -> None:
    """Classify folders of scanned digits through Redis and RQ workers."""
    # What the imports made lives as long as the process: the collector need not walk it again at
    # every full collection (2.5 µs of the producer's CPU a digit on a 40,000-digit run, docs/benchmarks.md).
    gc.freeze()


main.add_command(review)
main.add_command(corrections)


@main.command()
@click.argument("directory", required=False, type=click.Path(exists=True, file_okay=False, path_type=Path))
@redis_url_option
@folder_options
@shared_root_option
@resume_option
@run_id_option
@share_option
@click.option("--wait", is_flag=True,
              help="Return only once every image has a result, sending again whatever a Redis restart lost.")
@click.option("--parent", type=int, default=None, hidden=True,
              help="Stop once this process is gone (the `run --jobs` that started this sender).")
def enqueue(directory: Path | None, redis_url: str, resume: str | None, run_id: str | None, share: Share | None,
            wait: bool, parent: int | None, **options: Any) -> None:
    """Enqueue every image under DIRECTORY (or its --share) as batch jobs; print the run id.

    Returns once the last batch is enqueued (the window may make it wait for results first).
    """
    connection = connect(redis_url)
    run_id, root, settings = start_or_resume(connection, directory, resume, options, run_id, share)
    click.echo(run_id)
    warn_unshared(connection, settings)
    stop_on_sigterm()
    if parent is not None:  # a parent gone before this starts its watch is seen at the first look
        stop_with_parent(parent)
    try:
        if wait:
            total = deliver(connection, run_id, root, settings, share=share)
            err.print(f"run {run_id}: {total} images, each with a result")
        else:
            total = enqueue_folder(connection, run_id, root, settings, share=share)
            err.print(f"run {run_id}: {total} images enqueued")
    except KeyboardInterrupt:
        interrupted(connection, run_id, "enqueue")
    except ShareBusy as exc:
        raise click.ClickException(str(exc)) from None
    if total == 0 and resume is None:
        warn_empty(root, settings)


@main.command()
@click.argument("run_id")
@redis_url_option
@click.option("--format", "fmt", type=click.Choice(FORMATS), default="jsonl", show_default=True)
@click.option("--output", "-o", default="-", show_default=True, help="File to write, - for stdout.")
@click.option("--follow", "-f", "follow_run", is_flag=True,
              help="Stream results as they finish until the run is complete; wait up to "
                   f"{defaults.RUN_START_SECONDS:g} s for a run that its senders have not created yet.")
@click.option("--path", "paths", multiple=True, metavar="PATH",
              help="Only this image's result (its path in the run's folder); repeat for more. Only the batches "
                   "holding them are read; with --follow, wait for them.")
def results(run_id: str, redis_url: str, fmt: str, output: str, follow_run: bool, paths: tuple[str, ...]) -> None:
    """Write the results of RUN_ID as JSON Lines or CSV."""
    connection = connect(redis_url)
    missing = set(paths)
    try:
        if follow_run and not connection.exists(keys.run(run_id)):  # started beside its senders
            err.print(f"waiting up to {defaults.RUN_START_SECONDS:g} s for run {run_id} to be created")
            await_run(connection, run_id, defaults.RUN_START_SECONDS)
        if paths and not follow_run:
            runs.run_meta(connection, run_id)  # RunError if there is no such run
            batches: Iterable[Finished] = with_keyed(connection, run_id, find_results(connection, run_id, missing))
        else:
            batches = follow_batches(connection, run_id, wait=follow_run)
        with open_output(output) as stream:
            writer = ResultWriter(stream, fmt)
            for batch in batches:
                if paths:
                    batch = Finished.of([result for result in batch.results() if result.path in missing])
                    missing.difference_update(batch.paths)
                writer.write_batch(batch)
                if paths and not missing:
                    break
    except runs.RunError as exc:
        raise click.ClickException(str(exc)) from None
    if missing:
        raise click.ClickException(f"run {run_id}: no result for {', '.join(sorted(missing))}")


@main.command()
@click.argument("run_id", required=False)
@redis_url_option
@click.option("--queue", default=keys.DEFAULT_QUEUE, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object instead of tables.")
def status(run_id: str | None, redis_url: str, queue: str, as_json: bool) -> None:
    """Show queue, workers and model; with RUN_ID (or the latest run), that run's progress."""
    connection = connect(redis_url)
    try:
        report = status_report(connection, redis_url, queue, run_id)
    except runs.RunError as exc:
        raise click.ClickException(str(exc)) from None
    if as_json:
        click.echo(json.dumps(report, indent=2))
        return
    console = Console(soft_wrap=True)  # lines stay whole in logs and pipes
    waiting = report["queue"]
    console.print(f"Redis {report['redis']}  queue [bold]{queue}[/]: {waiting['waiting']} jobs waiting, "
                  f"{waiting['running']} running, {waiting['failed']} failed")
    console.print(f"current model: [bold]{report['current_model'] or 'none published'}[/]")
    table = Table("worker", "state", "model", "batches", "images", "errors", "avg batch", "avg ms", "files root",
                  title="live workers")
    for worker in report["workers"]:
        table.add_row(*(str(worker[k]) for k in ("name", "state", "model", "batches", "images", "errors",
                                                 "average_batch", "average_batch_ms")), worker["files_root"] or "-")
    print_whole(console, table)
    if report["run"]:
        run_table = Table("run", report["run"]["run"])
        for field, value in report["run"].items():
            if field == "senders":
                run_table.add_row(field, ", ".join(f"{share} {producer or '-'}" for share, producer in value.items()))
            elif field != "run":
                run_table.add_row(field, str(value))
        print_whole(console, run_table)


def print_whole(console: Console, table: Table) -> None:
    """A table at its natural width, wider than the terminal if need be: a worker's name or a model
    version cut to 'vm.8159…' is no use to an operator."""
    natural = Console(width=10_000).measure(table).maximum
    Console(file=console.file, width=max(console.width, natural)).print(table)


@main.command()
@click.argument("directory", required=False, type=click.Path(exists=True, file_okay=False, path_type=Path))
@redis_url_option
@folder_options
@shared_root_option
@resume_option
@click.option("--format", "fmt", type=click.Choice(FORMATS), default="jsonl", show_default=True)
@click.option("--output", "-o", default="-", show_default=True, help="File to write, - for stdout.")
@click.option("--progress/--no-progress", default=None, help="Progress bar (default: on a terminal).")
@click.option("--jobs", default=1, show_default=True, type=click.IntRange(1, 64),
              help="Sender processes, each sending its share of the folder (for more workers than one sender feeds).")
def run(directory: Path | None, redis_url: str, resume: str | None, fmt: str, output: str, progress: bool | None,
        jobs: int, **options: Any) -> None:
    """Enqueue DIRECTORY, stream its results, print a summary; exit 1 if any image failed.

    With --resume RUN, continue a run whose producer was stopped: the output holds all its results.
    """
    connection = connect(redis_url)
    show = sys.stderr.isatty() if progress is None else progress
    stream = open_output(output, "a")  # before the run exists: with an output it cannot write, nothing is sent
    new_id = runs.new_run_id() if jobs > 1 and resume is None else None
    run_id, root, settings = start_or_resume(connection, directory, resume, options, new_id,
                                             Share.parse(f"1/{jobs}") if new_id else None)
    if jobs > 1 and (shares := runs.run_shares(connection, run_id)) != jobs:
        raise click.UsageError(f"run {run_id} is sent in {shares} share(s): resume it with --jobs {shares} or 1")
    warn_unshared(connection, settings)
    if stream is not sys.stdout and Path(output).is_file():  # not /dev/null or a pipe: those cannot be
        stream.truncate(0)  # emptied; and only now: a mistyped --resume RUN keeps the file it would replace
    stop_on_sigterm()
    senders = (lambda stop: send_in_processes(connection, redis_url, run_id, jobs, stop)) if jobs > 1 else None
    try:
        with stream:
            outcome = drive(connection, run_id, root, settings, stream, fmt, show, senders)
    except KeyboardInterrupt:
        interrupted(connection, run_id, "run")
    except (SenderFailed, ShareBusy) as exc:
        raise click.ClickException(str(exc)) from None
    print_summary(run_id, outcome)
    if outcome.total == 0:
        warn_empty(root, settings)
    sys.exit(1 if outcome.failed else 0)


@main.command()
@click.argument("directory", type=click.Path(exists=True, file_okay=False, path_type=Path))
@redis_url_option
@folder_options
@click.option("--name", default=None, help="Name of this watch (default: from the folder); a restart continues it.")
@click.option("--format", "fmt", type=click.Choice(FORMATS), default="jsonl", show_default=True)
@click.option("--output", "-o", default="-", show_default=True, help="File to append to, - for stdout.")
@click.option("--max-delay", default=defaults.MAX_DELAY, show_default=True, type=click.FloatRange(0),
              help="Seconds the first file of a micro-batch may wait for more.")
@click.option("--settle", default=defaults.SETTLE, show_default=True, type=click.FloatRange(0),
              help="Seconds a file must stay unchanged before it is sent (half-written files wait).")
def watch(directory: Path, redis_url: str, name: str | None, fmt: str, output: str, max_delay: float,
          settle: float, **options: Any) -> None:
    """Classify files as they land in DIRECTORY, streaming results, until SIGTERM or Ctrl-C.

    Finished files move to DIRECTORY/.digits/done (or .digits/failed); `-o DIRECTORY/.digits/results.jsonl`
    keeps the results beside them.
    """
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda signum, frame: stop.set())
    signal.signal(signal.SIGINT, lambda signum, frame: stop.set())
    make_state_dir(directory)
    stream = open_output(output, "a")
    writer = ResultWriter(stream, fmt, header=stream is sys.stdout or stream.tell() == 0)  # appending: one header

    def emit(result: Result) -> None:
        writer.write(result)
        stream.flush()

    watcher = Watcher(connect(redis_url), directory, settings_from(options),
                      WatchSettings(settle=settle, max_delay=max_delay), emit, name)
    err.print(f"watching {directory} as run [bold]{watcher.run_id}[/]")
    try:
        watcher.run(stop.is_set)
    except ShareBusy as exc:
        raise click.ClickException(str(exc)) from None
    finally:
        if stream is not sys.stdout:
            stream.close()


@main.command()
@click.option("--workers", default=2, show_default=True, type=click.IntRange(1))
@click.option("--directory", type=click.Path(exists=True, file_okay=False, path_type=Path), default=None,
              help="Folder to classify (default: the bundled samples).")
def demo(workers: int, directory: Path | None) -> None:
    """Start a private Redis and workers, classify the sample folder, stop everything."""
    from producer.demo import run_demo

    sys.exit(run_demo(workers, directory))
