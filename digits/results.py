"""One result per image, stored in Redis so that any program can read it.

A result is a JSON object with the same fields whether it succeeded or not (see
docs/redis-keys.md). A batch's results are written in one step (a transaction) together with the
deletion of its payload, and only while that payload still exists: whoever finishes a
batch first (a worker, or the producer reporting the batch as failed) writes its results,
so every image gets exactly one result.

A batch's results are stored as one value (JSON Lines, in the order of its paths) in the run's
batch-results hash: one field an image cost Redis three times the CPU a result, the most of any
step (benchmarks.store), and capped one Redis at about 45 MNIST workers. The run's events stream
says which batch finished and names its paths, so followers learn of results in the order they
finished. The results a person looks up by path, those flagged for review or failed, are also
stored by path, in the run's results hash; the run hash counts the results (`results`).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any, NamedTuple

import orjson
import redis

from digits import keys
from digits.connection import text
from digits.payload import BY_BATCH, RESULTS_FIELD

Record = dict[str, Any]  # one image's result, as stored in JSON


class Result:
    """One image's result as a follower reads it back: the stored JSON line, written out as it
    is, and what a run's summary counts (failed, flagged, model version), from its batch's event.
    The record itself is parsed only when asked for: parsing was 5 µs a result (benchmarks.follow),
    a quarter of the producer's CPU a digit, and JSON Lines output never needs it."""

    __slots__ = ("failed", "line", "parsed", "path", "review", "version")

    def __init__(self, line: str, path: str, failed: bool, review: bool, version: str | None,
                 parsed: Record | None = None) -> None:
        self.line = line
        self.path = path
        self.failed = failed
        self.review = review
        self.version = version
        self.parsed = parsed

    @classmethod
    def of(cls, record: Record, line: str | None = None) -> Result:
        """A result from its record (and its stored line, if it has one)."""
        return cls(line or encode_result(record), record["path"], record["error"] is not None,
                   bool(record["review"]), record["model_version"], record)

    @property
    def record(self) -> Record:
        if self.parsed is None:
            self.parsed = decode_result(self.line)
        return self.parsed


def result_record(path: str, batch: int, **fields: Any) -> Record:
    """One image's result; every result, good or bad, has the same fields."""
    record: Record = {
        "path": path, "code": None, "digits": None, "confidence": None, "review": None,
        "confidences": None, "probabilities": None, "boxes": None,
        "model_version": None, "model_sha256": None, "error": None, "batch": batch,
        "worker": None,
    }
    record.update(fields)
    return record


def encode_result(record: Record) -> str:
    """A result's JSON line, as stored and written out: compact UTF-8, by orjson (a worker writes
    one for every image; json.dumps took 7.5 µs of it, orjson 0.6)."""
    return orjson.dumps(record).decode()


def decode_result(line: str | bytes) -> Record:
    """A stored result line, parsed (by orjson: 1.0 µs against json's 3.6)."""
    record: Record = orjson.loads(line)
    return record


ATTEMPTS = 10  # transactions a batch's results may try while its payload changes under them, or Redis
# is away (a lost connection ends a watch too); the waits between them (6.5 s in all) ride out a restart


def store_results(connection: redis.Redis, run_id: str, batch: int,
                  records: list[dict[str, Any]], result_ttl: int) -> bool:
    """Write a batch's results, its event, the run's count and the payload's deletion at once;
    False if already done.

    One optimistic transaction: WATCH the payload, check it is there, then MULTI/EXEC every write
    and its deletion, so whoever deletes it first wins and a loser writes nothing. With a batch's
    results as one value, Redis spends about a third of the CPU a result of one field an image, a
    sixth of the Lua script that did that before (benchmarks.store), for three more round trips a
    batch. The event carries the batch's summary, so that a follower counts and writes results
    without parsing them (every reading of a batch is by one model). A payload from an older
    producer (not marked BY_BATCH) gets every result by path, as it reads them.
    """
    paths = [r["path"] for r in records]
    failed = [position for position, r in enumerate(records) if r["error"] is not None]
    review = [position for position, r in enumerate(records) if r["review"]]
    versions = {r["model_version"] for r in records if r["model_version"]}
    if len(versions) > 1:
        raise ValueError(f"run {run_id} batch {batch}: readings by {len(versions)} model versions in one batch")
    event = {"batch": batch, "paths": json.dumps(paths), "failed": json.dumps(failed), "review": json.dumps(review),
             "version": "".join(versions)}
    lines = [encode_result(record) for record in records]
    looked_up = {paths[i]: lines[i] for i in sorted({*failed, *review})}  # a person looks these up by path
    payload = keys.batch(run_id, batch)
    last: redis.WatchError | None = None
    with connection.pipeline(transaction=True) as pipe:
        for attempt in range(ATTEMPTS):
            try:
                pipe.watch(payload)
                if not pipe.exists(payload):
                    return False
                by_batch = text(pipe.hget(payload, RESULTS_FIELD) or "") == BY_BATCH
                by_path = looked_up if by_batch else dict(zip(paths, lines, strict=True))
                pipe.multi()
                if failed:
                    pipe.sadd(keys.run_failed(run_id), *(paths[i] for i in failed))
                if review:
                    pipe.sadd(keys.run_review(run_id), *(paths[i] for i in review))
                if by_path:
                    pipe.hset(keys.run_results(run_id), mapping=by_path)
                if by_batch:
                    pipe.hset(keys.run_batch_results(run_id), str(batch), "\n".join(lines))
                    pipe.hincrby(keys.run(run_id), "results", len(lines))
                pipe.xadd(keys.run_events(run_id), event)  # type: ignore[arg-type]
                pipe.delete(payload)
                for key in keys.run_keys(run_id):  # the run hash too: it holds the count, and lives as long
                    pipe.expire(key, result_ttl)
                pipe.execute()
                return True
            except redis.WatchError as exc:  # the payload changed between the check and the writes, or
                last = exc  # the connection was lost meanwhile: look again, after a moment
                time.sleep(min(0.05 * 2 ** attempt, 1.0))
    raise RuntimeError(f"run {run_id} batch {batch}: not stored in {ATTEMPTS} attempts ({last})")


class Finished(NamedTuple):
    """One finished batch's results as a follower reads them: its paths, their stored lines as
    stored (one text, in the paths' order, unparsed and unsplit) and what its event says of them.
    A follower that writes and counts whole batches spends about 1 µs of CPU a result; one
    Result object a result cost 3.4-3.9 (benchmarks.follow)."""

    paths: list[str]
    text: str  # the results' JSON lines, joined by newlines
    failed: frozenset[int]  # positions in paths
    review: frozenset[int]
    version: str | None  # the model that read the batch (None if it was failed whole)

    @classmethod
    def of(cls, results: Sequence[Result]) -> Finished:
        """A batch from results read one by one (runs stored the older ways, a subset of a batch)."""
        return cls([r.path for r in results], "\n".join(r.line for r in results),
                   frozenset(i for i, r in enumerate(results) if r.failed),
                   frozenset(i for i, r in enumerate(results) if r.review),
                   next((r.version for r in results if r.version), None))

    @property
    def lines(self) -> list[str]:
        return self.text.split("\n") if self.paths else []

    def results(self) -> list[Result]:
        """Its results one by one, for a reader that needs them so (CSV, watch, keying)."""
        return [Result(line, path, position in self.failed, position in self.review,
                       None if position in self.failed else self.version)
                for position, (path, line) in enumerate(zip(self.paths, self.lines, strict=True))]


def event_batches(connection: redis.Redis, run_id: str,
                  events: Sequence[tuple[Any, dict[bytes, bytes]]]) -> list[Finished]:
    """The finished batches some entries of a run's events stream name, in order, in one round trip.

    An entry names its batch and paths; the batch's results are one value of the batch-results
    hash, and what a summary counts comes from the entry. Runs stored before 2026-12-07 hold each
    result by path in the results hash instead: those are read from there (entries written before
    events carried a summary are parsed; those written before results were stored once carry the
    lines themselves, in `results`).
    """
    named = [json.loads(fields[b"paths"]) if b"paths" in fields else None for _entry_id, fields in events]
    with connection.pipeline(transaction=False) as pipe:
        for (_entry_id, fields), paths in zip(events, named, strict=True):
            if paths:
                pipe.hget(keys.run_batch_results(run_id), text(fields[b"batch"]))
        stored: Iterator[bytes | None] = iter(pipe.execute())
    found: list[Finished] = []
    for paths, (_entry_id, fields) in zip(named, events, strict=True):
        if paths is None:
            carried = text(fields.get(b"results", b"")).splitlines()
            found.append(Finished.of([Result.of(decode_result(line), line) for line in carried]))
            continue
        if not paths:
            continue
        batch_lines = next(stored)
        if batch_lines is not None and b"version" in fields:  # as stored today
            found.append(Finished(paths, text(batch_lines), frozenset(json.loads(fields[b"failed"])),
                                  frozenset(json.loads(fields[b"review"])), text(fields[b"version"]) or None))
        else:
            lines: list[str | None] = (lines_by_path(connection, run_id, paths) if batch_lines is None
                                       else list(text(batch_lines).split("\n")))
            found.append(stored_by_path(paths, lines, fields))
    return found


def stored_by_path(paths: list[str], lines: list[str | None], fields: dict[bytes, bytes]) -> Finished:
    """A batch of a run stored before 2026-12-07, by path (a line may have expired), or read by a
    worker whose events carried no summary yet: such lines are parsed for what they count."""
    if b"version" not in fields:
        return Finished.of([Result.of(decode_result(line), line) for line in lines if line is not None])
    summary = Finished(paths, "\n".join(line or "" for line in lines), frozenset(json.loads(fields[b"failed"])),
                       frozenset(json.loads(fields[b"review"])), text(fields[b"version"]) or None)
    if all(line is not None for line in lines):
        return summary
    return Finished.of([result for result, line in zip(summary.results(), lines, strict=True) if line is not None])


def lines_by_path(connection: redis.Redis, run_id: str, paths: list[str]) -> list[str | None]:
    """Result lines stored by path (a run stored before 2026-12-07, or for an older producer)."""
    return [None if line is None else text(line) for line in connection.hmget(keys.run_results(run_id), paths)]


def results_count(connection: redis.Redis, run_id: str) -> int:
    """How many of a run's images have a result (a run stored before 2026-12-07 has no count:
    its results hash holds every one)."""
    counted = connection.hget(keys.run(run_id), "results")
    return int(counted) if counted is not None else int(connection.hlen(keys.run_results(run_id)))


def paths_with_results(connection: redis.Redis, run_id: str, share: Callable[[str], bool] | None = None) -> set[str]:
    """Every path of the run that has a result, from the paths its finished batches' events name
    (a result and its event are written together): what a pass that resends the rest skips.

    With share, only the batches whose paths it holds: a producer sending one share of a run
    keeps its own paths in memory, not every share's (a batch holds one share's paths alone)."""
    done: set[str] = set()
    for _entry_id, fields in run_events(connection, run_id):
        paths = entry_paths(fields)
        if share is None or (paths and share(paths[0])):
            done.update(paths)
    return done


def find_results(connection: redis.Redis, run_id: str, paths: set[str]) -> list[Finished]:
    """The results of some of a run's paths, by batch in the order they finished, reading only the
    batches that hold them: the events name each batch's paths, so no other result is read."""
    wanted, holding = set(paths), []
    for entry in run_events(connection, run_id):
        named = set(entry_paths(entry[1]))
        if named & wanted:
            holding.append(entry)
            wanted -= named
            if not wanted:
                break
    return [Finished.of([result for result in batch.results() if result.path in paths])
            for batch in event_batches(connection, run_id, holding)]


def run_events(connection: redis.Redis, run_id: str, page: int = 100) -> Iterator[tuple[Any, dict[bytes, bytes]]]:
    """A run's events stream from its start, read a page at a time."""
    cursor = "-"
    while True:
        entries: list[Any] = connection.xrange(keys.run_events(run_id), min=cursor, count=page)  # type: ignore[assignment]
        yield from entries
        if len(entries) < page:
            return
        cursor = "(" + text(entries[-1][0])


def entry_paths(fields: dict[bytes, bytes]) -> list[str]:
    """The paths an event names (one written before 2026-11-25 carries its result lines instead)."""
    if b"paths" in fields:
        paths: list[str] = json.loads(fields[b"paths"])
        return paths
    return [decode_result(line)["path"] for line in text(fields.get(b"results", b"")).splitlines()]
