"""Redis CPU per stored result: the transaction that stores a batch's results as one value (JSON
Lines, digits/results.py, since 2026-12-07) against the same transaction storing one hash field
an image (until 2026-12-07) and the Lua script before it (until 2026-12-06): what each schema
costs Redis (docs/benchmarks.md).

Run: .venv/bin/python -m benchmarks.store [--batches 200] [--rounds 2]

Each round fills a fresh redis-server with payloads of 1,024 images of 300 B, stores a result
of the worker's size for each, and reads the server's CPU time from /proc and its used_memory.
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
from digits.payload import BY_BATCH, RESULTS_FIELD
from digits.results import Record, encode_result, result_record, store_results
from producer.redis_server import RedisServer

SIZE = 1024  # images a batch: the producer's default (--batch-size)
TTL = 3600
Store = Callable[[redis.Redis, str, int, list[Record], int], bool]

# The script store_results ran until 2026-12-06 (one round trip; Redis converts every argument to
# Lua and back). KEYS: the payload, then the run's keys as keys.run_keys listed them then. ARGV:
# TTL, batch, paths (JSON), the failed paths' count and paths, the flagged paths' count and paths,
# then path and result pairs.
STORE_SCRIPT = """
if redis.call('EXISTS', KEYS[1]) == 0 then
  return 0
end
local failed_end = 4 + tonumber(ARGV[4])
for first = 5, failed_end, 1000 do
  redis.call('SADD', KEYS[4], unpack(ARGV, first, math.min(first + 999, failed_end)))
end
local review_end = failed_end + 1 + tonumber(ARGV[failed_end + 1])
for first = failed_end + 2, review_end, 1000 do
  redis.call('SADD', KEYS[6], unpack(ARGV, first, math.min(first + 999, review_end)))
end
for first = review_end + 1, #ARGV, 1000 do
  redis.call('HSET', KEYS[3], unpack(ARGV, first, math.min(first + 999, #ARGV)))
end
redis.call('XADD', KEYS[5], '*', 'batch', ARGV[2], 'paths', ARGV[3])
redis.call('DEL', KEYS[1])
for i = 2, #KEYS do
  redis.call('EXPIRE', KEYS[i], ARGV[1])
end
return 1
"""


def script_store(connection: redis.Redis, run_id: str, batch: int, records: list[Record], ttl: int) -> bool:
    paths = [r["path"] for r in records]
    failed = [r["path"] for r in records if r["error"] is not None]
    review = [r["path"] for r in records if r["review"]]
    pairs: list[str] = []
    for record in records:
        pairs += (record["path"], encode_result(record))
    stored = connection.register_script(STORE_SCRIPT)(
        keys=[keys.batch(run_id, batch), keys.run(run_id), keys.run_results(run_id), keys.run_failed(run_id),
              keys.run_events(run_id), keys.run_review(run_id)],
        args=[ttl, batch, json.dumps(paths), len(failed), *failed, len(review), *review, *pairs])
    return bool(stored)


def by_path_store(connection: redis.Redis, run_id: str, batch: int, records: list[Record], ttl: int) -> bool:
    """The transaction as it stored results until 2026-12-07: one field an image, path -> result."""
    payload = keys.batch(run_id, batch)
    with connection.pipeline(transaction=True) as pipe:
        pipe.watch(payload)
        if not pipe.exists(payload):
            return False
        pipe.multi()
        pipe.hset(keys.run_results(run_id), mapping={r["path"]: encode_result(r) for r in records})
        pipe.xadd(keys.run_events(run_id), {"batch": batch, "paths": json.dumps([r["path"] for r in records])})
        pipe.delete(payload)
        for key in keys.run_keys(run_id)[1:]:
            pipe.expire(key, ttl)
        pipe.execute()
    return True


def worker_record(path: str, batch: int) -> Record:
    """A single digit's result, the size of a worker's (about 400 B of JSON)."""
    return result_record(path, batch, code="7", digits="7", confidence=0.998704, review=False, confidences=[0.998704],
                         probabilities=[[0.0, 1e-06, 0.000123, 2.3e-05, 0.0, 0.0, 0.0, 0.998704, 0.000234, 0.001012]],
                         boxes=[[3, 2, 25, 26]], model_version="20261202-185054-best-9cd7ddc5",
                         model_sha256="9" * 64, worker="host.1234.ab12cd")


def batch_records(batch: int) -> list[Record]:
    return [worker_record(f"d{batch:05d}/{index:06d}.png", batch) for index in range(SIZE)]


def cost_per_result(store: Store, batches: int) -> tuple[float, float]:
    """Redis CPU µs and memory bytes per result, storing `batches` batches with `store` on a fresh
    server (memory: used_memory once every batch is stored, which deletes its payload, over before
    the payloads were written)."""
    with RedisServer() as server:
        assert server.process is not None
        connection = redis.Redis.from_url(server.url)
        idle = int(connection.info("memory")["used_memory"])
        for batch in range(batches):
            connection.hset(keys.batch("r", batch), mapping={"images": os.urandom(300 * SIZE), RESULTS_FIELD: BY_BATCH,
                                                            "sizes": json.dumps([300] * SIZE)})
        records = [batch_records(batch) for batch in range(batches)]
        before = cpu_seconds(server.process.pid)
        for batch in range(batches):
            if not store(connection, "r", batch, records[batch], TTL):
                raise RuntimeError(f"batch {batch} was not stored")
        spent = cpu_seconds(server.process.pid) - before
        if connection.xlen(keys.run_events("r")) != batches:
            raise RuntimeError("results missing")
        held = int(connection.info("memory")["used_memory"]) - idle
    return spent * 1e6 / (batches * SIZE), held / (batches * SIZE)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batches", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    print(f"machine: {machine()}; {args.batches} batches of {SIZE} results a round\n")
    print("| round | Redis CPU µs a result: by batch (store_results) | by path (until 2026-12-07) "
          "| Lua script, by path (until 2026-12-06) | by batch / by path | Redis memory a result, bytes: by batch "
          "| by path |")
    print("| ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for round_ in range(1, args.rounds + 1):
        (by_batch, batch_bytes), (by_path, path_bytes) = (cost_per_result(store_results, args.batches),
                                                          cost_per_result(by_path_store, args.batches))
        script, _ = cost_per_result(script_store, args.batches)
        print(f"| {round_} | {by_batch:.2f} | {by_path:.2f} | {script:.2f} | {by_batch / by_path:.2f} "
              f"| {batch_bytes:.0f} | {path_bytes:.0f} |")


if __name__ == "__main__":
    main()
