"""Redis CPU per stored result: the results script (digits/results.py) against a WATCH +
MULTI/EXEC transaction doing the same writes, the design it would be replaced by, and against
the same script storing a batch's results as one value (JSON Lines) instead of one hash field
an image: what a results schema keyed by batch would save Redis (docs/benchmarks.md).

Run: .venv/bin/python -m benchmarks.store [--batches 800] [--rounds 2]

Each round fills a fresh redis-server with payloads of 256 images of 300 B, stores a result
of the worker's size for each, and reads the server's CPU time from /proc.
"""

from __future__ import annotations

import argparse
import json
import os
from collections.abc import Callable

import redis

from benchmarks.pipeline import machine
from benchmarks.procs import cpu_seconds
from digits import keys
from digits.results import STORE_SCRIPT, Record, encode_result, result_record, store_results
from producer.redis_server import RedisServer

SIZE = 256  # images a batch (the producer's default until 2026-12-06; per result, the size hardly matters)
TTL = 3600
Store = Callable[[redis.Redis, str, int, list[Record], int], bool]


def watch_store(connection: redis.Redis, run_id: str, batch: int, records: list[Record], ttl: int) -> bool:
    """store_results' writes as an optimistic transaction: three round trips instead of one."""
    payload = keys.batch(run_id, batch)
    with connection.pipeline(transaction=True) as pipe:
        pipe.watch(payload)
        if not pipe.exists(payload):
            return False
        pipe.multi()
        if failed := [r["path"] for r in records if r["error"] is not None]:
            pipe.sadd(keys.run_failed(run_id), *failed)
        if review := [r["path"] for r in records if r["review"]]:
            pipe.sadd(keys.run_review(run_id), *review)
        pipe.hset(keys.run_results(run_id), mapping={r["path"]: encode_result(r) for r in records})
        pipe.xadd(keys.run_events(run_id), {"batch": batch, "paths": json.dumps([r["path"] for r in records])})
        pipe.delete(payload)
        for key in keys.run_keys(run_id)[1:]:
            pipe.expire(key, ttl)
        try:
            pipe.execute()
        except redis.WatchError:
            return False
    return True


def one_value_store(connection: redis.Redis, run_id: str, batch: int, records: list[Record], ttl: int) -> bool:
    """The results script, its hash given one field for the whole batch: `batch:<n>` -> JSON Lines."""
    script = connection.register_script(STORE_SCRIPT)
    lines = "\n".join(encode_result(r) for r in records)
    return bool(script(keys=[keys.batch(run_id, batch), *keys.run_keys(run_id)],
                       args=[ttl, batch, json.dumps([r["path"] for r in records]), "[]", "[]", "", 0, 0,
                             f"batch:{batch}", lines]))


def batch_records(batch: int) -> list[Record]:
    """A batch of single-digit results, each the size of a worker's (about 400 B of JSON)."""
    return [result_record(f"d{batch:05d}/{index:06d}.png", batch, code="7", digits="7", confidence=0.998704,
                          review=False, confidences=[0.998704],
                          probabilities=[[0.0, 1e-06, 0.000123, 2.3e-05, 0.0, 0.0, 0.0, 0.998704, 0.000234, 0.001012]],
                          boxes=[[3, 2, 25, 26]], model_version="20261202-185054-best-9cd7ddc5",
                          model_sha256="9" * 64, worker="host.1234.ab12cd")
            for index in range(SIZE)]


def cpu_per_result(store: Store, batches: int, fields_a_batch: int = SIZE) -> float:
    """Redis CPU µs per result, storing `batches` batches with `store` on a fresh server."""
    with RedisServer() as server:
        assert server.process is not None
        connection = redis.Redis.from_url(server.url)
        for batch in range(batches):
            connection.hset(keys.batch("r", batch), mapping={"images": os.urandom(300 * SIZE),
                                                            "sizes": json.dumps([300] * SIZE)})
        records = [batch_records(batch) for batch in range(batches)]
        before = cpu_seconds(server.process.pid)
        for batch in range(batches):
            if not store(connection, "r", batch, records[batch], TTL):
                raise RuntimeError(f"batch {batch} was not stored")
        spent = cpu_seconds(server.process.pid) - before
        if connection.hlen(keys.run_results("r")) != batches * fields_a_batch:
            raise RuntimeError("results missing")
    return spent * 1e6 / (batches * SIZE)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batches", type=int, default=800)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    print(f"machine: {machine()}; {args.batches} batches of {SIZE} results a round\n")
    print("| round | results script, Redis CPU µs a result | WATCH + MULTI/EXEC | script / transaction "
          "| script, one value a batch | one value / script |")
    print("| ---: | ---: | ---: | ---: | ---: | ---: |")
    for round_ in range(1, args.rounds + 1):
        script, watch = cpu_per_result(store_results, args.batches), cpu_per_result(watch_store, args.batches)
        one_value = cpu_per_result(one_value_store, args.batches, fields_a_batch=1)
        print(f"| {round_} | {script:.2f} | {watch:.2f} | {script / watch:.2f} | {one_value:.2f} "
              f"| {one_value / script:.2f} |")


if __name__ == "__main__":
    main()
