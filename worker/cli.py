"""`digits-worker`: start N worker processes on this host against one Redis."""

from __future__ import annotations

import sys

import click

from digits import defaults, keys, logs
from digits.connection import Command, connect, redis_url_option
from worker import metrics
from worker.health import probe
from worker.settings import WorkerSettings
from worker.supervisor import supervise


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
@click.option("--review-threshold", envvar="DIGITS_REVIEW_THRESHOLD", type=click.FloatRange(0, 1),
              default=defaults.REVIEW_THRESHOLD, show_default=True,
              help="Codes read with less confidence get review: true, unless their run sets its own threshold.")
@click.option("--max-pixels", envvar="DIGITS_MAX_PIXELS", type=click.IntRange(1), default=defaults.MAX_PIXELS,
              show_default=True, help="Images with more pixels are refused before they are decoded.")
@click.option("--files-root", envvar="DIGITS_FILES_ROOT", default=None,
              type=click.Path(exists=True, file_okay=False, resolve_path=True),
              help="A shared folder (the producer's --shared-root, mounted here): runs enqueued with "
                   "--shared-root are read from their files in it. Nothing outside it is ever read.")
@click.option("--max-bytes", envvar="DIGITS_MAX_BYTES", type=click.IntRange(1), default=defaults.MAX_BYTES,
              show_default=True, help="Files of --files-root larger than this are refused unread.")
def main(count: int, redis_url: str, queues: tuple[str, ...], burst: bool, metrics_port: int | None,
         health: str | None, log_level: str, log_format: str, review_threshold: float, max_pixels: int,
         files_root: str | None, max_bytes: int) -> None:
    """Start COUNT RQ worker processes that classify digit batches."""
    if health is not None:
        healthy, message = probe(connect(redis_url, patient=False, check=False), health)
        click.echo(message)
        sys.exit(0 if healthy else 1)
    logs.setup(log_level, log_format)
    if metrics_port is not None and (busy := metrics.taken(range(metrics_port, metrics_port + count))):
        raise click.ClickException(f"metrics port {busy[0]} is in use by another program (process i of --count "
                                   f"serves on --metrics-port + i): choose free ports")
    connect(redis_url).ping()
    settings = WorkerSettings(redis_url, tuple(queues), burst, log_level, log_format, metrics_port,
                              review_threshold, max_pixels, files_root, max_bytes)
    sys.exit(supervise(count, settings))
