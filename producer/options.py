"""The options `enqueue` and `run` share, and how they become a run: new, joined or resumed."""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path
from typing import IO, Any

import click

from digits import defaults, keys
from digits.files import display_name
from digits.pattern import parse_pattern
from producer import runs
from producer.files import Share


def folder_options(function: Any) -> Any:
    """Options shared by `enqueue` and `run`: how a folder is selected, cut and paced."""
    for option in reversed([
        click.option("--batch-size", default=defaults.BATCH_SIZE, show_default=True,
                     type=click.IntRange(1, 10_000), help="Most images per job."),
        click.option("--batch-bytes", default=defaults.BATCH_BYTES, show_default=True, type=click.IntRange(1),
                     help="Most image bytes per job: a batch of large files (crops, scans) holds fewer images."),
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
        click.option("--part", default=None, callback=check_part, metavar="K/N",
                     help="Only the K-th of N parts of the folder (by a hash of each path): one folder split "
                          "over independent pools, each a Redis with its own workers."),
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


shared_root_option = click.option(
    "--shared-root", type=click.Path(exists=True, file_okay=False, path_type=Path), default=None,
    help="A folder that holds DIRECTORY and that every worker reads as its --files-root (a shared volume): "
         "send each file's path instead of its bytes, so images never pass through Redis.")


def settings_from(options: dict[str, Any], directory: Path | None = None) -> runs.Settings:
    extensions = tuple(e if e.startswith(".") else f".{e}" for e in options["extensions"])
    shared_root: Path | None = options.get("shared_root")
    return runs.Settings(batch_size=options["batch_size"], batch_bytes=options["batch_bytes"], window=options["window"],
                         result_ttl=options["result_ttl"], queue=options["queue"],
                         max_bytes=options["max_bytes"], extensions=extensions,
                         globs=tuple(options["globs"]), expect=options["expect"],
                         review_threshold=options["review_threshold"], part=options["part"],
                         shared_folder=None if shared_root is None or directory is None
                         else shared_folder(directory, shared_root))


def shared_folder(directory: Path, shared_root: Path) -> str:
    """DIRECTORY's path under the shared root, as workers find it under their --files-root ("." for
    the root itself); a folder outside the shared root is a usage error."""
    real_directory, real_root = os.path.realpath(directory), os.path.realpath(shared_root)
    if os.path.commonpath([real_directory, real_root]) != real_root:
        raise click.UsageError(f"{directory} is not inside --shared-root {shared_root}: "
                               "workers would not find its files")
    return display_name(os.path.relpath(real_directory, real_root))


def open_output(path: str, mode: str = "w") -> IO[str]:
    """stdout for -, else the file; one that cannot be written is one clear line."""
    if path == "-":
        return sys.stdout
    try:
        return open(path, mode, encoding="utf-8", newline="")
    except OSError as exc:
        raise click.ClickException(f"cannot write the output {path}: {exc.strerror}") from None


def check_run_id(_ctx: click.Context, _param: click.Parameter, value: str | None) -> str | None:
    """A run id names Redis keys and appears in commands: keep it to a plain word."""
    if value is not None and not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}", value):
        raise click.BadParameter(f"{value!r}: use 1-64 letters, digits, '.', '_' or '-'")
    return value


def check_part(_ctx: click.Context, _param: click.Parameter, value: str | None) -> str | None:
    """Checked here, kept as typed: a run's settings are stored as JSON."""
    check_share(_ctx, _param, value)
    return value


def check_share(_ctx: click.Context, _param: click.Parameter, value: str | None) -> Share | None:
    try:
        return None if value is None else Share.parse(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None


share_option = click.option(
    "--share", default=None, callback=check_share, metavar="K/N",
    help="Send only the K-th of N shares of the folder (by a hash of each path), so that N producers, "
         "on one host or several, feed one run: name it with --run-id, or join it with --resume RUN.")
run_id_option = click.option("--run-id", default=None, callback=check_run_id,
                             help="Name the new run (default: the time and a random tag).")
resume_option = click.option(
    "--resume", "resume", metavar="RUN", default=None,
    help="Continue RUN after its producer was stopped or killed: send only what has no result and is not "
         "already queued, with the run's own folder and settings (DIRECTORY may be left out).")


def start_or_resume(connection: Any, directory: Path | None, resume: str | None, options: dict[str, Any],
                    run_id: str | None = None, share: Share | None = None) -> tuple[str, Path, runs.Settings]:
    """A new run of DIRECTORY (named RUN_ID, or joined when producers share it), or the stored
    folder and settings of the run to resume."""
    try:
        if resume is None:
            return new_or_joined(connection, directory, options, run_id, share)
        if run_id is not None:
            raise click.UsageError("give --run-id for a new run or --resume RUN, not both")
        root, settings = runs.stored_settings(connection, resume)
        if share is not None and share.of != (shares := runs.run_shares(connection, resume)):
            raise click.UsageError(f"run {resume} is sent in {shares} share(s), not {share.of}")
    except runs.RunError as exc:
        raise click.ClickException(str(exc)) from None
    if directory is not None and directory.resolve() != root.resolve():
        raise click.UsageError(f"run {resume} is of folder {root}, not {directory}")
    return resume, root, settings


def new_or_joined(connection: Any, directory: Path | None, options: dict[str, Any], run_id: str | None,
                  share: Share | None) -> tuple[str, Path, runs.Settings]:
    if directory is None:
        raise click.UsageError("give a DIRECTORY, or --resume RUN")
    settings = settings_from(options, directory)
    if share is not None and run_id is None:
        raise click.UsageError("--share K/N needs the run's name, the same on every producer: --run-id RUN")
    if run_id is None:
        return runs.create_run(connection, directory, settings), directory, settings
    return runs.join_run(connection, directory, settings, run_id, share.of if share else 1), directory, settings
