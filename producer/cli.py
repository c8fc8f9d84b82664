"""`digits-producer`: enqueue folders, follow and read results, show status, run the demo."""

from __future__ import annotations

import json
import signal
import sys
import threading
from pathlib import Path
from typing import IO, Any

import click
from rich.console import Console
from rich.table import Table

from digits import defaults, keys
from digits.connection import Group, connect, redis_url_option
from digits.pattern import parse_pattern
from producer import runs
from producer.drive import drive, err, interrupted, print_summary, stop_on_sigterm, warn_empty
from producer.following import follow
from producer.keying_cli import corrections, review
from producer.output import FORMATS, ResultWriter
from producer.sending import deliver, enqueue_folder
from producer.status import status_report
from producer.watch import Watcher, WatchSettings, make_state_dir


def folder_options(function: Any) -> Any:
    """Options shared by `enqueue` and `run`: how a folder is selected, cut and paced."""
    for option in reversed([
        click.option("--batch-size", default=defaults.BATCH_SIZE, show_default=True,
                     type=click.IntRange(1, 10_000), help="Images per job."),
        click.option("--window", default=defaults.WINDOW, show_default=True,
                     type=click.IntRange(1), help="Most images of this run held in Redis at once."),
        click.option("--ext", "extensions", multiple=True, default=defaults.EXTENSIONS, show_default=True,
                     help="File extensions to include (repeatable)."),
        click.option("--glob", "globs", multiple=True, help="Only paths (relative to DIR) matching this pattern."),
        click.option("--queue", default=keys.DEFAULT_QUEUE, show_default=True),
        click.option("--result-ttl", default=defaults.RESULT_TTL, show_default=True,
                     type=click.IntRange(60), help="Seconds results stay in Redis."),
        click.option("--max-bytes", default=defaults.MAX_BYTES, show_default=True,
                     type=click.IntRange(1), help="Files larger than this are refused."),
        click.option("--expect-digits", "expect", default=None, callback=check_pattern,
                     help="Digits per image when the format is known: a count (5) or a pattern (#####-####)."),
        click.option("--review-threshold", type=click.FloatRange(0, 1), default=None,
                     help="Flag codes read with less confidence for review "
                          f"[default: the worker's, {defaults.REVIEW_THRESHOLD}]."),
    ]):
        function = option(function)
    return function


def check_pattern(_ctx: click.Context, _param: click.Parameter, value: str | None) -> str | None:
    if value is not None:
        try:
            parse_pattern(value)
        except ValueError as exc:
            raise click.BadParameter(str(exc)) from None
    return value


def settings_from(options: dict[str, Any]) -> runs.Settings:
    extensions = tuple(e if e.startswith(".") else f".{e}" for e in options["extensions"])
    return runs.Settings(batch_size=options["batch_size"], window=options["window"],
                         result_ttl=options["result_ttl"], queue=options["queue"],
                         max_bytes=options["max_bytes"], extensions=extensions,
                         globs=tuple(options["globs"]), expect=options["expect"],
                         review_threshold=options["review_threshold"])


def open_output(path: str, mode: str = "w") -> IO[str]:
    """stdout for -, else the file; one that cannot be written is one clear line."""
    if path == "-":
        return sys.stdout
    try:
        return open(path, mode, encoding="utf-8", newline="")
    except OSError as exc:
        raise click.ClickException(f"cannot write the output {path}: {exc.strerror}") from None


@click.group(cls=Group)
def main() -> None:
    """Classify folders of scanned digits through Redis and RQ workers."""


main.add_command(review)
main.add_command(corrections)


resume_option = click.option(
    "--resume", "resume", metavar="RUN", default=None,
    help="Continue RUN after its producer was stopped or killed: send only what has no result and is not "
         "already queued, with the run's own folder and settings (DIRECTORY may be left out).")


def start_or_resume(connection: Any, directory: Path | None, resume: str | None,
                    options: dict[str, Any]) -> tuple[str, Path, runs.Settings]:
    """A new run of DIRECTORY, or the stored folder and settings of the run to resume."""
    if resume is None:
        if directory is None:
            raise click.UsageError("give a DIRECTORY, or --resume RUN")
        settings = settings_from(options)
        return runs.create_run(connection, directory, settings), directory, settings
    try:
        root, settings = runs.stored_settings(connection, resume)
    except runs.RunError as exc:
        raise click.ClickException(str(exc)) from None
    if directory is not None and directory.resolve() != root.resolve():
        raise click.UsageError(f"run {resume} is of folder {root}, not {directory}")
    return resume, root, settings


@main.command()
@click.argument("directory", required=False, type=click.Path(exists=True, file_okay=False, path_type=Path))
@redis_url_option
@folder_options
@resume_option
@click.option("--wait", is_flag=True,
              help="Return only once every image has a result, sending again whatever a Redis restart lost.")
def enqueue(directory: Path | None, redis_url: str, resume: str | None, wait: bool, **options: Any) -> None:
    """Enqueue every image under DIRECTORY as batch jobs; print the run id.

    Returns once the last batch is enqueued (the window may make it wait for results first).
    """
    connection = connect(redis_url)
    run_id, root, settings = start_or_resume(connection, directory, resume, options)
    click.echo(run_id)
    stop_on_sigterm()
    try:
        if wait:
            total = deliver(connection, run_id, root, settings)
            err.print(f"run {run_id}: {total} images, each with a result")
        else:
            total = enqueue_folder(connection, run_id, root, settings)
            err.print(f"run {run_id}: {total} images enqueued")
    except KeyboardInterrupt:
        interrupted(connection, run_id, "enqueue")
    if total == 0 and resume is None:
        warn_empty(root, settings)


@main.command()
@click.argument("run_id")
@redis_url_option
@click.option("--format", "fmt", type=click.Choice(FORMATS), default="jsonl", show_default=True)
@click.option("--output", "-o", default="-", show_default=True, help="File to write, - for stdout.")
@click.option("--follow", "-f", "follow_run", is_flag=True,
              help="Stream results as they finish until the run is complete.")
def results(run_id: str, redis_url: str, fmt: str, output: str, follow_run: bool) -> None:
    """Write the results of RUN_ID as JSON Lines or CSV."""
    connection = connect(redis_url)
    try:
        results = follow(connection, run_id, wait=follow_run)
        with open_output(output) as stream:
            writer = ResultWriter(stream, fmt)
            for line, record in results:
                writer.write(record, line)
    except runs.RunError as exc:
        raise click.ClickException(str(exc)) from None


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
    table = Table("worker", "state", "model", "batches", "images", "errors", "avg batch", "avg ms",
                  title="live workers")
    for worker in report["workers"]:
        table.add_row(*(str(worker[k]) for k in ("name", "state", "model", "batches", "images", "errors",
                                                 "average_batch", "average_batch_ms")))
    print_whole(console, table)
    if report["run"]:
        run_table = Table("run", report["run"]["run"])
        for field, value in report["run"].items():
            if field != "run":
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
@resume_option
@click.option("--format", "fmt", type=click.Choice(FORMATS), default="jsonl", show_default=True)
@click.option("--output", "-o", default="-", show_default=True, help="File to write, - for stdout.")
@click.option("--progress/--no-progress", default=None, help="Progress bar (default: on a terminal).")
def run(directory: Path | None, redis_url: str, resume: str | None, fmt: str, output: str, progress: bool | None,
        **options: Any) -> None:
    """Enqueue DIRECTORY, stream its results, print a summary; exit 1 if any image failed.

    With --resume RUN, continue a run whose producer was stopped: the output holds all its results.
    """
    connection = connect(redis_url)
    show = sys.stderr.isatty() if progress is None else progress
    stream = open_output(output, "a")  # before the run exists: with an output it cannot write, nothing is sent
    run_id, root, settings = start_or_resume(connection, directory, resume, options)
    if stream is not sys.stdout and Path(output).is_file():  # not /dev/null or a pipe: those cannot be
        stream.truncate(0)  # emptied; and only now: a mistyped --resume RUN keeps the file it would replace
    stop_on_sigterm()
    try:
        with stream:
            outcome = drive(connection, run_id, root, settings, stream, fmt, show)
    except KeyboardInterrupt:
        interrupted(connection, run_id, "run")
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

    def emit(line: str, record: dict[str, Any]) -> None:
        writer.write(record, line)
        stream.flush()

    watcher = Watcher(connect(redis_url), directory, settings_from(options),
                      WatchSettings(settle=settle, max_delay=max_delay), emit, name)
    err.print(f"watching {directory} as run [bold]{watcher.run_id}[/]")
    try:
        watcher.run(stop.is_set)
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
