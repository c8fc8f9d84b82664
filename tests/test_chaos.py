"""Chaos: workers SIGKILLed and respawned, one SIGTERMed, Redis killed and restarted, the producer
killed and resumed, all during one run; every image must end with exactly one result, equal to a
clean run's.

Redis runs locked down as docs/security.md says (deploy/users.acl: the trainer publishes, the
producer and the workers run as their own users, and ACL LOG must record no refusal) with the
documented persistence (AOF, fsync every second). It is killed with SIGKILL and restarted from
its AOF, so it may come back without its last second of writes: the producer must notice and
send again.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import redis
from PIL import Image
from rq import Worker

from digits import keys
from digits.connection import connect, text
from digits.defaults import MAX_ABANDONED
from digits.registry import DEFAULT_MODEL_DIR, Registry
from digits.results import results_count
from tests.conftest import ROOT, AclRedis, Digits, WorkerPool, write_pngs

IMAGES = 10_000
# (progress, event): what happens when that share of the images has a result; between these,
# a random worker is SIGKILLed every 1.5 to 3 s. Workers are respawned by their supervisor.
PLAN = [(0.03, "kill"), (0.08, "producer"), (0.15, "kill"), (0.25, "term"), (0.35, "kill"), (0.45, "redis"),
        (0.55, "kill"), (0.65, "kill"), (0.75, "kill"), (0.85, "kill")]
BAD = {"bad/empty.png": b"", "bad/text.png": b"not an image", "bad/truncated.png": b"\x89PNG\r\n\x1a\n\0\0"}


def make_folder(folder: Path, mnist_test: Digits) -> None:
    write_pngs(folder, mnist_test[0][:IMAGES], mnist_test[1][:IMAGES])
    (folder / "bad").mkdir()
    for name, data in BAD.items():
        (folder / name).write_bytes(data)
    Image.new("L", (28, 28), 255).save(folder / "bad" / "blank.png")


def producer(url: str, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "producer", "run", *args, "--batch-size", "10",
                             "--window", "400", "--no-progress", "--redis-url", url],
                            cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def read_results(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def comparable(record: dict[str, Any]) -> tuple[Any, ...]:
    """What must not depend on how the run went: the answer, and the error of a bad image."""
    error = record["error"]
    return record["path"], record["digits"], record["model_version"], error.split(": ")[-1] if error else None


def worker_pids(connection: redis.Redis) -> list[int]:
    """Live worker processes (a registration can outlive its process by a moment), but not one
    running a batch whose workers died MAX_ABANDONED - 1 times already: one more death would make
    it poison, as designed for an input that kills every worker, not for random kills."""
    try:
        registered = {w.name: w.pid for w in Worker.all(connection=connection) if w.pid}
        running = {name: text(job) for name in registered if (job := connection.get(keys.worker_lease(name)))}
        deaths = {name: int(json.loads(meta or b"{}").get("abandoned", 0)) for name, job_id in running.items()
                  if (meta := connection.hget(f"rq:job:{job_id}", "meta")) is not None}
    except redis.RedisError:
        return []
    return [pid for name, pid in registered.items()
            if Path(f"/proc/{pid}").exists() and deaths.get(name, 0) < MAX_ABANDONED - 1]


def signal_one(pids: list[int], rng: random.Random, signum: int) -> bool:
    """Signal a random live worker; False if none is alive just now (all being respawned)."""
    if not pids:
        return False
    try:
        os.kill(rng.choice(pids), signum)
    except ProcessLookupError:  # it died meanwhile
        return False
    return True


@pytest.mark.parametrize(("by_path", "jobs"), [(False, 1), (True, 1), (False, 3)],
                         ids=["bytes-through-redis", "shared-folder", "three-senders"])
def test_nothing_is_lost_or_repeated_under_chaos(tmp_path: Path, mnist_test: Digits, by_path: bool, jobs: int) -> None:
    """Also with the images read by the workers from a shared folder (`--shared-root`, `--files-root`):
    the same delivery, only where the bytes come from differs; and with the run sent by three
    sender processes (`run --jobs 3`), killed outright and resumed as three again."""
    folder = tmp_path / "scans"
    shared = ["--shared-root", str(tmp_path)] if by_path else []
    shared += ["--jobs", str(jobs)] if jobs > 1 else []
    make_folder(folder, mnist_test)
    total = IMAGES + len(BAD) + 1
    rng = random.Random(7)
    (tmp_path / "redis").mkdir()
    server = AclRedis(tmp_path / "redis").start()
    url = server.url_for("producer")
    connection = connect(server.url)  # the admin's, to watch
    Registry(connect(server.url_for("trainer"))).publish_dir(DEFAULT_MODEL_DIR, promote=True)
    pool = WorkerPool(server.url_for("worker"), 3, ["--files-root", str(tmp_path)] if by_path else None)
    events: Counter[str] = Counter()
    refusals: list[dict[str, Any]] = []
    try:
        pool.wait_registered(connection, 3)
        clean = tmp_path / "clean.jsonl"
        started = time.monotonic()
        assert producer(url, str(folder), "-o", str(clean), *shared).wait(timeout=180) == 1  # bad images: exit 1
        clean_seconds = time.monotonic() - started

        chaotic = tmp_path / "chaos-1.jsonl"
        first = producer(url, str(folder), "-o", str(chaotic), *shared)
        run_id = wait_for_run(connection, exclude=runs_before(connection, clean))

        def progress() -> float:
            try:
                return results_count(connection, run_id) / total
            except redis.RedisError:
                return 0.0

        resumed: subprocess.Popen[str] | None = None
        plan = list(PLAN)
        last_kill = time.monotonic()
        deadline = time.monotonic() + 300
        while resumed is None or resumed.poll() is None:
            assert time.monotonic() < deadline, f"chaos run stuck at {progress():.0%}: {dict(events)}"
            if plan and progress() >= plan[0][0]:
                _, event = plan.pop(0)
                if event == "producer":
                    first.send_signal(signal.SIGKILL)
                    first.wait()
                    resumed = producer(url, "--resume", run_id, "-o", str(tmp_path / "chaos-2.jsonl"),
                                       *(["--jobs", str(jobs)] if jobs > 1 else []))
                    events["producer killed and resumed"] += 1
                elif event == "redis":
                    refusals += server.refusals()  # ACL LOG is lost with the process
                    server.process.send_signal(signal.SIGKILL)  # type: ignore[union-attr]
                    server.process.wait()  # type: ignore[union-attr]
                    time.sleep(1.0)
                    server.start()
                    events["Redis killed and restarted"] += 1
                elif signal_one(worker_pids(connection), rng, signal.SIGTERM if event == "term" else signal.SIGKILL):
                    events["worker SIGTERM" if event == "term" else "worker SIGKILL"] += 1
                    last_kill = time.monotonic()
                else:  # no live worker this instant: try again on the next tick
                    plan.insert(0, (0.0, event))
            elif time.monotonic() - last_kill > rng.uniform(1.5, 3.0):
                if signal_one(worker_pids(connection), rng, signal.SIGKILL):
                    events["worker SIGKILL"] += 1
                last_kill = time.monotonic()
            time.sleep(0.05)
        chaos_seconds = time.monotonic() - deadline + 300
        assert resumed is not None
        stderr = resumed.stderr.read() if resumed.stderr else ""
        assert resumed.returncode == 1, stderr  # the bad images, and nothing else, failed
        refusals += server.refusals()
        stored = results_count(connection, run_id)  # each image classified and counted once
    finally:
        pool.stop()
        server.close()

    assert len(plan) == 0 and events["worker SIGKILL"] >= 7 and events["worker SIGTERM"] == 1, dict(events)
    assert refusals == []
    expected = {r["path"]: comparable(r) for r in read_results(clean)}
    assert len(expected) == total
    output = read_results(tmp_path / "chaos-2.jsonl")
    paths = Counter(r["path"] for r in output)
    duplicates = sum(n - 1 for n in paths.values())
    lost = total - len(paths)
    assert (lost, duplicates, stored) == (0, 0, total), dict(events)
    assert {r["path"]: comparable(r) for r in output} == expected
    assert sum(1 for r in output if r["error"]) == len(BAD) + 1
    print(f"\nchaos: {total} images, {dict(events)}, lost {lost}, duplicates {duplicates}; "
          f"clean run {clean_seconds:.1f} s, chaos run {chaos_seconds:.1f} s")


def runs_before(connection: redis.Redis, clean: Path) -> set[str]:
    return {text(r) for r in connection.zrange(keys.RUNS, 0, -1)}


def wait_for_run(connection: redis.Redis, exclude: set[str], timeout: float = 30) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        new = {text(r) for r in connection.zrange(keys.RUNS, 0, -1)} - exclude
        if new:
            return new.pop()
        time.sleep(0.05)
    raise AssertionError("the chaos run did not start")
