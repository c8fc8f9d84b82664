"""The producer CLI and its runs, end to end through real Redis and real worker processes."""

from __future__ import annotations

import csv
import io
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import redis

from digits import keys
from digits.connection import text
from digits.files import read_inside, real_name
from digits.payload import BY_BATCH, RESULTS_FIELD
from digits.queueing import job_id
from digits.results import result_record, results_count, store_results
from producer import runs
from producer.drive import Outcome
from producer.files import Found, read, walk
from producer.following import follow, follow_batches
from producer.leases import ShareLost
from producer.sending import deliver
from producer.status import run_status
from tests.conftest import ROOT, MakeFolder, WorkerPool, send_folder, stored_results

StartWorkers = Callable[..., WorkerPool]


def producer(redis_url: str, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "producer", *args, "--redis-url", redis_url],
                          cwd=ROOT, capture_output=True, text=True, timeout=timeout, check=False)


def test_run_writes_csv_summary_and_exit_code(redis_url: str, default_version: str,
                                              start_workers: StartWorkers, digit_folder: MakeFolder,
                                              tmp_path: Path) -> None:
    folder, truth = digit_folder(100)
    start_workers(1)
    out = tmp_path / "results.csv"
    done = producer(redis_url, "run", str(folder), "--format", "csv", "--output", str(out), "--batch-size", "32")
    assert done.returncode == 0, done.stderr
    rows = list(csv.DictReader(out.open()))
    assert {r["path"] for r in rows} == set(truth)
    assert sum(r["digits"] == str(truth[r["path"]]) for r in rows) >= 95
    assert all(r["model_version"] == default_version and not r["error"] for r in rows)
    assert "100 images, 100 classified, 0 failed" in done.stderr

    (folder / "zero.png").write_bytes(b"")
    failed = producer(redis_url, "run", str(folder), "--batch-size", "32")
    assert failed.returncode == 1
    records = [json.loads(line) for line in failed.stdout.splitlines()]
    assert len(records) == 101
    [bad] = [r for r in records if r["error"]]
    assert bad["path"] == "zero.png" and "empty file" in bad["error"]


def test_enqueue_then_follow_then_read(redis_url: str, connection: redis.Redis, default_version: str,
                                       start_workers: StartWorkers, digit_folder: MakeFolder) -> None:
    folder, truth = digit_folder(50)
    enqueued = producer(redis_url, "enqueue", str(folder), "--batch-size", "10", "--review-threshold", "0.999")
    assert enqueued.returncode == 0, enqueued.stderr
    run_id = enqueued.stdout.strip()
    assert connection.exists(keys.run(run_id))
    follower = subprocess.Popen([sys.executable, "-m", "producer", "results", run_id, "--follow",
                                 "--redis-url", redis_url], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    time.sleep(1)
    assert follower.poll() is None  # nothing finished yet: it waits
    start_workers(1)
    streamed, _ = follower.communicate(timeout=60)
    assert follower.returncode == 0
    assert {json.loads(line)["path"] for line in streamed.splitlines()} == set(truth)
    flagged = {json.loads(line)["path"] for line in streamed.splitlines() if json.loads(line)["review"]}
    assert 0 < len(flagged) < 50  # a strict threshold flags some of the digits, not all
    assert connection.smembers(keys.run_review(run_id)) == {path.encode() for path in flagged}

    again = producer(redis_url, "results", run_id, "--format", "csv")
    assert len(list(csv.DictReader(io.StringIO(again.stdout)))) == 50
    status = producer(redis_url, "status", run_id)  # not a terminal: rich would fit 80 columns
    report = json.loads(producer(redis_url, "status", run_id, "--json").stdout)
    assert status.returncode == 0 and run_id in status.stdout
    assert status.stdout.count(default_version) == 2  # current, and the worker's: whole, not 'vm.8159…'
    assert report["workers"][0]["name"] in status.stdout
    assert report["run"]["done"] == 50 and report["run"]["complete"] is True
    assert report["run"]["review"] == len(flagged)
    assert report["current_model"] == default_version and report["queue"]["waiting"] == 0
    [worker] = report["workers"]
    assert (worker["model"], worker["batches"], worker["images"], worker["errors"]) == (default_version, 5, 50, 0)
    assert worker["average_batch"] == 10
    missing = producer(redis_url, "results", "no-such-run")
    assert missing.returncode != 0 and "no such run: no-such-run" in missing.stderr
    some = sorted(truth)[7:9]
    picked = producer(redis_url, "results", run_id, "--path", some[1], "--path", some[0])
    assert picked.returncode == 0, picked.stderr
    assert picked.stdout.splitlines() == [line for line in streamed.splitlines() if json.loads(line)["path"] in some]
    unknown = producer(redis_url, "results", run_id, "--path", some[0], "--path", "nope.png")
    assert unknown.returncode == 1 and f"run {run_id}: no result for nope.png" in unknown.stderr


def test_window_bounds_images_held_in_redis(connection: redis.Redis, default_version: str,
                                            start_workers: StartWorkers, digit_folder: MakeFolder) -> None:
    folder, truth = digit_folder(3000)
    start_workers(1)
    peaks: dict[str, int] = {}

    def held_images() -> int:
        total = 0
        for key in connection.scan_iter(f"{keys.PREFIX}:run:*:batch:*", count=1000):
            total += len(json.loads(connection.hget(key, "sizes") or "[]"))  # one size per image stored
        return total

    def measure(window: int) -> None:
        stop = threading.Event()
        peak = 0

        def poll() -> None:
            nonlocal peak
            while not stop.is_set():
                peak = max(peak, held_images())
                time.sleep(0.005)

        thread = threading.Thread(target=poll)
        thread.start()
        settings = runs.Settings(batch_size=50, window=window)
        run_id = send_folder(connection, folder, settings)
        assert len(list(follow(connection, run_id))) == len(truth)
        stop.set()
        thread.join()
        peaks[f"window {window}"] = peak

    measure(100)
    measure(100_000)
    assert 0 < peaks["window 100"] <= 100, peaks
    assert peaks["window 100000"] > 500, peaks  # without a tight window the queue really fills


def test_a_run_whose_results_all_arrive_is_walked_once(connection: redis.Redis, default_version: str,
                                                       start_workers: StartWorkers, digit_folder: MakeFolder) -> None:
    """Every file sent got its result: no second pass walks the folder and asks Redis for every
    path's result again (a tenth of the producer's CPU a digit)."""
    folder, truth = digit_folder(120)
    start_workers(1)
    settings = runs.Settings(batch_size=25)
    run_id = runs.create_run(connection, folder, settings)
    connection.config_resetstat()
    assert deliver(connection, run_id, folder, settings) == len(truth)
    assert results_count(connection, run_id) == len(truth)
    assert "cmdstat_hmget" not in connection.info("commandstats")


def test_a_producer_whose_share_was_taken_sends_no_more(connection: redis.Redis, digit_folder: MakeFolder) -> None:
    """A producer waiting on its window (no worker here) whose lease another producer took stops
    with ShareLost, its open batches left to the new holder, instead of sending on beside it."""
    folder, _truth = digit_folder(60)
    settings = runs.Settings(batch_size=10, window=20)
    run_id = runs.create_run(connection, folder, settings)
    failures: list[BaseException] = []

    def send() -> None:
        try:
            deliver(connection, run_id, folder, settings)
        except ShareLost as exc:
            failures.append(exc)

    sender = threading.Thread(target=send)
    sender.start()
    deadline = time.monotonic() + 10
    while len(list(connection.scan_iter(f"{keys.PREFIX}:run:{run_id}:batch:*"))) < 2 and time.monotonic() < deadline:
        time.sleep(0.02)
    connection.set(keys.run_sender(run_id, 0), "elsewhere:7:live", px=60_000)  # as after a stall past the lease
    sender.join(timeout=10)
    assert not sender.is_alive() and failures, "the producer went on without its share"
    assert "was taken by another producer (elsewhere:7:live)" in str(failures[0])
    assert len(list(connection.scan_iter(f"{keys.PREFIX}:run:{run_id}:batch:*"))) == 2  # nothing sent after


def test_files_whose_batch_redis_lost_are_sent_again_by_the_next_pass(
        connection: redis.Redis, default_version: str, start_workers: StartWorkers, digit_folder: MakeFolder) -> None:
    """A batch lost with its job (as by a Redis restart from an older AOF) leaves the results short of
    what the pass sent: the next pass finds its files and sends them again, once."""
    folder, truth = digit_folder(60)
    settings = runs.Settings(batch_size=20)
    run_id = runs.create_run(connection, folder, settings)
    delivered: list[int] = []
    sender = threading.Thread(target=lambda: delivered.append(deliver(connection, run_id, folder, settings)))
    sender.start()
    deadline = time.monotonic() + 30
    while connection.hget(keys.run(run_id), "batches") != b"3":
        assert time.monotonic() < deadline, "the batches were not sent"
        time.sleep(0.05)
    lost = json.loads(connection.hget(keys.batch(run_id, 1), "paths") or "[]")
    connection.delete(keys.batch(run_id, 1), f"rq:job:{job_id(run_id, 1)}")
    connection.lrem(f"rq:queue:{settings.queue}", 0, job_id(run_id, 1))
    start_workers(1)
    sender.join(timeout=120)
    assert delivered == [len(truth)]
    assert results_count(connection, run_id) == len(truth) == len(stored_results(connection, run_id))
    assert set(lost) <= set(stored_results(connection, run_id))
    assert connection.xlen(keys.run_events(run_id)) == 3  # the lost files went in a batch of their own


def test_a_batch_of_large_files_holds_fewer_and_the_window_bounds_its_batches(
        connection: redis.Redis, default_version: str, start_workers: StartWorkers, digit_folder: MakeFolder) -> None:
    """A batch stops taking files once they hold --batch-bytes (one file over it at most), and no
    more than window / batch size batches are open: a run of large files holds no more bytes in
    Redis than one of small files would."""
    folder, truth = digit_folder(200)
    sizes = {path.name: path.stat().st_size for path in folder.iterdir()}
    settings = runs.Settings(batch_size=50, batch_bytes=4 * max(sizes.values()), window=100)
    batches: dict[str, list[str]] = {}
    stop = threading.Event()
    most_open = 0

    def watch_payloads() -> None:
        nonlocal most_open
        while not stop.is_set():
            found = list(connection.scan_iter(f"{keys.PREFIX}:run:*:batch:*", count=1000))
            most_open = max(most_open, len(found))
            for key in found:
                batches.setdefault(text(key), json.loads(connection.hget(key, "paths") or "[]"))
            time.sleep(0.002)

    thread = threading.Thread(target=watch_payloads)
    thread.start()
    start_workers(1)
    run_id = send_folder(connection, folder, settings)
    records = [result.record for result in follow(connection, run_id)]
    stop.set()
    thread.join()
    assert sorted(r["path"] for r in records) == sorted(truth)
    assert 0 < most_open <= 100 // 50, most_open  # by images alone, 50 batches of 4 could have been open
    assert batches and all(0 < len(paths) < 50 for paths in batches.values()), batches
    assert all(sum(sizes[p] for p in paths[:-1]) < settings.batch_bytes for paths in batches.values())
    full = [paths for paths in batches.values() if sum(sizes[p] for p in paths) >= settings.batch_bytes]
    assert len(full) >= len(batches) - 1  # each closed by its bytes, but the folder's last


def test_a_shared_folder_run_cuts_its_batches_by_the_sizes_of_its_files(
        connection: redis.Redis, digit_folder: MakeFolder) -> None:
    """Sent by path, the files are never read by the producer; their sizes on disk close batches."""
    folder, truth = digit_folder(30)
    sizes = {path.name: path.stat().st_size for path in folder.iterdir()}
    settings = runs.Settings(batch_size=50, batch_bytes=3 * max(sizes.values()), shared_folder=".")
    run_id = send_folder(connection, folder, settings)
    batches = [json.loads(connection.hget(keys.batch(run_id, index), "paths") or "[]")
               for index in range(int(connection.hget(keys.run(run_id), "batches") or 0))]
    assert sorted(path for paths in batches for path in paths) == sorted(truth) and len(batches) > 1
    assert all(sum(sizes[p] for p in paths[:-1]) < settings.batch_bytes <= sum(sizes[p] for p in paths)
               for paths in batches[:-1])  # each closed by its bytes, but the folder's last


def test_symlinks_never_leave_the_folder(redis_url: str, default_version: str, start_workers: StartWorkers,
                                         digit_folder: MakeFolder, tmp_path: Path) -> None:
    folder, _ = digit_folder(3)
    outside = tmp_path / "secret.png"
    outside.write_bytes((folder / "00000.png").read_bytes())
    (folder / "escape.png").symlink_to(outside)
    (folder / "dangling.png").symlink_to(tmp_path / "nowhere.png")
    (folder / "inside.png").symlink_to(folder / "00001.png")
    start_workers(1)
    done = producer(redis_url, "run", str(folder))
    records = {r["path"]: r for r in map(json.loads, done.stdout.splitlines())}
    assert "outside the enqueued folder" in records["escape.png"]["error"]
    assert "broken symbolic link" in records["dangling.png"]["error"]
    assert records["inside.png"]["error"] is None and records["inside.png"]["digits"] == "2"
    assert done.returncode == 1


def test_walk_filters_and_recursion(tmp_path: Path) -> None:
    (tmp_path / "a" / "b").mkdir(parents=True)
    for name in ("a/one.png", "a/b/two.PNG", "a/b/three.jpg", "notes.txt", "four.gif"):
        (tmp_path / name).write_bytes(b"x")
    assert [f.relative for f in walk(tmp_path)] == ["four.gif", "a/one.png", "a/b/three.jpg", "a/b/two.PNG"]
    assert [f.relative for f in walk(tmp_path, extensions=(".png",))] == ["a/one.png", "a/b/two.PNG"]
    assert [f.relative for f in walk(tmp_path, globs=("a/b/*",))] == ["a/b/three.jpg", "a/b/two.PNG"]
    odd = os.fsencode(tmp_path) + b"/bad-\xff-name\n.png"
    with open(odd, "wb") as handle:
        handle.write(b"x")
    assert "bad-\\xff-name\\n.png" in [f.relative for f in walk(tmp_path)]


NAMES_ALIKE = ["a\nb.png", "a\\nb.png", "x\\xffy.png", "x\udcffy.png", "t\tab.png", "t\\tab.png",
               "u\u0085.png", "u\\x85.png", "z\\\\.png", "plain.png", "é\u200b.png"]


def test_names_that_escape_alike_keep_their_own_key(tmp_path: Path) -> None:
    """`a<newline>b.png` and a file literally named `a\\nb.png` shared a key, and so on: every
    name now has its own display name, and the file it stands for is found from it."""
    for index, name in enumerate(NAMES_ALIKE):
        with open(os.fsencode(tmp_path) + b"/" + os.fsencode(name), "wb") as handle:
            handle.write(bytes([index]))
    shown = {f.relative: f for f in walk(tmp_path)}
    assert len(shown) == len(NAMES_ALIKE) and all(display.isprintable() for display in shown)
    for display, found in shown.items():
        assert real_name(display) == os.path.basename(found.path)
        data, problem = read_inside(tmp_path, display)
        assert problem is None and data == Path(found.path).read_bytes()


def test_names_that_escape_alike_each_get_a_result_and_the_run_ends(redis_url: str, connection: redis.Redis,
                                                                     default_version: str,
                                                                     start_workers: StartWorkers,
                                                                     digit_folder: MakeFolder) -> None:
    folder, _ = digit_folder(1)
    digit = (folder / "00000.png").read_bytes()
    for name in NAMES_ALIKE:
        with open(os.fsencode(folder) + b"/" + os.fsencode(name), "wb") as handle:
            handle.write(digit)
    start_workers(1)
    done = producer(redis_url, "run", str(folder), "--batch-size", "4", timeout=60)
    assert done.returncode == 0, done.stderr
    records = [json.loads(line) for line in done.stdout.splitlines()]
    assert len({r["path"] for r in records}) == len(records) == len(NAMES_ALIKE) + 1
    assert all(r["digits"] == "7" for r in records)


def test_failed_batch_gets_a_result_per_image(connection: redis.Redis, digit_folder: MakeFolder,
                                              start_workers: StartWorkers) -> None:
    """With no model published, every job fails: each image still gets a failed result with the reason."""
    folder, truth = digit_folder(6)
    start_workers(1)
    settings = runs.Settings(batch_size=4, retries=0)
    run_id = send_folder(connection, folder, settings)
    records = [result.record for result in follow(connection, run_id)]
    assert {r["path"] for r in records} == set(truth)
    assert all("failed in the worker" in r["error"] and "no model version" in r["error"] for r in records)
    assert run_status(connection, run_id)["failed"] == 6


def test_a_path_stored_again_in_a_later_batch_is_followed_once(connection: redis.Redis) -> None:
    """A follower reads whole batches; a path it has already read, stored again in a later batch (a
    pass re-sent it after a Redis restart lost its first result's record), is left out of that
    batch alone, and what the run's summary counts comes from the rest."""
    run_id = "follow-twice"
    connection.hset(keys.run(run_id), mapping={"status": "enqueued", "total": 3})
    for index, paths in enumerate((["a.png", "b.png"], ["b.png", "c.png"])):
        connection.hset(keys.batch(run_id, index), mapping={"paths": json.dumps(paths), RESULTS_FIELD: BY_BATCH})
        store_results(connection, run_id, index, [result_record(path, index, digits=str(index), model_version="v1",
                                                                review=path == "c.png") for path in paths], 3600)
    batches = list(follow_batches(connection, run_id, wait=False))
    assert [batch.paths for batch in batches] == [["a.png", "b.png"], ["c.png"]]
    assert [json.loads(line)["digits"] for batch in batches for line in batch.lines] == ["0", "0", "1"]
    outcome = Outcome()
    for batch in batches:
        outcome.count(batch)
    assert (outcome.ok, outcome.failed, outcome.review, dict(outcome.versions)) == (3, 0, 1, {"v1": 3})
    assert [result.path for result in follow(connection, run_id, wait=False)] == ["a.png", "b.png", "c.png"]


def test_read_is_sized_to_the_file_but_reads_it_whole(tmp_path: Path) -> None:
    small = tmp_path / "small.png"
    small.write_bytes(b"x" * 300)
    assert read(Found("small.png", str(small))) == (b"x" * 300, None)
    assert read(Found("small.png", str(small)), max_bytes=299) == (None, "file is over the size limit of 299 bytes")
    assert read(Found("small.png", str(small)), max_bytes=300) == (b"x" * 300, None)
    status = Path("/proc/self/status")  # reports a size of 0 but has content: read on past the size
    data, problem = read(Found("status", str(status)))
    assert problem is None and data is not None and b"VmRSS" in data
    assert read(Found("status", str(status)), max_bytes=10) == (None, "file is over the size limit of 10 bytes")
    assert read(Found("gone.png", str(tmp_path / "gone.png"))) == (None, "cannot read file: No such file or directory")


@pytest.mark.parametrize("command", [["run"], ["enqueue", "--wait"]])
def test_one_ctrl_c_stops_at_once_and_says_how_to_resume(command: list[str], redis_url: str, connection: redis.Redis,
                                                          default_version: str, start_workers: StartWorkers,
                                                          digit_folder: MakeFolder) -> None:
    """With no worker the window fills; one Ctrl-C must stop the producer there, not after it sent
    the whole folder (it used to go on silently, and hang while nothing was classified)."""
    folder, truth = digit_folder(300)
    process = subprocess.Popen([sys.executable, "-m", "producer", *command, str(folder), "--batch-size", "10",
                                "--window", "40", "--redis-url", redis_url],
                               cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 30
    while not (found := connection.zrange(keys.RUNS, 0, -1)) or connection.hget(keys.run(text(found[0])),
                                                                                   "batches") != b"4":
        assert time.monotonic() < deadline and process.poll() is None, "the window did not fill"
        time.sleep(0.05)
    run_id = text(found[0])
    time.sleep(0.5)  # the sender now waits on the window
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=10)
    assert process.returncode == 130, stderr
    assert f"digits-producer {command[0]} --resume {run_id}" in stderr and "Traceback" not in stderr
    assert connection.hget(keys.run(run_id), "batches") == b"4"  # nothing more was sent

    start_workers(1)
    resumed = producer(redis_url, command[0], "--resume", run_id, *command[1:])
    assert resumed.returncode == 0, resumed.stderr
    assert results_count(connection, run_id) == len(truth)


def test_a_resume_with_nothing_left_says_so(redis_url: str, default_version: str, start_workers: StartWorkers,
                                            digit_folder: MakeFolder) -> None:
    folder, _truth = digit_folder(20)
    start_workers(1)
    first = producer(redis_url, "run", str(folder), "--batch-size", "5")
    assert first.returncode == 0 and " images/s" in first.stderr
    run_id = first.stderr.split()[1]
    again = producer(redis_url, "run", "--resume", run_id)
    assert again.returncode == 0, again.stderr
    assert len(again.stdout.splitlines()) == 20  # the output holds the whole run ...
    assert "20 images, 20 classified" in again.stderr and "nothing left to classify" in again.stderr
    assert "images/s" not in again.stderr  # ... but no rate: none of it was classified now (54,808 images/s before)


def test_run_writes_to_dev_null(redis_url: str, default_version: str, start_workers: StartWorkers,
                                digit_folder: MakeFolder) -> None:
    """-o /dev/null (the benchmarks' and tests' habit) cannot be emptied like a file."""
    folder, _truth = digit_folder(10)
    start_workers(1)
    done = producer(redis_url, "run", str(folder), "-o", "/dev/null")
    assert done.returncode == 0, done.stderr
