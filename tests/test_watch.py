"""`digits-producer watch`: a hot folder with files landing while it runs, and a restart in between."""

from __future__ import annotations

import io
import json
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import redis
from PIL import Image

from producer import runs
from producer.watch import Watcher, WatchSettings, make_state_dir
from tests.conftest import ROOT, Digits, MakeFolder, WorkerPool

StartWorkers = Callable[..., WorkerPool]


def png(pixels: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels.reshape(28, 28)).save(buffer, "PNG")
    return buffer.getvalue()


def start_watch(redis_url: str, folder: Path, output: Path, settle: str | None = "0.4") -> subprocess.Popen[str]:
    """`watch` with a short --settle for quick tests; settle=None keeps the default."""
    options = ["--settle", settle] if settle is not None else []
    return subprocess.Popen([sys.executable, "-m", "producer", "watch", str(folder), "--redis-url", redis_url,
                             "--output", str(output), "--max-delay", "0.05", *options],
                            cwd=ROOT, stderr=subprocess.PIPE, text=True)


def results(output: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in output.read_text().splitlines()] if output.exists() else []


def wait_for_results(output: Path, count: int, timeout: float = 60) -> list[dict[str, object]]:
    deadline = time.monotonic() + timeout
    while len(found := results(output)) < count:
        assert time.monotonic() < deadline, f"{len(found)} of {count} results: {found}"
        time.sleep(0.1)
    return found


def stop(process: subprocess.Popen[str]) -> None:
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=30)
    assert process.returncode == 0, stderr


def test_files_landing_while_watching_including_half_written(
        redis_url: str, default_version: str, start_workers: StartWorkers, mnist_test: Digits,
        tmp_path: Path) -> None:
    images, labels = mnist_test
    folder, output = tmp_path / "hot", tmp_path / "results.jsonl"
    folder.mkdir()
    start_workers(1)
    watcher = start_watch(redis_url, folder, output)
    try:
        for index in range(5):
            (folder / f"{index}.png").write_bytes(png(images[index]))
            time.sleep(0.05)
        slow = png(images[5])
        with open(folder / "slow.png", "wb") as handle:  # written in pieces over ~1 s, pauses < settle
            for start in range(0, len(slow), len(slow) // 8 + 1):
                handle.write(slow[start:start + len(slow) // 8 + 1])
                handle.flush()
                time.sleep(0.12)
        (folder / "sub").mkdir()
        (folder / "sub" / "late.png").write_bytes(png(images[6]))
        found = wait_for_results(output, 7)
    finally:
        stop(watcher)
    by_path = {str(r["path"]): r for r in found}
    assert len(found) == len(by_path) == 7
    expected = {**{f"{i}.png": labels[i] for i in range(5)}, "slow.png": labels[5], "sub/late.png": labels[6]}
    assert {p: int(str(r["digits"])) for p, r in by_path.items()} == {p: int(v) for p, v in expected.items()}
    assert all(r["error"] is None and r["model_version"] == default_version for r in found)
    assert sorted(p.name for p in folder.rglob("*.png") if ".digits" not in p.parts) == []
    assert (folder / ".digits" / "done" / "sub" / "late.png").is_file()


def test_restart_reads_nothing_twice_and_loses_nothing(
        redis_url: str, default_version: str, start_workers: StartWorkers, mnist_test: Digits,
        tmp_path: Path) -> None:
    images, _ = mnist_test
    folder, output = tmp_path / "hot", tmp_path / "results.jsonl"
    folder.mkdir()
    watcher = start_watch(redis_url, folder, output)
    for index in range(10):
        (folder / f"a{index}.png").write_bytes(png(images[index]))
    time.sleep(1.5)  # enqueued, but no worker runs yet: results are pending
    stop(watcher)
    assert results(output) == []
    for index in range(10, 15):
        (folder / f"b{index}.png").write_bytes(png(images[index]))
    watcher = start_watch(redis_url, folder, output)
    try:
        start_workers(1)
        found = wait_for_results(output, 15)
        time.sleep(1.0)  # anything sent twice would show up now
        found = results(output)
    finally:
        stop(watcher)
    paths = [str(r["path"]) for r in found]
    assert len(paths) == len(set(paths)) == 15
    assert len(list((folder / ".digits" / "done").glob("*.png"))) == 15
    assert all(r["error"] is None and r["model_version"] == default_version for r in found)


def test_a_folder_is_watched_by_one_watch_at_a_time(redis_url: str, connection: redis.Redis, tmp_path: Path) -> None:
    """A second watch of the same folder (same run: the same --name, here the folder's) is refused
    while the first runs, naming it: both would send every file that lands."""
    folder = tmp_path / "hot"
    folder.mkdir()
    first = start_watch(redis_url, folder, tmp_path / "first.jsonl")
    deadline = time.monotonic() + 30
    while not list(connection.scan_iter("digits:run:*:sender:0")):  # the first holds its run
        assert time.monotonic() < deadline and first.poll() is None, "the first watch did not start"
        time.sleep(0.1)
    second = start_watch(redis_url, folder, tmp_path / "second.jsonl")
    _, stderr = second.communicate(timeout=60)
    assert second.returncode == 1 and "is being sent by another producer" in stderr, stderr
    stop(first)


def test_files_it_cannot_move_are_sent_once(redis_url: str, default_version: str, start_workers: StartWorkers,
                                            mnist_test: Digits, tmp_path: Path) -> None:
    """A hot folder it cannot move files out of (here DIR/.digits is a file, so for root too) used to
    be sent again at every scan: 3 files gave 57 results in 8 s. Each is sent once, and again only
    when it changes."""
    images, _labels = mnist_test
    folder, output = tmp_path / "hot", tmp_path / "results.jsonl"
    folder.mkdir()
    (folder / ".digits").write_text("not a folder")
    for index in range(3):
        (folder / f"{index}.png").write_bytes(png(images[index]))
    start_workers(1)
    watcher = start_watch(redis_url, folder, output)
    try:
        wait_for_results(output, 3)
        time.sleep(3)  # seven times --settle: every scan sees the three files again
        assert sorted(str(r["path"]) for r in results(output)) == ["0.png", "1.png", "2.png"]
        (folder / "1.png").write_bytes(png(images[7]))  # a new file under an old name
        found = wait_for_results(output, 4)
        time.sleep(2)
        assert len(results(output)) == 4 and found[-1]["path"] == "1.png"
    finally:
        stop(watcher)
    assert sorted(p.name for p in folder.iterdir()) == [".digits", "0.png", "1.png", "2.png"]


def test_the_default_settle_waits_out_a_writer_that_pauses(redis_url: str, default_version: str,
                                                          start_workers: StartWorkers, mnist_test: Digits,
                                                          tmp_path: Path) -> None:
    """A scanner or a network copy pauses mid-file; the old default of 0.2 s sent such a file
    half-written, and its result was an error."""
    images, labels = mnist_test
    folder, output = tmp_path / "hot", tmp_path / "results.jsonl"
    folder.mkdir()
    start_workers(1)
    watcher = start_watch(redis_url, folder, output, settle=None)
    try:
        data = png(images[0])
        with open(folder / "scan.png", "wb") as handle:
            handle.write(data[:len(data) // 2])
            handle.flush()
            time.sleep(1.0)
            handle.write(data[len(data) // 2:])
        [result] = wait_for_results(output, 1)
    finally:
        stop(watcher)
    assert result["error"] is None and result["digits"] == str(labels[0])


def test_the_watch_makes_its_state_folder_for_its_output(tmp_path: Path) -> None:
    """compose's watch appends its results to WATCH_DIR/.digits/results.jsonl from the first start."""
    make_state_dir(tmp_path)
    (tmp_path / ".digits" / "results.jsonl").write_text("")
    (tmp_path / "blocked").mkdir()
    (tmp_path / "blocked" / ".digits").write_text("a file")
    make_state_dir(tmp_path / "blocked")  # cannot: it says so and goes on (files then stay where they land)


def test_micro_batches_close_on_their_bytes_and_the_window_bounds_their_bytes(
        connection: redis.Redis, digit_folder: MakeFolder) -> None:
    """With no worker, the watch sends micro-batches that stop once their files hold --batch-bytes,
    and stops sending once the bytes pending would pass what window / batch size open batches hold."""
    folder, _truth = digit_folder(40)
    sizes = {path.name: path.stat().st_size for path in folder.iterdir()}
    settings = runs.Settings(batch_size=50, batch_bytes=3 * max(sizes.values()), window=100)
    watcher = Watcher(connection, folder, settings, WatchSettings(settle=0, max_delay=0), emit=lambda result: None)
    watcher.scan()
    watcher.scan()  # unchanged since the first look: ready
    assert len(watcher.ready) == len(sizes)
    watcher.send_due()
    batches = [json.loads(connection.hget(key, "paths") or "[]")
               for key in connection.scan_iter(f"digits:run:{watcher.run_id}:batch:*")]
    assert batches and all(sum(sizes[p] for p in paths[:-1]) < settings.batch_bytes <= sum(sizes[p] for p in paths)
                           for paths in batches)
    assert watcher.most_bytes == 2 * settings.batch_bytes  # window 100 / batch size 50: two full batches' bytes
    assert watcher.held_bytes == sum(sizes[p] for paths in batches for p in paths) <= watcher.most_bytes
    assert len(watcher.ready) == len(sizes) - sum(len(paths) for paths in batches)  # the rest wait for results
    _following, following = watcher.micro_batch()
    assert watcher.held_bytes + following > watcher.most_bytes  # the next one would not fit
