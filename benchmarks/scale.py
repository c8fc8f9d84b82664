"""Scaling out: end-to-end images/s for each worker count against the in-process ceiling, and
where the CPU goes (producer, workers, Redis), so the capacity of one producer and one Redis
can be read off any machine, 2 cores or 16.

Run: .venv/bin/python -m benchmarks.scale [--workers 1,2] [--images 40000] [--input mnist|crops]
     [--producers 1] [--shared] [--aof] [--batch-size 1024] [--plot docs/benchmarks-scale.png]

"Feeds" is a worker's CPU per image over the producer's: how many busy workers one producer
keeps fed; "steady" leaves out the producer's start-up (its CPU on an empty folder, measured in
the same run: imports and connecting, 0.2 s that a long run spreads over more images).
"Serves" is a worker's CPU per image over Redis': how many busy workers one Redis keeps up with.
Both are CPU accounting in one run, so they hold whatever the core count.
Under the table, each row's Redis time per image by command (INFO commandstats): what a change
to the Redis traffic would save; and the file floor: the CPU a file of one process doing nothing
but the producer's file work (listing the folder, reading each file), and of a bare open, read
and close. A producer that sends the bytes pays it for every image, so a worker's CPU per image
over it bounds how many workers one producer can feed on this machine, whatever else it saves.
"""

from __future__ import annotations

import argparse
import os
import resource
import tempfile
from dataclasses import dataclass
from pathlib import Path

from benchmarks.inputs import link_folder, write_crops, write_digits
from benchmarks.pipeline import Workers, decode_floor, end_to_end, in_process, machine
from benchmarks.plot import rate_figure
from benchmarks.procs import cpu_seconds
from digits import defaults
from digits.connection import connect
from digits.registry import DEFAULT_MODEL_DIR, Registry
from producer.files import read, walk
from producer.redis_server import RedisServer


@dataclass(frozen=True)
class Row:
    """One worker count: its end-to-end rate, the ceiling, and CPU microseconds per image by part."""

    workers: int
    rate: float
    ceiling: float
    decode: float
    producer_us: float
    startup_us: float  # the producer's CPU on an empty folder, spread over this run's images
    worker_us: float
    redis_us: float
    commands: dict[str, float]  # Redis command -> µs of Redis time per image (INFO commandstats)

    @property
    def share(self) -> float:
        return self.rate / self.ceiling

    @property
    def of_decode(self) -> float:
        return self.rate / self.decode

    @property
    def feeds(self) -> float:
        return self.worker_us / self.producer_us

    @property
    def feeds_steady(self) -> float:
        return self.worker_us / (self.producer_us - self.startup_us)

    @property
    def serves(self) -> float:
        return self.worker_us / self.redis_us


AOF = ["--save", "", "--appendonly", "yes", "--appendfsync", "everysec"]  # Redis as compose.yaml runs it


def measure(paths: list[Path], folder: Path, count: int, producers: int, shared: bool, batch_size: int,
            aof: bool = False) -> Row:
    """`count` workers, already running, read the folder through `producers` producer processes
    (with shared, by path: the workers read the files themselves)."""
    with RedisServer(extra_args=AOF if aof else None) as server:
        assert server.process is not None
        Registry(connect(server.url)).publish_dir(DEFAULT_MODEL_DIR, promote=True)
        with Workers(server.url, count, folder if shared else None) as workers:
            connection = connect(server.url)
            connection.config_resetstat()
            redis_before = cpu_seconds(server.process.pid)
            timed = end_to_end(server.url, folder, len(paths), batch_size, workers.parts(), producers, shared)
            redis_cpu = cpu_seconds(server.process.pid) - redis_before
            stats = connection.info("commandstats")
            with tempfile.TemporaryDirectory() as empty:  # after Redis' figures are read: not in them
                startup = end_to_end(server.url, Path(empty), 0, batch_size, {}, producers).cpu["producer"]
    per_image = 1e6 / len(paths)
    commands = {name.removeprefix("cmdstat_"): stat["usec"] / len(paths) for name, stat in stats.items()}
    return Row(count, timed.rate, in_process(paths, count, batch=batch_size), decode_floor(paths, count),
               timed.cpu["producer"] * per_image, startup * per_image,
               (timed.cpu["workers"] + timed.cpu["supervisor"]) * per_image, redis_cpu * per_image, commands)


@dataclass(frozen=True)
class FileFloor:
    """CPU µs a file (user and kernel) of one process doing only a producer's file work, best of three passes."""

    listing_us: float  # producer.files.walk: the folder's names, sorted, each file's kind and display name
    reading_us: float  # producer.files.read: open, fstat, read and close, bounded
    bare_us: float  # os.open, os.read and os.close, nothing else

    @property
    def sending_us(self) -> float:
        """Listing and reading: what a producer sending the bytes pays a file before any other work."""
        return self.listing_us + self.reading_us


def cpu_now() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def bare_read(path: str) -> None:
    handle = os.open(path, os.O_RDONLY)
    try:
        os.read(handle, 1 << 16)
    finally:
        os.close(handle)


def file_floor(folder: Path) -> FileFloor:
    """The file floor of this folder, its files already in the page cache (as the producer finds them)."""
    passes = []
    for _ in range(3):
        started = cpu_now()
        found = list(walk(folder))
        listed = cpu_now()
        for each in found:
            read(each)
        reading = cpu_now()
        for each in found:
            bare_read(each.path)
        passes.append((listed - started, reading - listed, cpu_now() - reading))
    per_file = 1e6 / max(len(found), 1)
    return FileFloor(*(min(column) * per_file for column in zip(*passes, strict=True)))


def render(rows: list[Row], what: str, producers: int, batch_size: int, floor: FileFloor) -> str:
    lines = [f"machine: {machine()}", f"input: {what}; {producers} producer process(es), batches of {batch_size}; "
             "workers already running", "",
             "| workers | end to end, images/s | in-process ceiling, images/s | end to end / ceiling "
             "| plain Pillow decode, N processes, images/s | end to end / decode "
             "| CPU µs per image: producer / workers / Redis | producer start-up, µs per image "
             "| one producer feeds: all / steady | one Redis serves |",
             "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for row in rows:
        lines.append(f"| {row.workers} | {row.rate:,.0f} | {row.ceiling:,.0f} | {row.share:.0%} "
                     f"| {row.decode:,.0f} | {row.of_decode:.2f} "
                     f"| {row.producer_us:,.0f} / {row.worker_us:,.0f} / {row.redis_us:,.1f} "
                     f"| {row.startup_us:.1f} | {row.feeds:.1f} / {row.feeds_steady:.1f} workers "
                     f"| {row.serves:.0f} workers |")
    lines.append("")
    for row in rows:  # where Redis' time goes: a script's time includes the commands it calls
        top = sorted(row.commands.items(), key=lambda item: -item[1])[:8]
        lines.append(f"{row.workers} workers, Redis commands, µs per image: {sum(row.commands.values()):.1f} in all; "
                     + ", ".join(f"{name} {us:.2f}" for name, us in top))
    lines.append(f"file floor, CPU µs a file in one process: listing {floor.listing_us:.1f}, reading "
                 f"{floor.reading_us:.1f} (a bare open, read and close: {floor.bare_us:.1f}); a producer sending "
                 "the bytes feeds at most " + ", ".join(f"{row.worker_us / floor.sending_us:.1f}" for row in rows)
                 + " workers (each row's worker CPU per image over listing and reading)")
    return "\n".join(lines)


def plot(rows: list[Row], title: str, path: Path) -> None:
    with rate_figure(title, path) as axes:
        counts = [row.workers for row in rows]
        axes.plot(counts, [row.rate for row in rows], marker="o", label="digits-producer run (end to end)")
        axes.plot(counts, [row.ceiling for row in rows], marker="s", linestyle="--",
                  label="in-process ceiling (same code, N processes, no Redis)")
        axes.set_xticks(counts, [str(c) for c in counts])
        axes.set_xlabel("workers")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workers", default="1,2", help="comma-separated worker counts (default 1,2)")
    parser.add_argument("--images", type=int, default=40_000)
    parser.add_argument("--input", choices=("mnist", "crops"), default="mnist")
    parser.add_argument("--producers", type=int, default=1, help="sender processes of the run (run --jobs)")
    parser.add_argument("--shared", action="store_true",
                        help="send the folder by path (run --shared-root) to workers reading it (--files-root)")
    parser.add_argument("--batch-size", type=int, default=defaults.BATCH_SIZE, help="images per job (run --batch-size)")
    parser.add_argument("--aof", action="store_true",
                        help="Redis with AOF (appendfsync everysec), as compose.yaml runs it: its CPU includes the log")
    parser.add_argument("--plot", type=Path, help="write the plot here (PNG)")
    args = parser.parse_args()
    counts = [int(c) for c in args.workers.split(",")]
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        if args.input == "mnist":
            sources = write_digits(folder / "sources", min(args.images, 10_000))
            folder = link_folder(sources, folder / "images", args.images)
            paths = sorted(folder.iterdir())
            what = f"{len(paths):,} MNIST test digits ({len(sources):,} files, repeated) as 28 x 28 PNG files"
        else:
            paths, (width, height) = write_crops(folder, args.images)
            what = f"{len(paths):,} generated 5-digit postal crops, about {width:.0f} x {height:.0f} PNG"
        rows = [measure(paths, folder, count, args.producers, args.shared, args.batch_size, args.aof)
                for count in counts]
        floor = file_floor(folder)
    how = "; sent by path (--shared-root)" if args.shared else ""
    how += "; Redis with AOF (everysec)" if args.aof else ""
    table = render(rows, what + how, args.producers, args.batch_size, floor)
    print(table)
    if args.plot:
        plot(rows, f"{what}\n{machine()}", args.plot)


if __name__ == "__main__":
    main()
