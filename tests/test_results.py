"""Storing a batch's results: once, only while its payload exists, and readable in finishing order."""

from __future__ import annotations

import json
import threading
from typing import Any

import pytest
import redis

from digits import keys
from digits.payload import BY_BATCH, RESULTS_FIELD
from digits.results import (
    decode_result,
    encode_result,
    find_results,
    paths_with_results,
    result_record,
    results_count,
    store_results,
)
from tests.conftest import event_results, stored_results

TTL = 3600


def events(connection: redis.Redis, run_id: str) -> list[Any]:
    entries: list[Any] = connection.xrange(keys.run_events(run_id))  # type: ignore[assignment]
    return entries


def make_payload(connection: redis.Redis, run_id: str, batch: int, paths: list[str], by_batch: bool = True) -> None:
    """A batch's payload as a producer writes it (by_batch False: as one from before 2026-12-07 did)."""
    payload = {"paths": json.dumps(paths)} | ({RESULTS_FIELD: BY_BATCH} if by_batch else {})
    connection.hset(keys.batch(run_id, batch), mapping=payload)  # type: ignore[arg-type]


def test_a_big_batch_is_stored_whole_and_once(connection: redis.Redis) -> None:
    """2,500 images, 1,200 of them failed and 1,100 flagged for review: more values than one Lua
    unpack takes."""
    run_id, batch = "results-big", 0
    paths = [f"scan-{i:04d}.png" for i in range(2500)]
    make_payload(connection, run_id, batch, paths)
    records = [result_record(p, batch, error=f"{p}: bad") if i % 25 < 12
               else result_record(p, batch, digits="7", review=i % 25 < 23, model_version="v1")
               for i, p in enumerate(paths)]

    assert store_results(connection, run_id, batch, records, TTL) is True

    assert not connection.exists(keys.batch(run_id, batch))
    assert results_count(connection, run_id) == 2500
    assert connection.hlen(keys.run_results(run_id)) == 2300  # by path: the failed and the flagged alone
    assert not connection.hexists(keys.run_results(run_id), "scan-0023.png")
    assert connection.scard(keys.run_failed(run_id)) == 1200
    assert connection.scard(keys.run_review(run_id)) == 1100
    assert connection.sismember(keys.run_review(run_id), "scan-0022.png")
    assert not connection.sismember(keys.run_review(run_id), "scan-0023.png")
    assert 0 < connection.ttl(keys.run_review(run_id)) <= TTL
    assert json.loads(connection.hget(keys.run_results(run_id), "scan-0013.png"))["digits"] == "7"  # type: ignore[arg-type]
    assert 0 < connection.ttl(keys.run_results(run_id)) <= TTL
    assert 0 < connection.ttl(keys.run_batch_results(run_id)) <= TTL
    assert 0 < connection.ttl(keys.run(run_id)) <= TTL  # its count never outlives the results it counts
    assert connection.hlen(keys.run_batch_results(run_id)) == 1  # every result, in one value
    entries = events(connection, run_id)
    assert len(entries) == 1
    assert json.loads(entries[0][1][b"paths"]) == paths  # names the paths; the results are stored once
    results = event_results(connection, run_id, entries)
    assert [json.loads(result.line)["path"] for result in results] == [result.path for result in results] == paths
    assert results[0].line == encode_result(records[0])
    # what a summary counts comes from the event, unparsed, and says what the records say
    assert all(result.parsed is None for result in results)
    assert [(r.failed, r.review, r.version) for r in results] == [
        (record["error"] is not None, bool(record["review"]), record["model_version"]) for record in records]
    assert [r.record for r in results] == records


def test_events_written_before_they_carried_a_summary_are_parsed(connection: redis.Redis) -> None:
    """An event naming its paths but no summary (a worker from before, in a rolling upgrade): each
    line is parsed for what it counts."""
    run_id = "results-unsummarised"
    records = [result_record("a.png", 0, digits="1", review=True, model_version="v2"),
               result_record("b.png", 0, error="b.png: bad")]
    connection.hset(keys.run_results(run_id), mapping={r["path"]: encode_result(r) for r in records})
    connection.xadd(keys.run_events(run_id), {"batch": 0, "paths": json.dumps(["a.png", "b.png"])})
    results = event_results(connection, run_id, events(connection, run_id))
    assert [(r.path, r.failed, r.review, r.version) for r in results] == [
        ("a.png", False, True, "v2"), ("b.png", True, False, None)]
    assert results_count(connection, run_id) == 2  # no count kept: every result is in the hash


def test_an_older_producers_batch_gets_every_result_by_path(connection: redis.Redis) -> None:
    """A payload without the by-batch mark comes from a producer from before 2026-12-07, which reads
    every result by path (workers are upgraded first): each is stored so, and read back by path."""
    run_id = "results-older-producer"
    make_payload(connection, run_id, 0, ["a.png", "b.png"], by_batch=False)
    records = [result_record("a.png", 0, digits="1", model_version="v2"), result_record("b.png", 0, digits="2",
                                                                                          model_version="v2")]
    assert store_results(connection, run_id, 0, records, TTL)
    stored = connection.hmget(keys.run_results(run_id), ["a.png", "b.png"])
    assert stored == [encode_result(r).encode() for r in records]
    assert not connection.exists(keys.run_batch_results(run_id)) and results_count(connection, run_id) == 2
    assert [r.record for r in event_results(connection, run_id, events(connection, run_id))] == records


def test_a_run_stored_by_path_before_results_went_by_batch_is_still_read(connection: redis.Redis) -> None:
    """A run stored before 2026-12-07 (every result by path, events with a summary, no count) reads
    and counts as before, and a resumed pass skips its finished paths."""
    run_id = "results-by-path"
    records = [result_record("a.png", 0, digits="1", model_version="v2"), result_record("b.png", 0, digits="2",
                                                                                          model_version="v2")]
    connection.hset(keys.run_results(run_id), mapping={r["path"]: encode_result(r) for r in records})
    connection.xadd(keys.run_events(run_id), {"batch": 0, "paths": json.dumps(["a.png", "b.png"]), "failed": "[]",
                                              "review": "[]", "version": "v2"})
    assert [r.record for r in event_results(connection, run_id, events(connection, run_id))] == records
    assert results_count(connection, run_id) == 2
    assert paths_with_results(connection, run_id) == {"a.png", "b.png"}


def test_a_share_learns_only_its_own_paths_with_results(connection: redis.Redis) -> None:
    """A producer resuming one share of a run holds the paths of its share's batches alone."""
    run_id = "results-shares"
    for batch, paths in enumerate((["a1.png", "a2.png"], ["b1.png"], ["a3.png"])):
        make_payload(connection, run_id, batch, paths)
        store_results(connection, run_id, batch, [result_record(path, batch, digits="1") for path in paths], TTL)
    assert paths_with_results(connection, run_id, lambda path: path.startswith("a")) == {"a1.png", "a2.png", "a3.png"}
    assert paths_with_results(connection, run_id) == {"a1.png", "a2.png", "a3.png", "b1.png"}


def test_a_batch_read_by_two_model_versions_is_refused(connection: redis.Redis) -> None:
    """An event's summary names one model version: a batch's readings must all be by it."""
    make_payload(connection, "results-mixed", 0, ["a.png", "b.png"])
    with pytest.raises(ValueError, match="2 model versions"):
        store_results(connection, "results-mixed", 0, [result_record("a.png", 0, model_version="v1"),
                                                        result_record("b.png", 0, model_version="v2")], TTL)
    assert connection.exists(keys.batch("results-mixed", 0))  # nothing written


def test_a_result_line_is_json_any_reader_parses_back_to_the_record() -> None:
    """Lines are written by orjson, read by json or anything else: names stay unescaped UTF-8,
    floats keep every digit they were rounded to, and a line is one line."""
    record = result_record("Zürich/ğ 北京\\x80.png", 7, code="80-331", digits="80331", confidence=0.000123,
                           confidences=[0.999999, 1e-06], probabilities=[[0.25, 1e-06, 0.749999]],
                           boxes=[[0, 1, 2, 3]], review=True, worker="w-1")
    line = encode_result(record)
    assert "\n" not in line and "Zürich/ğ 北京" in line
    assert json.loads(line) == record == decode_result(line) == decode_result(line.encode())


def test_a_finished_batch_is_never_stored_again(connection: redis.Redis) -> None:
    """Whoever finishes a batch first wins: a second attempt (a requeued job, the producer's reaper)
    finds the payload gone and writes nothing."""
    run_id, batch = "results-twice", 3
    make_payload(connection, run_id, batch, ["a.png"])
    assert store_results(connection, run_id, batch, [result_record("a.png", batch, digits="1")], TTL)
    assert not store_results(connection, run_id, batch, [result_record("a.png", batch, error="a.png: late")], TTL)
    assert stored_results(connection, run_id)["a.png"]["digits"] == "1"
    assert results_count(connection, run_id) == 1
    assert connection.xlen(keys.run_events(run_id)) == 1
    assert not connection.exists(keys.run_failed(run_id))


def test_events_written_before_results_were_stored_once_still_read(connection: redis.Redis) -> None:
    """An events entry from an older worker carries its JSON lines itself (a rolling upgrade)."""
    run_id = "results-old"
    old = json.dumps(result_record("old.png", 0, digits="4"))
    connection.xadd(keys.run_events(run_id), {"batch": 0, "results": old})
    make_payload(connection, run_id, 1, ["new.png"])
    store_results(connection, run_id, 1, [result_record("new.png", 1, digits="5")], TTL)
    results = event_results(connection, run_id, events(connection, run_id))
    assert [result.record["digits"] for result in results] == ["4", "5"]


def test_finishers_racing_on_the_same_batches_store_each_once(connection: redis.Redis) -> None:
    """A worker and the producer's reaper finishing the same batches at the same moment, from two
    threads: each batch is won by one of them, whose results alone are stored, with one event."""
    run_id, count = "results-race", 60
    for batch in range(count):
        make_payload(connection, run_id, batch, [f"{batch}.png"])
    wins: dict[str, list[int]] = {"worker": [], "reaper": []}
    start = threading.Barrier(2)

    def finish(name: str) -> None:
        start.wait()
        for batch in range(count):
            if store_results(connection, run_id, batch, [result_record(f"{batch}.png", batch, worker=name)], TTL):
                wins[name].append(batch)

    threads = [threading.Thread(target=finish, args=(name,)) for name in wins]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(wins["worker"] + wins["reaper"]) == list(range(count))
    assert connection.xlen(keys.run_events(run_id)) == count
    assert results_count(connection, run_id) == count
    stored = stored_results(connection, run_id)
    for name, batches in wins.items():
        for batch in batches:
            assert stored[f"{batch}.png"]["worker"] == name


def test_a_paths_result_is_found_reading_only_its_batch(connection: redis.Redis) -> None:
    """`results --path`: the events name each batch's paths, so only the batches holding the paths
    asked for are read, whatever the run's size."""
    run_id = "results-find"
    for batch in range(5):
        make_payload(connection, run_id, batch, [f"{batch}-{i}.png" for i in range(3)])
        store_results(connection, run_id, batch, [result_record(f"{batch}-{i}.png", batch, digits=str(i))
                                                  for i in range(3)], TTL)
    connection.config_resetstat()
    found = find_results(connection, run_id, {"3-1.png", "1-2.png", "nowhere.png"})
    assert [[(r.path, r.record["digits"]) for r in batch.results()] for batch in found] == [[("1-2.png", "2")],
                                                                                           [("3-1.png", "1")]]
    assert connection.info("commandstats")["cmdstat_hget"]["calls"] == 2  # batches 1 and 3 alone
    assert find_results(connection, run_id, {"nowhere.png"}) == []
