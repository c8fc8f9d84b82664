"""Scaling out the producer: one run fed by several producer processes (`run --jobs N`, and
`enqueue --run-id R --share K/N` started separately, as on several hosts) with real workers
killed meanwhile; and one folder split over two independent pools (`run --part K/N`)."""

from __future__ import annotations

import json
import os
import random
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import redis

from digits import keys
from digits.connection import connect, text, text_hash
from digits.registry import DEFAULT_MODEL_DIR, Registry
from digits.results import paths_with_results, results_count
from producer.files import Share
from producer.following import await_run
from producer.redis_server import RedisServer
from producer.runs import RunError, Settings, finish_shares, join_run, show_found
from producer.sending import Sender
from producer.status import run_status
from tests.conftest import ROOT, MakeFolder, WorkerPool, stored_results
from tests.test_chaos import signal_one, worker_pids

StartWorkers = Callable[..., WorkerPool]


def producer(redis_url: str, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "producer", *args, "--redis-url", redis_url],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def finish(process: subprocess.Popen[str], timeout: float = 120) -> tuple[int, str, str]:
    stdout, stderr = process.communicate(timeout=timeout)
    return process.returncode, stdout, stderr


def test_shares_split_a_folder_exactly_once() -> None:
    paths = [f"scans/{n:05d}.png" for n in range(3000)] + ["a\nb.png", "é.png", "x\udcff.png"]
    owners = Counter(next(k for k in range(5) if Share.parse(f"{k + 1}/5").holds(p)) for p in paths)
    assert sum(owners.values()) == len(paths) and min(owners.values()) > 450  # each path once, spread evenly
    assert all(Share.whole(5).holds(p) for p in paths)
    for bad in ("0/3", "4/3", "3", "a/b", "1/0"):
        with pytest.raises(ValueError, match="K/N"):
            Share.parse(bad)


@pytest.mark.parametrize("by_path", [False, True], ids=["bytes", "shared-folder"])
def test_three_producers_feed_one_run_exactly_once_while_workers_are_killed(
        redis_url: str, connection: redis.Redis, default_version: str, start_workers: StartWorkers,
        digit_folder: MakeFolder, tmp_path: Path, by_path: bool) -> None:
    """Three `enqueue --share` processes, one of them killed and resumed, and a follower started
    before any of them; a worker SIGKILLed at three points of the run's progress: every image has
    one result, and the follower writes each once. Also with the images read by the workers from
    a shared folder (`--shared-root`, `--files-root`) instead of sent through Redis."""
    folder, truth = digit_folder(1500)
    start_workers(2, ["--files-root", str(folder.parent)] if by_path else None)
    common = ["--run-id", "shared-1", "--batch-size", "10", "--window", "300", "--wait",
              *(["--shared-root", str(folder.parent)] if by_path else [])]
    output = tmp_path / "results.jsonl"
    follower = producer(redis_url, "results", "shared-1", "--follow", "-o", str(output))
    time.sleep(1.5)  # the follower starts first: it waits for a sender to create the run
    assert follower.poll() is None
    senders = {k: producer(redis_url, "enqueue", str(folder), "--share", f"{k}/3", *common) for k in (1, 2, 3)}
    rng, kills, resumed = random.Random(3), 0, False
    kill_at = [150, 600, 1050]  # results so far when a worker is killed: by progress, not by the clock,
    deadline = time.monotonic() + 240  # so that a faster pipeline cannot finish before the chaos happens
    while any(p.poll() is None for p in senders.values()):
        assert time.monotonic() < deadline, "the shared run did not finish"
        done = results_count(connection, "shared-1")
        if not resumed and done >= 300:
            senders[2].send_signal(signal.SIGKILL)
            senders[2].wait()
            senders[2] = producer(redis_url, "enqueue", "--resume", "shared-1", "--share", "2/3", "--wait")
            resumed = True
        if kill_at and done >= kill_at[0] and signal_one(worker_pids(connection), rng, signal.SIGKILL):
            kill_at.pop(0)
            kills += 1
        time.sleep(0.1)
    for k, process in senders.items():
        code, _, stderr = finish(process)
        assert code == 0, f"share {k}/3: {stderr}"
    code, _, stderr = finish(follower)
    assert code == 0, stderr
    assert "waiting up to 60 s for run shared-1 to be created" in stderr

    assert kills >= 3 and resumed
    meta = text_hash(connection.hgetall(keys.run("shared-1")))
    assert (meta["shares"], meta["total"], meta["status"]) == ("3", "1500", "enqueued")
    assert json.loads(meta["settings"])["shared_folder"] == (folder.name if by_path else None)
    assert sum(int(meta[f"total:{part}"]) for part in range(3)) == 1500
    written = Counter(json.loads(line)["path"] for line in output.read_text().splitlines())
    assert set(written) == set(truth) and max(written.values()) == 1  # lost 0, duplicates 0
    stored = stored_results(connection, "shared-1")
    assert set(stored) == set(truth) and results_count(connection, "shared-1") == len(truth)
    assert sum(r["digits"] == str(truth[path]) for path, r in stored.items()) >= 0.95 * len(truth)


def test_run_with_jobs_sends_from_several_processes(redis_url: str, connection: redis.Redis,
                                                    default_version: str, start_workers: StartWorkers,
                                                    digit_folder: MakeFolder, tmp_path: Path) -> None:
    folder, truth = digit_folder(300)
    start_workers(2)
    output = tmp_path / "out.jsonl"
    code, _, stderr = finish(producer(redis_url, "run", str(folder), "--jobs", "3", "--batch-size", "10",
                                      "-o", str(output), "--no-progress"))
    assert code == 0, stderr
    assert "300 images, 300 classified, 0 failed" in stderr
    paths = [json.loads(line)["path"] for line in output.read_text().splitlines()]
    assert sorted(paths) == sorted(truth)
    [run_id] = [text(key) for key in connection.zrange(keys.RUNS, 0, -1)]
    assert connection.hget(keys.run(run_id), "shares") == b"3"


def test_senders_stop_when_their_run_is_killed_outright(redis_url: str, connection: redis.Redis,
                                                       digit_folder: MakeFolder) -> None:
    """`run --jobs 2` killed by SIGKILL cannot stop its senders (their own sessions, so a Ctrl-C
    reaches only the run): each stops itself once its parent is gone, as on SIGTERM, keeping what
    it sent, so that the senders a `run --resume` starts are the only ones of their shares."""
    folder, _ = digit_folder(200)
    run = producer(redis_url, "run", str(folder), "--jobs", "2", "--batch-size", "10", "--window", "40",
                   "-o", os.devnull, "--no-progress")  # no workers: the senders wait on the window
    deadline = time.monotonic() + 30
    while len(senders := children(run.pid)) < 2 or not connection.exists(keys.batch(first_run(connection), 0)):
        assert time.monotonic() < deadline and run.poll() is None, "the senders did not start sending"
        time.sleep(0.1)
    run.send_signal(signal.SIGKILL)
    run.wait()
    deadline = time.monotonic() + 10
    while alive := [pid for pid in senders if running(pid)]:
        assert time.monotonic() < deadline, f"senders {alive} outlived their run"
        time.sleep(0.1)
    sent = connection.hget(keys.run(first_run(connection)), "batches")
    time.sleep(1)
    assert connection.hget(keys.run(first_run(connection)), "batches") == sent  # what they sent kept, no more
    assert 1 <= int(sent or 0) <= 4  # at most the window's 40 images


def test_a_share_is_sent_by_one_producer_at_a_time(redis_url: str, connection: redis.Redis,
                                                    digit_folder: MakeFolder) -> None:
    """A share started again while its producer still sends it (by hand, on another host) is
    refused, naming the producer that holds it: two would send the files neither has seen sent."""
    folder, _ = digit_folder(100)
    common = ["--run-id", "twice", "--share", "1/2", "--batch-size", "10", "--window", "20", "--wait"]
    first = producer(redis_url, "enqueue", str(folder), *common)  # no workers: it holds its share, waiting
    deadline = time.monotonic() + 30
    while not connection.exists(keys.batch("twice", 0)):
        assert time.monotonic() < deadline and first.poll() is None, "the first producer did not start sending"
        time.sleep(0.1)
    time.sleep(0.5)  # its window full: its share's half of 20 images, one batch
    sent = connection.hget(keys.run("twice"), "batches")
    assert run_status(connection, "twice")["senders"] == {"1/2": f"{socket.gethostname()}:{first.pid}", "2/2": None}
    code, _, stderr = finish(producer(redis_url, "enqueue", str(folder), *common), timeout=60)
    assert code == 1 and "run twice: share 1/2 is being sent by another producer" in stderr, stderr
    assert connection.hget(keys.run("twice"), "batches") == sent == b"1"  # the second sent nothing
    first.send_signal(signal.SIGTERM)
    assert finish(first)[0] == 130


def first_run(connection: redis.Redis) -> str:
    runs = connection.zrange(keys.RUNS, 0, 0)
    return text(runs[0]) if runs else "none"


def children(pid: int) -> list[int]:
    """The processes whose parent is pid (from /proc: Linux)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # gone meanwhile
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found


def running(pid: int) -> bool:
    """Whether pid is a live process (not gone, not a zombie waiting for init to reap it)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def test_shared_runs_are_checked_before_anything_is_sent(redis_url: str, connection: redis.Redis,
                                                         digit_folder: MakeFolder, tmp_path: Path) -> None:
    folder, _ = digit_folder(20)
    code, _, stderr = finish(producer(redis_url, "enqueue", str(folder), "--share", "1/3"))
    assert code == 2 and "--run-id" in stderr
    code, _, stderr = finish(producer(redis_url, "enqueue", str(folder), "--share", "4/3", "--run-id", "r"))
    assert code == 2 and "K/N" in stderr
    code, _, stderr = finish(producer(redis_url, "enqueue", str(folder), "--run-id", "bad:id"))
    assert code == 2 and "bad:id" in stderr
    code, _, stderr = finish(producer(redis_url, "enqueue", str(folder), "--share", "1/3", "--run-id", "r",
                                      "--batch-size", "5"))
    assert code == 0, stderr
    other = tmp_path / "other"
    other.mkdir()
    code, _, stderr = finish(producer(redis_url, "enqueue", str(other), "--share", "2/3", "--run-id", "r"))
    assert code == 1 and "run r exists" in stderr and "Traceback" not in stderr
    code, _, stderr = finish(producer(redis_url, "enqueue", "--resume", "r", "--share", "1/2"))
    assert code == 2 and "3 share(s), not 2" in stderr
    assert connection.hget(keys.run("r"), "total") == connection.hget(keys.run("r"), "total:0")


def test_one_folder_split_over_two_independent_pools(digit_folder: MakeFolder, tmp_path: Path) -> None:
    """Past one Redis: two pools, each a Redis with its own workers, each reading its part of the
    folder as a complete run of its own; between them every image once."""
    folder, truth = digit_folder(400)
    with RedisServer() as first, RedisServer() as second:
        pools, runs = [], []
        try:
            for part, server in enumerate((first, second), 1):
                Registry(connect(server.url)).publish_dir(DEFAULT_MODEL_DIR, promote=True)
                pools.append(WorkerPool(server.url, 1))
                pools[-1].wait_registered(connect(server.url), 1)
                runs.append(producer(server.url, "run", str(folder), "--part", f"{part}/2", "--batch-size", "20",
                                     "-o", str(tmp_path / f"part-{part}.jsonl"), "--no-progress"))
            outcomes = [finish(run) for run in runs]
        finally:
            for pool in pools:
                pool.stop()
    assert [code for code, _, _ in outcomes] == [0, 0], [stderr for _, _, stderr in outcomes]
    parts = [[json.loads(line)["path"] for line in (tmp_path / f"part-{k}.jsonl").read_text().splitlines()]
             for k in (1, 2)]
    assert min(len(p) for p in parts) > 150 and len(parts[0]) + len(parts[1]) == len(truth)
    assert set(parts[0]) | set(parts[1]) == set(truth) and not set(parts[0]) & set(parts[1])


def test_a_follower_waits_for_its_run_then_says_there_is_none(connection: redis.Redis) -> None:
    """A follower started before its run's senders waits for the run; one that never comes is
    still "no such run", once the wait is over."""
    with pytest.raises(RunError, match="no such run: never-sent"):
        await_run(connection, "never-sent", 0.3)
    connection.hset(keys.run("sent-1"), "status", "enqueueing")
    assert await_run(connection, "sent-1", 0.3)["status"] == "enqueueing"


def test_a_run_total_shows_progress_but_is_final_once_enqueued(connection: redis.Redis, tmp_path: Path) -> None:
    """While a run's shares are sent, its total is the sum of what each producer has found so
    far (a resumed producer's smaller count lowers nothing); once every share is sent whole it is
    their sum and stays so: a share checking its files again wrote its own count over that sum,
    and a follower ended with the last results unwritten."""
    run_id = join_run(connection, tmp_path, Settings(), "total-1", shares=2)
    first, second = Share.parse("1/2"), Share.parse("2/2")
    show_found(connection, run_id, first, {0: 40})
    show_found(connection, run_id, second, {1: 25})
    show_found(connection, run_id, first, {0: 30})  # share 1 resumed: its count starts again
    assert connection.hget(keys.run(run_id), "total") == b"65"
    assert finish_shares(connection, run_id, first, {0: 50}) == 75
    assert connection.hget(keys.run(run_id), "status") == b"enqueueing"
    assert finish_shares(connection, run_id, second, {1: 60}) == 110
    show_found(connection, run_id, first, {0: 10})  # share 1's checking pass, with its own count so far
    assert connection.hmget(keys.run(run_id), ["total", "status"]) == [b"110", b"enqueued"]


def test_a_share_ends_only_once_each_of_its_files_has_a_result(connection: redis.Redis, default_version: str,
                                                               start_workers: StartWorkers,
                                                               digit_folder: MakeFolder) -> None:
    """One of a share's results lost (a Redis restart) while another share's arrives leaves the
    run's count where the share expected it: the share still finds its file without a result and
    sends it again, where the count alone would have ended it."""
    folder, truth = digit_folder(40)
    start_workers(1)
    settings = Settings(batch_size=5)
    run_id = join_run(connection, folder, settings, "lost-1", shares=2)
    share = Share.parse("1/2")
    mine = sorted(path for path in truth if share.holds(path))

    class LosingOne(Sender):
        """A sender whose first pass ends as one of its results goes and another share's comes."""

        lost = False

        def wait_for_open(self, most: int, most_batches: int | None = None) -> None:
            super().wait_for_open(most, most_batches)
            if most == 0 and not self.lost:
                self.lost = True
                connection.hincrby(keys.run(run_id), "results", lose_batch_of(mine[0]))  # theirs, as many

    def lose_batch_of(path: str) -> int:
        """Lose the batch holding path as a restart loses it (results, event, count); its size."""
        entries: list[Any] = connection.xrange(keys.run_events(run_id))  # type: ignore[assignment]
        entry_id, fields = next((i, f) for i, f in entries if path in json.loads(f[b"paths"]))
        lost = len(json.loads(fields[b"paths"]))
        connection.xdel(keys.run_events(run_id), entry_id)
        connection.hdel(keys.run_batch_results(run_id), text(fields[b"batch"]))
        connection.hincrby(keys.run(run_id), "results", -lost)
        return lost

    assert LosingOne(connection, run_id, folder, settings, share=share).deliver() == len(mine)
    assert set(mine) <= paths_with_results(connection, run_id)
