"""`digits-producer review` and `corrections`: keying a run's flagged codes, and exporting them.

Their modules load the web server, NumPy and Pillow, so they are imported when the command runs:
every other command of the producer starts without them.
"""

from __future__ import annotations

import getpass
import json
import socket
import sys
from pathlib import Path

import click

from digits import defaults
from digits.connection import connect, redis_url_option
from producer.drive import err, stop_on_sigterm
from producer.runs import RunError, run_meta


def default_station() -> str:
    """user@host: who keyed a code, and where."""
    try:
        return f"{getpass.getuser()}@{socket.gethostname()}"
    except (KeyError, OSError):  # no user name for this uid (a container)
        return socket.gethostname()


def check_station(_ctx: click.Context, _param: click.Parameter, value: str) -> str:
    if not value or len(value) > 64 or not value.isprintable():
        raise click.BadParameter("a station's name is 1 to 64 printable characters")
    return value


@click.command()
@click.argument("run_id", metavar="RUN")
@redis_url_option
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to serve on. The page has no login: keep it on this machine unless the network is yours.")
@click.option("--port", default=defaults.REVIEW_PORT, show_default=True, type=click.IntRange(0, 65535),
              help="Port to serve on (0: any free one).")
@click.option("--station", default=default_station, show_default="user@host", callback=check_station,
              help="This station's name, stored with every code keyed here.")
@click.option("--claim-seconds", default=defaults.CLAIM_SECONDS, show_default=True, type=click.FloatRange(1),
              help="How long an image on screen stays this station's after the page stops renewing it "
                   "(a crash returns it to the others after this).")
def review(run_id: str, redis_url: str, host: str, port: int, station: str, claim_seconds: float) -> None:
    """Serve a keying station for RUN's flagged codes: a page on which a person keys each code.

    Open the URL it prints. Enter accepts the code in the field, * marks the image unreadable.
    Any number of stations may key one run; none keys an image another has.
    """
    from producer.review import Station, serve

    connection = connect(redis_url)
    try:
        meta = run_meta(connection, run_id)
    except RunError as exc:
        raise click.ClickException(str(exc)) from None
    max_bytes = json.loads(meta.get("settings", "{}")).get("max_bytes", defaults.MAX_BYTES)
    served = Station(connection, run_id, Path(meta["root"]), station, claim_seconds, max_bytes)
    stop_on_sigterm()

    def announce(url: str) -> None:
        click.echo(url)
        err.print(f"keying station [bold]{station}[/] for run {run_id}: open {url} (Ctrl-C stops it)")

    try:
        serve(served, host, port, announce)  # waitress returns on Ctrl-C and SIGTERM (KeyboardInterrupt)
    except KeyboardInterrupt:
        pass
    except OSError as exc:  # the port is taken, or the address is not this machine's
        raise click.ClickException(f"cannot serve on {host}:{port}: {exc.strerror or exc}") from None
    err.print(f"station {station} stopped: what it keyed is stored; the images on its page are free again "
              f"within {claim_seconds:g} s")


@click.command()
@click.argument("run_ids", metavar="RUN...", nargs=-1, required=True)
@redis_url_option
@click.option("--output", "-o", "output", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="New (or empty) folder to write the labelled set to.")
@click.option("--max-bytes", default=defaults.MAX_BYTES, show_default=True, type=click.IntRange(1),
              help="Images larger than this are left out.")
def corrections(run_ids: tuple[str, ...], redis_url: str, output: Path, max_bytes: int) -> None:
    """Write the codes keyed for the runs as a labelled set: images, labels.csv, unreadable.csv and
    manifest.json (docs/corrections.md). Exit 1 if a keyed image could not be read."""
    from producer.corrections import ExportError, export

    try:
        manifest = export(connect(redis_url), run_ids, output, max_bytes,
                          warn=lambda message: err.print(f"[yellow]{message}[/]"))
    except ExportError as exc:
        raise click.ClickException(str(exc)) from None
    counts = manifest["counts"]
    err.print(f"{output}: {counts['labelled']} labelled images from {len(manifest['runs'])} runs, "
              f"{counts['unreadable']} unreadable (listed in unreadable.csv), {counts['missing']} missing")
    sys.exit(1 if counts["missing"] else 0)
