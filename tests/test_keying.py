"""Keying in Redis: claims that two stations never share, lapsed claims, codes stored beside the
machine's results and carried by `results`."""

from __future__ import annotations

import csv
import io
import json
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import redis

from digits import keys
from digits.connection import connect
from producer import keying
from tests.conftest import ROOT, event_results, stored_run


def test_two_stations_claim_different_images_and_key_each_once(connection: redis.Redis, tmp_path: Path) -> None:
    run = stored_run(connection, tmp_path / "run", 6, flagged_every=2)  # scan-000, 002, 004 flagged
    machine = connection.hgetall(keys.run_results(run.run_id))

    first = keying.claim_next(connection, run.run_id, "alpha")
    second = keying.claim_next(connection, run.run_id, "beta")
    assert (first.path, second.path) == ("scan-000.png", "scan-002.png")  # in path order, never the same
    assert first.left == second.left == 3

    with pytest.raises(keying.KeyingError, match="on the screen of station alpha"):
        keying.submit(connection, run.run_id, "beta", "scan-000.png", "12345")
    with pytest.raises(keying.KeyingError, match="not flagged"):
        keying.submit(connection, run.run_id, "alpha", "scan-001.png", "12345")
    with pytest.raises(keying.KeyingError, match="not a code"):
        keying.submit(connection, run.run_id, "alpha", "scan-000.png", "12a45")

    before = time.time()
    stored = keying.submit(connection, run.run_id, "alpha", "scan-000.png", " 12346 ")
    assert stored["code"] == stored["digits"] == "12346" and stored["station"] == "alpha"
    assert before - 1 <= stored["keyed_at"] <= time.time() + 1
    keying.submit(connection, run.run_id, "beta", "scan-002.png", None)
    with pytest.raises(keying.KeyingError, match="already keyed by alpha"):
        keying.submit(connection, run.run_id, "beta", "scan-000.png", "99999")

    keyed = keying.keyed_codes(connection, run.run_id)
    assert keyed["scan-000.png"]["code"] == "12346"
    assert keyed["scan-002.png"] == {**keyed["scan-002.png"], "code": None, "digits": None, "unreadable": True,
                                     "station": "beta"}
    assert connection.hgetall(keys.run_results(run.run_id)) == machine  # beside the machine's results, not over
    third = keying.claim_next(connection, run.run_id, "alpha")
    assert (third.path, third.left) == ("scan-004.png", 1)
    assert keying.claim_next(connection, run.run_id, "beta") == keying.Claimed(None, 1)  # on alpha's screen


def test_a_code_with_separators_and_the_limits(connection: redis.Redis, tmp_path: Path) -> None:
    assert keying.parse_code("02139-4307") == ("02139-4307", "021394307")
    assert keying.parse_code("1234 567") == ("1234 567", "1234567")
    for bad in ("", "-1234", "12--34", "1234-", "١٢٣"):
        with pytest.raises(keying.KeyingError):
            keying.parse_code(bad)
    with pytest.raises(keying.KeyingError, match="over 32 characters"):
        keying.parse_code("1" * 33)


def test_a_crashed_station_loses_only_the_image_on_its_screen(connection: redis.Redis, tmp_path: Path) -> None:
    """A claim lasts while it is renewed; once its station stops renewing, it lapses and another
    station gets the image."""
    run = stored_run(connection, tmp_path / "run", 2)
    held = keying.claim_next(connection, run.run_id, "alpha", claim_seconds=1)
    for _ in range(4):  # alpha's page renews it every third of the claim period, for longer than a period
        time.sleep(0.35)
        assert keying.renew(connection, run.run_id, "alpha", [held.path or ""], claim_seconds=1) == [held.path]
        assert keying.claim_next(connection, run.run_id, "beta").path in (None, "scan-001.png")
    keying.submit(connection, run.run_id, "beta", "scan-001.png", "11111")
    assert keying.claim_next(connection, run.run_id, "beta").path is None
    time.sleep(1.1)  # alpha crashed: nothing renews its claim
    assert keying.claim_next(connection, run.run_id, "beta") == keying.Claimed("scan-000.png", 1)
    assert keying.renew(connection, run.run_id, "alpha", ["scan-000.png"]) == []  # it is beta's now
    with pytest.raises(keying.KeyingError, match="on the screen of station beta"):
        keying.submit(connection, run.run_id, "alpha", "scan-000.png", "12345")
    keying.release(connection, run.run_id, "beta", ["scan-000.png"])  # beta's page closed: free at once
    assert keying.claim_next(connection, run.run_id, "gamma").path == "scan-000.png"


def test_a_station_may_key_its_lapsed_claim_if_nobody_took_it(connection: redis.Redis, tmp_path: Path) -> None:
    run = stored_run(connection, tmp_path / "run", 1)
    keying.claim_next(connection, run.run_id, "alpha", claim_seconds=1)
    time.sleep(1.1)
    assert keying.submit(connection, run.run_id, "alpha", "scan-000.png", "12345")["station"] == "alpha"


def test_concurrent_stations_never_key_an_image_twice(redis_url: str, connection: redis.Redis, tmp_path: Path) -> None:
    """Four stations, each on its own connection and thread, key 200 codes as fast as Redis lets them."""
    run = stored_run(connection, tmp_path / "run", 200)
    got: dict[str, list[str]] = {}
    refused: list[str] = []
    ready = threading.Barrier(4)

    def station(name: str) -> None:
        client = connect(redis_url)
        got[name] = []
        ready.wait(timeout=60)  # all connected: they start together
        while (claim := keying.claim_next(client, run.run_id, name)).path is not None:
            got[name].append(claim.path)
            try:
                keying.submit(client, run.run_id, name, claim.path, "12345")
            except keying.KeyingError as exc:
                refused.append(str(exc))

    threads = [threading.Thread(target=station, args=(f"station-{i}",)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    claimed = [path for paths in got.values() for path in paths]
    assert refused == []
    assert sorted(claimed) == run.flagged  # each image claimed once, by one station
    keyed = keying.keyed_codes(connection, run.run_id)
    assert {path: record["station"] for path, record in keyed.items()} == \
        {path: name for name, paths in got.items() for path in paths}
    assert sum(1 for paths in got.values() if paths) >= 2, "the stations did not overlap"


def test_keying_keys_expire_with_the_run_and_follow_it_as_it_grows(connection: redis.Redis, tmp_path: Path) -> None:
    run = stored_run(connection, tmp_path / "run", 2, ttl=600)
    keying.claim_next(connection, run.run_id, "alpha")
    keying.claim_next(connection, run.run_id, "alpha")  # the page's prefetch: scan-001 stays claimed
    keying.submit(connection, run.run_id, "alpha", "scan-000.png", "12345")
    for key in (keys.run_keyed(run.run_id), keys.run_keying(run.run_id), keys.run_claims(run.run_id)):
        assert 0 < connection.ttl(key) <= 600, key
    assert keys.run_keyed(run.run_id) in keys.run_keys(run.run_id)

    connection.sadd(keys.run_review(run.run_id), "late.png")  # a batch finished after keying began
    assert keying.progress(connection, run.run_id)["left"] == 2  # scan-001 and late.png; scan-000 is keyed
    assert connection.zscore(keys.run_keying(run.run_id), "scan-000.png") is None

    connection.delete(keys.run(run.run_id))  # the run expired
    with pytest.raises(keying.KeyingError, match="no such run"):
        keying.claim_next(connection, run.run_id, "alpha")


def producer(redis_url: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "producer", *args, "--redis-url", redis_url], cwd=ROOT,
                          capture_output=True, text=True, timeout=60, check=True)


def test_results_carry_the_keyed_code(redis_url: str, connection: redis.Redis, tmp_path: Path) -> None:
    """`results` passes an unkeyed result's stored line through as it is; a keyed one gains `keyed`."""
    run = stored_run(connection, tmp_path / "run", 3)
    keying.submit(connection, run.run_id, "alpha", "scan-000.png", "12346")
    keying.submit(connection, run.run_id, "alpha", "scan-001.png", None)
    stored = {result.path: result.line for result in event_results(
        connection, run.run_id, connection.xrange(keys.run_events(run.run_id)))}

    lines = producer(redis_url, "results", run.run_id).stdout.splitlines()
    by_path = {json.loads(line)["path"]: line for line in lines}
    assert by_path["scan-002.png"] == stored["scan-002.png"]
    keyed = json.loads(by_path["scan-000.png"])
    assert keyed == {**json.loads(stored["scan-000.png"]), "keyed": keyed["keyed"]}
    assert keyed["keyed"]["code"] == "12346" and keyed["keyed"]["station"] == "alpha"
    assert json.loads(by_path["scan-001.png"])["keyed"]["unreadable"] is True

    assert json.loads(producer(redis_url, "status", run.run_id, "--json").stdout)["run"]["keyed"] == 2
    rows = {row["path"]: row for row in csv.DictReader(io.StringIO(
        producer(redis_url, "results", run.run_id, "--format", "csv").stdout))}
    assert (rows["scan-000.png"]["code"], rows["scan-000.png"]["keyed_code"]) == ("12345", "12346")
    assert rows["scan-000.png"]["keyed_unreadable"] == "0" and rows["scan-000.png"]["keyed_station"] == "alpha"
    assert rows["scan-001.png"]["keyed_unreadable"] == "1" and rows["scan-001.png"]["keyed_code"] == ""
    assert rows["scan-002.png"]["keyed_code"] == rows["scan-002.png"]["keyed_at"] == ""
