"""One result per image, stored in Redis so that any program can read it.

A result is a JSON object with the same fields whether it succeeded or not (see
docs/redis-keys.md). A batch's results are written in one transaction together with the
deletion of its payload, and only while that payload still exists: whoever finishes a
batch first (a worker, or the producer reporting the batch as failed) writes its results,
so every image gets exactly one result.

Each result is stored once, in the run's results hash; the run's events stream says which
batch finished and names its paths, so followers learn of results in the order they finished
without Redis holding every result twice for the result TTL.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from typing import Any

import redis

from digits import keys
from digits.connection import text


def result_record(path: str, batch: int, **fields: Any) -> dict[str, Any]:
    """One image's result; every result, good or bad, has the same fields."""
    record: dict[str, Any] = {
        "path": path, "code": None, "digits": None, "confidence": None, "review": None,
        "confidences": None, "probabilities": None, "boxes": None,
        "model_version": None, "model_sha256": None, "error": None, "batch": batch,
        "worker": None,
    }
    record.update(fields)
    return record


def store_results(connection: redis.Redis, run_id: str, batch: int,
                  records: list[dict[str, Any]], result_ttl: int) -> bool:
    """Write a batch's results, its event and the payload's deletion at once; False if already done.

    A WatchError means the payload changed under us (another attempt finished the batch) or the
    connection dropped while watching (Redis restarting): either way, look again.
    """
    lines = [json.dumps(r, ensure_ascii=False) for r in records]
    by_path = {r["path"]: line for r, line in zip(records, lines, strict=True)}
    failed = [r["path"] for r in records if r["error"] is not None]
    batch_key = keys.batch(run_id, batch)
    while True:
        with connection.pipeline(transaction=True) as pipe:
            try:
                pipe.watch(batch_key)
                if not pipe.exists(batch_key):
                    return False  # another attempt already finished this batch
                pipe.multi()
                if by_path:
                    pipe.hset(keys.run_results(run_id), mapping=by_path)
                if failed:
                    pipe.sadd(keys.run_failed(run_id), *failed)
                pipe.xadd(keys.run_events(run_id), {"batch": batch, "paths": json.dumps(list(by_path))})
                pipe.delete(batch_key)
                for key in keys.run_keys(run_id):
                    pipe.expire(key, result_ttl)
                pipe.execute()
                return True
            except redis.WatchError:
                continue


def event_lines(connection: redis.Redis, run_id: str, events: Sequence[tuple[Any, dict[bytes, bytes]]]) -> list[str]:
    """The result JSON lines of some entries of a run's events stream, in order, in one round trip.

    An entry names its batch's paths; their results are read from the results hash. (Entries
    written before results were stored once carry the lines themselves, in `results`.)
    """
    named = [json.loads(fields[b"paths"]) if b"paths" in fields else None for _entry_id, fields in events]
    with connection.pipeline(transaction=False) as pipe:
        for paths in named:
            if paths:
                pipe.hmget(keys.run_results(run_id), paths)
        replies: Iterator[list[bytes | None]] = iter(pipe.execute())
    lines: list[str] = []
    for paths, (_entry_id, fields) in zip(named, events, strict=True):
        if paths is None:
            lines += text(fields.get(b"results", b"")).splitlines()
        elif paths:
            lines += [text(line) for line in next(replies) if line is not None]
    return lines
