"""The producer's CPU a result around a finished run: following it (reading each batch's event and
results, writing JSON Lines, counting), the same with every result parsed (what the producer did
before events carried a summary), and one more pass over the run's folder (what `deliver` did
after every run before it checked the results' count instead).

Run: .venv/bin/python -m benchmarks.follow [--images 40000] [--rounds 2]

The run's results are stored as workers store them (digits.results.store_results, a worker-sized
result for each of the folder's files, batches of 1,024) on a private redis-server; no worker runs,
so only the producer's side is timed (process CPU time).
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import redis

from benchmarks.inputs import link_folder, write_digits
from benchmarks.pipeline import machine
from benchmarks.store import SIZE, worker_record
from digits import keys
from digits.connection import connect
from digits.payload import BY_BATCH, RESULTS_FIELD
from digits.results import store_results
from producer.drive import Outcome
from producer.files import walk
from producer.following import follow_batches
from producer.output import ResultWriter
from producer.redis_server import RedisServer
from producer.runs import Settings, create_run
from producer.sending import Sender


def finished_run(connection: redis.Redis, folder: Path) -> str:
    """A run of the folder whose every file has its result, stored batch by batch as workers do."""
    settings = Settings()
    run_id = create_run(connection, folder, settings)
    paths = [found.relative for found in walk(folder)]
    for index, start in enumerate(range(0, len(paths), SIZE)):
        chunk = paths[start:start + SIZE]
        connection.hset(keys.batch(run_id, index), mapping={"paths": json.dumps(chunk), RESULTS_FIELD: BY_BATCH})
        store_results(connection, run_id, index, [worker_record(path, index) for path in chunk], settings.result_ttl)
    connection.hset(keys.run(run_id), mapping={"status": "enqueued", "total": len(paths),
                                               "batches": -(-len(paths) // SIZE)})
    return run_id


def following(connection: redis.Redis, run_id: str, parse: bool) -> None:
    """What `run` and `results` do with each result: write its JSON line, count it (and parse it)."""
    with open(os.devnull, "w") as stream:
        writer, outcome = ResultWriter(stream, "jsonl"), Outcome()
        for batch in follow_batches(connection, run_id, wait=False):
            if parse:
                _ = [result.record for result in batch.results()]
            writer.write_batch(batch)
            outcome.count(batch)


def cpu_per_image(work: Callable[[], object], images: int) -> float:
    started = time.process_time()
    work()
    return (time.process_time() - started) * 1e6 / images


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=40_000)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp, RedisServer() as server:
        folder = link_folder(write_digits(Path(tmp) / "sources", min(args.images, 10_000)), Path(tmp) / "images",
                             args.images)
        connection = connect(server.url)
        run_id = finished_run(connection, folder)
        print(f"machine: {machine()}; a finished run of {args.images:,} MNIST PNG files, batches of {SIZE}\n")
        print("| round | producer CPU µs a result: following, JSON Lines, counting | the same, each result parsed "
              "| one more pass over the folder |")
        print("| ---: | ---: | ---: | ---: |")
        for round_ in range(1, args.rounds + 1):
            unparsed = cpu_per_image(lambda: following(connection, run_id, parse=False), args.images)
            parsed = cpu_per_image(lambda: following(connection, run_id, parse=True), args.images)
            again = cpu_per_image(lambda: Sender(connection, run_id, folder, Settings()).send_pass(), args.images)
            print(f"| {round_} | {unparsed:.2f} | {parsed:.2f} | {again:.2f} |")


if __name__ == "__main__":
    main()
