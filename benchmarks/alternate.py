"""End to end with one worker, model versions alternated on the same MNIST folder, with the worker's CPU.

Run: .venv/bin/python -m benchmarks.alternate --model A --model B [--rounds 2] [--images 10000]

On a VM whose speed swings between minutes, the rates of two versions measured one after the
other (as benchmarks.pipeline does) can differ by half with the same code; alternating them and
reading the worker's CPU seconds, which do not depend on when it ran, tells a real difference
from the machine's.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from benchmarks.inputs import write_digits
from benchmarks.pipeline import Workers, end_to_end, machine
from digits.connection import connect
from digits.registry import Registry
from producer.redis_server import RedisServer


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, action="append", required=True, help="a version directory; repeat")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--images", type=int, default=10_000)
    args = parser.parse_args()
    print(f"machine: {machine()}\n")
    print("| round | model | images/s | worker CPU s | producer CPU s |")
    print("| ---: | --- | ---: | ---: | ---: |")
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        write_digits(folder, args.images)
        for number in range(1, args.rounds + 1):
            for directory in args.model:
                with RedisServer() as server:
                    Registry(connect(server.url)).publish_dir(directory, promote=True)
                    with Workers(server.url, 1) as workers:
                        timed = end_to_end(server.url, folder, args.images, parts=workers.parts())
                print(f"| {number} | {directory} | {timed.rate:,.0f} | {timed.cpu['workers']:.2f} | "
                      f"{timed.cpu['producer']:.2f} |")


if __name__ == "__main__":
    main()
