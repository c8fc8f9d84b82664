"""The worker against real Redis and real worker processes: results, safety, model swaps, shutdown."""

from __future__ import annotations

import gzip
import http.server
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import redis
from PIL import Image
from rq import Callback, Queue
from rq.registry import FailedJobRegistry
from rq.serializers import DefaultSerializer
from rq.webhook import Webhook

from digits import keys
from digits.connection import text
from digits.defaults import JOB_TIMEOUT, WORKER_TTL
from digits.images import decode
from digits.queueing import batch_queue
from digits.reading import lattice_of
from digits.registry import DEFAULT_MODEL_DIR, Registry, build_manifest
from digits.results import results_count
from digits.theta import BLOCK_ROWS, Model, load_dir, to_csv
from producer import runs
from producer.following import follow
from producer.redis_server import free_port
from tests.conftest import (
    ROOT,
    Digits,
    MakeFolder,
    WorkerPool,
    cnn_manifest,
    random_cnn,
    random_strips,
    send_folder,
    strips_manifest,
    write_pngs,
)
from trainer.synth import generate, png_bytes

StartWorkers = Callable[..., WorkerPool]


def classify(connection: redis.Redis, folder: Path, batch_size: int = 16) -> dict[str, dict[str, Any]]:
    """Enqueue a folder and wait for every result (workers must be running)."""
    settings = runs.Settings(batch_size=batch_size)
    run_id = send_folder(connection, folder, settings)
    deadline = time.monotonic() + 120
    records: dict[str, dict[str, Any]] = {}
    for result in follow(connection, run_id, should_stop=lambda: time.monotonic() > deadline):
        records[result.path] = result.record
    return records


def wait_for(condition: Callable[[], bool], timeout: float = 30, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def test_batch_results_match_labels_and_carry_model(
        connection: redis.Redis, default_version: str, start_workers: StartWorkers,
        digit_folder: MakeFolder) -> None:
    folder, truth = digit_folder(64)
    start_workers(1)
    records = classify(connection, folder)
    assert set(records) == set(truth)
    sha = Registry(connection).manifest(default_version)["model_sha256"]
    correct = sum(records[p]["digits"] == str(label) for p, label in truth.items())
    assert correct >= 60
    for record in records.values():
        assert record["error"] is None
        assert record["model_version"] == default_version
        assert record["model_sha256"] == sha
        assert len(record["confidences"]) == len(record["digits"]) == 1
        assert abs(sum(record["probabilities"][0]) - 1) < 1e-4


def test_corrupt_image_fails_alone(connection: redis.Redis, default_version: str,
                                   start_workers: StartWorkers, digit_folder: MakeFolder) -> None:
    folder, truth = digit_folder(10)
    (folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 40)
    (folder / "notes.png").write_text("this is not an image")
    Image.new("L", (28, 28), 255).save(folder / "blank.png")  # normalised in one stack with the digits
    start_workers(1)
    records = classify(connection, folder, batch_size=50)  # one batch holds them all
    assert records["broken.png"]["error"].startswith("broken.png: ")
    assert "not a recognised image format" in records["notes.png"]["error"]
    assert records["blank.png"]["error"] == "blank.png: no digits found: the image is blank"
    assert all(records[p]["error"] is None and records[p]["digits"] for p in truth)
    run_id = text(connection.zrange(keys.RUNS, 0, 0)[0])
    assert connection.scard(keys.run_failed(run_id)) == 3


def test_a_batch_of_crops_is_read_a_block_at_a_time_in_order(
        connection: redis.Redis, default_version: str, start_workers: StartWorkers, tmp_path: Path,
        mnist_test: Digits) -> None:
    """60 crops of about 40 candidate digits each: one batch, read a block of decoded pixels at a
    time (worker.jobs.DECODED_PIXELS, about 33 crops) so that its fields are never all held at
    once. Every crop's result is its own (most read right), and a broken file in the middle fails alone."""
    images, labels = mnist_test
    crops = generate(60, images, labels, seed=3)
    assert sum(len(lattice_of(decode(png_bytes(c))).spans) for c in crops) > 2 * BLOCK_ROWS
    truth = {}
    for index, crop in enumerate(crops):
        (tmp_path / f"{index:02d}.png").write_bytes(png_bytes(crop))
        truth[f"{index:02d}.png"] = crop.code
    (tmp_path / "30-broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 40)
    start_workers(1)
    records = classify(connection, tmp_path, batch_size=100)
    assert records["30-broken.png"]["error"].startswith("30-broken.png: ")
    assert all(records[p]["error"] is None for p in truth)
    assert sum(records[p]["code"] == code for p, code in truth.items()) >= 0.7 * len(truth)


def test_two_worker_processes_share_one_run(connection: redis.Redis, default_version: str,
                                            start_workers: StartWorkers, digit_folder: MakeFolder) -> None:
    folder, truth = digit_folder(1200)
    start_workers(2)
    records = classify(connection, folder, batch_size=20)
    assert len(records) == len(truth)
    workers = {r["worker"] for r in records.values()}
    assert len(workers) == 2, workers


def test_foreign_function_is_refused(connection: redis.Redis, default_version: str,
                                     start_workers: StartWorkers, tmp_path: Path,
                                     digit_folder: MakeFolder) -> None:
    marker = tmp_path / "pwned"
    pool = start_workers(1)
    job = batch_queue(connection).enqueue("os.system", f"touch {marker}")
    registry = FailedJobRegistry(queue=batch_queue(connection))
    wait_for(lambda: job.id in registry.get_job_ids(), what="the foreign job to fail")
    result = job.latest_result()
    assert result is not None and result.exc_string is not None
    assert "refused" in result.exc_string and "'os.system'" in result.exc_string
    assert not marker.exists()
    assert pool.process.poll() is None
    folder, _ = digit_folder(5)
    assert len(classify(connection, folder)) == 5  # the worker is still serving


class Listener(http.server.ThreadingHTTPServer):
    """An HTTP server on 127.0.0.1 that records every request it gets (a webhook's target)."""

    def __init__(self) -> None:
        self.requests: list[str] = []
        listener = self

        class Record(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                listener.requests.append(f"{self.command} {self.path}")
                self.send_response(204)
                self.end_headers()

            do_POST = do_GET

            def log_message(self, format: str, *args: Any) -> None:
                pass

        super().__init__(("127.0.0.1", 0), Record)
        threading.Thread(target=self.serve_forever, daemon=True).start()

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/{name}"


def hook_module(directory: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A module on the workers' path whose import (its top-level code) writes a marker file."""
    marker = directory / "hook-imported"
    (directory / "digits_hook.py").write_text(f"open({str(marker)!r}, 'w').close()\n"
                                              "def hook(*args, **kwargs):\n    pass\n")
    monkeypatch.setenv("PYTHONPATH", str(directory))
    return marker


def test_a_refused_job_imports_no_callback_and_sends_no_webhook(
        connection: redis.Redis, start_workers: StartWorkers, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    marker = hook_module(tmp_path, monkeypatch)
    listener = Listener()
    hook = Callback("digits_hook.hook")
    job = batch_queue(connection).enqueue(
        "os.getcwd", on_success=hook, on_failure=hook, on_stopped=hook,
        webhooks=[Webhook(listener.url("failed"), "failed", method="POST"), Webhook(listener.url("done"), "finished")])
    start_workers(1)
    registry = FailedJobRegistry(queue=batch_queue(connection))
    wait_for(lambda: job.id in registry.get_job_ids(), what="the foreign job to fail")
    result = job.latest_result()
    assert result is not None and result.exc_string is not None and "'os.getcwd'" in result.exc_string
    time.sleep(0.5)  # RQ sends webhooks once the failure is stored
    assert not marker.exists() and listener.requests == []
    listener.shutdown()


def test_our_job_asking_for_callbacks_or_webhooks_is_refused_and_nothing_runs(
        connection: redis.Redis, start_workers: StartWorkers, tmp_path: Path, digit_folder: MakeFolder,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Jobs of a real run, given callbacks and webhooks in Redis: refused (before any model is
    needed), reported per image."""
    marker = hook_module(tmp_path, monkeypatch)
    listener = Listener()
    folder, truth = digit_folder(6)
    settings = runs.Settings(batch_size=2, retries=0)
    run_id = send_folder(connection, folder, settings)
    webhooks = json.dumps([Webhook(listener.url(s), s, method="POST").to_dict() for s in ("finished", "failed")])
    for batch, field, value in [(0, "success_callback_name", "digits_hook.hook"),
                                (1, "failure_callback_name", "digits_hook.hook"),
                                (1, "stopped_callback_name", "digits_hook.hook"), (2, "webhooks", webhooks)]:
        connection.hset(f"rq:job:{run_id}_b{batch}", field, value)
    start_workers(1)
    records = {result.path: result.record for result in follow(connection, run_id)}
    assert set(records) == set(truth)
    assert all("refused: it asks for" in record["error"] for record in records.values())
    assert any("a webhook to 'http://127.0.0.1:" in record["error"] for record in records.values())
    time.sleep(0.5)
    assert not marker.exists() and listener.requests == []
    listener.shutdown()


class Exploit:
    """Unpickling this runs a shell command: exactly what a pickle-loading worker would do."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (os.system, (f"touch {self.marker}",))


def test_pickled_job_is_never_unpickled(connection: redis.Redis, default_version: str,
                                        start_workers: StartWorkers, tmp_path: Path) -> None:
    marker = tmp_path / "pwned-by-pickle"
    pickled = Queue(keys.DEFAULT_QUEUE, connection=connection, serializer=DefaultSerializer)
    job = pickled.enqueue(print, Exploit(marker))
    assert not marker.exists()
    pool = start_workers(1)
    registry = FailedJobRegistry(queue=batch_queue(connection))
    wait_for(lambda: job.id in registry.get_job_ids(), what="the pickled job to fail")
    result = job.latest_result()
    assert result is not None and result.exc_string is not None
    assert "payload is not JSON" in result.exc_string
    assert not marker.exists()
    assert pool.process.poll() is None


def test_nothing_on_the_queue_is_pickled(connection: redis.Redis, default_version: str,
                                         start_workers: StartWorkers, digit_folder: MakeFolder) -> None:
    folder, _ = digit_folder(40)
    settings = runs.Settings(batch_size=10)
    run_id = send_folder(connection, folder, settings)
    job_keys = [k for k in connection.scan_iter("rq:job:*") if b":" not in k[len("rq:job:"):]]
    assert len(job_keys) == 4
    for key in job_keys:
        data = connection.hget(key, "data")
        assert isinstance(data, bytes)
        function, instance, args, _kwargs = json.loads(zlib.decompress(data))
        assert function == "worker.jobs.classify_batch" and instance is None
        assert args[0] == run_id
    start_workers(1)
    [result.record for result in follow(connection, run_id)]
    for key in connection.scan_iter("*"):
        if connection.type(key) == b"string":
            value = connection.get(key)
            assert isinstance(value, bytes) and not value.startswith(b"\x80"), f"{key!r} holds a pickle"


def shifted_model(connection: redis.Redis, winner: int) -> str:
    """Publish a variant of the default model whose output always says `winner`."""
    theta = load_dir(DEFAULT_MODEL_DIR)
    theta2 = theta.theta2.copy()
    theta2[0, winner] += 1000.0
    files = {"theta1.csv": to_csv(theta.theta1), "theta2.csv": to_csv(theta2)}
    manifest = build_manifest(files, Model(theta), preset=f"always-{winner}", version=f"always-{winner}")
    return Registry(connection).publish(files, manifest)


def test_new_version_is_used_by_next_jobs_and_rollback_restores(
        connection: redis.Redis, default_version: str, start_workers: StartWorkers,
        digit_folder: MakeFolder) -> None:
    folder, _ = digit_folder(30)
    start_workers(2)
    registry = Registry(connection)
    assert {r["model_version"] for r in classify(connection, folder).values()} == {default_version}

    version = shifted_model(connection, winner=3)
    registry.promote(version)
    records = classify(connection, folder)
    assert {r["model_version"] for r in records.values()} == {version}
    assert {r["digits"] for r in records.values()} == {"3"}

    assert registry.rollback() == default_version
    assert {r["model_version"] for r in classify(connection, folder).values()} == {default_version}
    assert FailedJobRegistry(queue=batch_queue(connection)).count == 0


def test_a_promoted_cnn_version_is_served_by_running_workers(
        connection: redis.Redis, default_version: str, start_workers: StartWorkers,
        digit_folder: MakeFolder) -> None:
    """An N-layer version promoted while workers run: the next jobs use it (a CNN whose output
    always says 4), each result names it and its sha256, and no job fails; rollback returns."""
    folder, _ = digit_folder(30)
    start_workers(2)
    registry = Registry(connection)
    assert {r["model_version"] for r in classify(connection, folder).values()} == {default_version}
    files = random_cnn(seed=4)
    lines = files["layer4.csv"].splitlines(keepends=True)
    lines[0] = to_csv(np.eye(10)[4:5] * 1000.0)  # the bias row of the last layer
    files["layer4.csv"] = b"".join(lines)
    manifest = cnn_manifest(files, "cnn-always-4")
    registry.publish(files, manifest, promote=True)
    records = classify(connection, folder)
    assert {(r["model_version"], r["model_sha256"], r["digits"]) for r in records.values()} == {
        ("cnn-always-4", manifest["model_sha256"], "4")}
    assert registry.rollback() == default_version
    assert {r["model_version"] for r in classify(connection, folder).values()} == {default_version}
    assert FailedJobRegistry(queue=batch_queue(connection)).count == 0


def test_a_promoted_strip_version_reads_crops_in_one_pass_and_digits_with_its_digit_model(
        connection: redis.Redis, default_version: str, start_workers: StartWorkers, tmp_path: Path,
        mnist_test: Digits) -> None:
    """A version with a strip reader promoted while workers run: its crops are read by the strip
    reader (one whose every frame says 7 reads each crop as "7"), its single digits by its digit
    model as before, every result names the version and its sha256, and no job fails."""
    images, labels = mnist_test
    for index, crop in enumerate(generate(6, images, labels, seed=8)):
        (tmp_path / f"crop-{index}.png").write_bytes(png_bytes(crop))
    digits = write_pngs(tmp_path, images[:10], labels[:10])
    start_workers(1)
    registry = Registry(connection)
    digit_files = registry.files(default_version)[0]
    strip_files = random_strips(seed=2)
    lines = strip_files["strip4.csv"].splitlines(keepends=True)
    lines[0] = to_csv(np.eye(12)[7:8] * 1000.0)  # the bias row of the last layer: every frame a sure 7
    strip_files["strip4.csv"] = b"".join(lines)
    manifest = strips_manifest(digit_files, strip_files, "strips-always-7")
    registry.publish({**digit_files, **strip_files}, manifest, promote=True)
    records = classify(connection, tmp_path)
    assert {(r["model_version"], r["model_sha256"]) for r in records.values()} == {
        ("strips-always-7", manifest["model_sha256"])}
    assert {records[f"crop-{i}.png"]["code"] for i in range(6)} == {"7"}
    assert sum(records[name]["digits"] == str(label) for name, label in digits.items()) >= 9
    assert all(r["error"] is None for r in records.values())
    assert FailedJobRegistry(queue=batch_queue(connection)).count == 0


def test_worker_keeps_old_model_when_new_one_cannot_load(
        connection: redis.Redis, default_version: str, start_workers: StartWorkers,
        digit_folder: MakeFolder) -> None:
    folder, _ = digit_folder(8)
    start_workers(1)
    classify(connection, folder)
    connection.copy(keys.model(default_version), keys.model("corrupt"))
    connection.hset(keys.model("corrupt"), "theta1", gzip.compress(b"1,2,3\n"))
    connection.set(keys.MODEL_CURRENT, "corrupt")  # bypasses publish, which would refuse it
    records = classify(connection, folder)
    assert {r["model_version"] for r in records.values()} == {default_version}
    assert all(r["error"] is None for r in records.values())


def test_a_running_worker_never_switches_to_a_version_it_cannot_serve(
        connection: redis.Redis, default_version: str, start_workers: StartWorkers, digit_folder: MakeFolder) -> None:
    """A version with a manifest without `files`, made current behind the registry's back, made
    every job fail with KeyError: 'files'. The worker keeps its model and says why."""
    folder, _ = digit_folder(8)
    start_workers(1)
    classify(connection, folder)
    connection.copy(keys.model(default_version), keys.model("no-files"))
    connection.hset(keys.model("no-files"), "manifest", json.dumps({"version": "no-files", "model_sha256": "0" * 64}))
    connection.set(keys.MODEL_CURRENT, "no-files")
    for _ in range(2):
        records = classify(connection, folder)
        assert {r["model_version"] for r in records.values()} == {default_version}
        assert all(r["error"] is None for r in records.values())
    assert FailedJobRegistry("digits", connection=connection).count == 0


def test_a_new_worker_whose_current_cannot_load_serves_the_previous_current(
        connection: redis.Redis, registry: Registry, default_version: str, start_workers: StartWorkers,
        digit_folder: MakeFolder) -> None:
    """New workers crash-looped at start on such a version; they serve the newest earlier current."""
    folder, _ = digit_folder(8)
    connection.copy(keys.model(default_version), keys.model("no-files"))
    connection.hset(keys.model("no-files"), "manifest", "[]")
    connection.lpush(keys.MODEL_HISTORY, default_version)
    connection.set(keys.MODEL_CURRENT, "no-files")
    start_workers(1)
    records = classify(connection, folder)
    assert {r["model_version"] for r in records.values()} == {default_version}
    assert all(r["error"] is None for r in records.values())


def test_a_batch_stored_one_field_per_image_is_read_and_a_missing_field_fails_only_that_image(
        connection: redis.Redis, default_version: str, start_workers: StartWorkers, digit_folder: MakeFolder) -> None:
    """Batches stored by a producer from before `images` (one field per image) are still read by
    upgraded workers; one missing image field failed its whole batch with a KeyError."""
    folder, truth = digit_folder(4)
    settings = runs.Settings(batch_size=4)
    run_id = send_folder(connection, folder, settings)
    payload = keys.batch(run_id, 0)
    sizes, images = json.loads(connection.hget(payload, "sizes") or "[]"), connection.hget(payload, "images") or b""
    assert sizes == [(folder / path).stat().st_size for path in sorted(truth)] and len(images) == sum(sizes)
    starts = np.cumsum([0, *sizes])
    connection.hset(payload, mapping={str(i): images[starts[i]:starts[i + 1]] for i in range(4)})
    connection.hdel(payload, "images", "sizes", "2")
    start_workers(1)
    records = {result.path: result.record for result in follow(connection, run_id)}
    missing = sorted(truth)[2]
    assert records[missing]["error"] == f"{missing}: its bytes are missing from the batch payload (field 2)"
    assert all(r["error"] is None and r["digits"] == str(truth[p]) for p, r in records.items() if p != missing)


def test_a_corrupt_batch_payload_fails_its_batch_naming_run_batch_and_what_is_wrong(
        connection: redis.Redis, default_version: str, start_workers: StartWorkers, digit_folder: MakeFolder) -> None:
    """`paths=[1,2,3,4]` put four bogus paths in a run's results; the job now fails, saying why."""
    folder, _ = digit_folder(4)
    settings = runs.Settings(batch_size=4, retries=0)
    run_id = send_folder(connection, folder, settings)
    connection.hset(keys.batch(run_id, 0), "paths", "[1, 2, 3, 4]")
    start_workers(1)
    failed = FailedJobRegistry("digits", connection=connection)
    wait_for(lambda: failed.count == 1, what="the job to fail")
    job = Queue("digits", connection=connection).fetch_job(failed.get_job_ids()[0])
    assert job is not None and job.latest_result() is not None
    assert f"run {run_id} batch 0: payload field 'paths' is not a list of path strings" in \
        str(job.latest_result().exc_string)  # type: ignore[union-attr]
    assert results_count(connection, run_id) == 0


def test_image_sizes_that_do_not_match_the_payload_fail_its_batch_saying_so(
        connection: redis.Redis, default_version: str, start_workers: StartWorkers, digit_folder: MakeFolder) -> None:
    """The image bytes of a batch are cut by its `sizes`: a corrupt list must never shift one
    image's bytes into another's result."""
    folder, _ = digit_folder(4)
    run_id = send_folder(connection, folder, runs.Settings(batch_size=4, retries=0))
    sizes = json.loads(connection.hget(keys.batch(run_id, 0), "sizes") or "[]")
    connection.hset(keys.batch(run_id, 0), "sizes", json.dumps([sizes[0] + 1, *sizes[1:]]))
    start_workers(1)
    failed = FailedJobRegistry("digits", connection=connection)
    wait_for(lambda: failed.count == 1, what="the job to fail")
    job = Queue("digits", connection=connection).fetch_job(failed.get_job_ids()[0])
    assert job is not None and job.latest_result() is not None
    assert (f"run {run_id} batch 0: payload field 'sizes' adds up to {sum(sizes) + 1} bytes, but 'images' holds "
            f"{sum(sizes)}") in str(job.latest_result().exc_string)  # type: ignore[union-attr]
    assert results_count(connection, run_id) == 0


def test_sigterm_finishes_the_current_job(connection: redis.Redis, default_version: str,
                                          start_workers: StartWorkers, digit_folder: MakeFolder) -> None:
    folder, truth = digit_folder(4000)
    pool = start_workers(1)
    settings = runs.Settings(batch_size=4000, batch_bytes=64 * 1024 * 1024)  # one batch of them all
    run_id = send_folder(connection, folder, settings)
    queue = batch_queue(connection)
    wait_for(lambda: queue.started_job_registry.count == 1, what="the job to start")
    assert pool.stop() == 0
    assert results_count(connection, run_id) == len(truth)
    assert queue.started_job_registry.count == 0 and queue.failed_job_registry.count == 0


def test_worker_and_producer_never_import_tensorflow() -> None:
    code = ("import sys, worker.cli, worker.worker, worker.jobs, producer.cli, producer.runs, producer.demo; "
            "sys.exit('tensorflow' in sys.modules)")
    assert subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=False).returncode == 0


def test_worker_runs_one_blas_thread() -> None:
    code = "import worker, os; print(os.environ['OPENBLAS_NUM_THREADS'], os.environ['OMP_NUM_THREADS'])"
    env = {k: v for k, v in os.environ.items() if not k.endswith("_NUM_THREADS")}
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["1", "1"]


def test_sigint_to_pool_stops_all_processes(redis_url: str, connection: redis.Redis,
                                            start_workers: StartWorkers) -> None:
    pool = start_workers(2)
    os.kill(pool.process.pid, signal.SIGINT)
    assert pool.process.wait(timeout=30) == 0
    wait_for(lambda: connection.scard("rq:workers") == 0, what="workers to deregister")


def test_worker_processes_stop_when_their_supervisor_is_killed(
        connection: redis.Redis, start_workers: StartWorkers) -> None:
    pool = start_workers(2)
    os.kill(pool.process.pid, signal.SIGKILL)
    pool.process.wait()
    wait_for(lambda: connection.scard("rq:workers") == 0, timeout=20, what="orphaned workers to stop")


def health(redis_url: str, kind: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "worker", "--health", kind, "--redis-url", redis_url], cwd=ROOT,
                          capture_output=True, text=True, timeout=60, check=False)


def test_health_checks_liveness_and_readiness(redis_url: str, connection: redis.Redis,
                                              start_workers: StartWorkers) -> None:
    down = health(redis_url, "live")
    assert down.returncode == 1 and "no worker of host" in down.stdout
    start_workers(1)
    assert health(redis_url, "live").returncode == 0
    not_ready = health(redis_url, "ready")
    assert not_ready.returncode == 1 and "no model version is current" in not_ready.stdout
    unreachable = health("redis://127.0.0.1:1/0", "live")
    assert unreachable.returncode == 1 and "Redis" in unreachable.stdout


def test_a_worker_started_after_publishing_is_ready_at_once(
        redis_url: str, default_version: str, start_workers: StartWorkers) -> None:
    start_workers(1)
    deadline = time.monotonic() + 20
    while (ready := health(redis_url, "ready")).returncode != 0:
        assert time.monotonic() < deadline, ready.stdout
        time.sleep(0.2)
    assert f"serve {default_version}" in ready.stdout


def test_rq_info_lists_our_queue_and_workers(redis_url: str, connection: redis.Redis, default_version: str,
                                             start_workers: StartWorkers, digit_folder: MakeFolder) -> None:
    """Operators' own RQ tools read our queue: JSON jobs, so `--serializer json` is all they need."""
    folder, _ = digit_folder(20)
    pool = start_workers(2)
    classify(connection, folder)
    rq = Path(sys.executable).parent / "rq"
    info = subprocess.run([str(rq), "info", "--url", redis_url, "--serializer", "json", "--by-queue"],
                          capture_output=True, text=True, timeout=60, check=True).stdout
    assert "digits" in info and "2 workers, 1 queues" in info, info
    names = [text(w) for w in connection.smembers("rq:workers")]
    assert all(name.removeprefix("rq:worker:") in info for name in names), info
    assert pool.process.poll() is None


def test_json_logs_carry_run_batch_model_and_worker(redis_url: str, connection: redis.Redis,
                                                    default_version: str, digit_folder: MakeFolder) -> None:
    folder, _ = digit_folder(12)
    settings = runs.Settings(batch_size=5)
    run_id = send_folder(connection, folder, settings)
    done = subprocess.run([sys.executable, "-m", "worker", "--burst", "--log-format", "json", "--redis-url",
                           redis_url], cwd=ROOT, capture_output=True, text=True, timeout=120, check=True)
    records = [json.loads(line) for line in done.stderr.splitlines() if line.startswith("{")]
    batches = [r for r in records if r["message"] == "batch done"]
    assert sorted(r["batch"] for r in batches) == [0, 1, 2]
    for record in batches:
        assert record["run_id"] == run_id and record["model_version"] == default_version
        assert record["worker"].startswith(socket.gethostname()) and record["level"] == "INFO"
    assert sum(r["images"] for r in batches) == 12
    assert all(not line or line.startswith("{") for line in done.stderr.splitlines()), "non-JSON log lines"


def test_rq_dashboard_reads_our_queue_workers_and_jobs(redis_url: str, connection: redis.Redis,
                                                       default_version: str, start_workers: StartWorkers,
                                                       digit_folder: MakeFolder) -> None:
    folder, _ = digit_folder(10)
    start_workers(1)
    classify(connection, folder)
    port = free_port()
    dashboard = subprocess.Popen([str(Path(sys.executable).parent / "rq-dashboard"), "--redis-url", redis_url,
                                  "--json", "--port", str(port), "--bind", "127.0.0.1"],
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        def get(path: str) -> Any:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/0/data/{path}", timeout=5) as response:
                return json.loads(response.read())

        deadline = time.monotonic() + 30
        while True:
            try:
                queues = get("queues.json")["queues"]
                break
            except OSError:
                assert time.monotonic() < deadline, "rq-dashboard did not start"
                time.sleep(0.2)
        [queue] = [q for q in queues if q["name"] == keys.DEFAULT_QUEUE]
        assert queue["finished_job_registry_count"] == 1
        [worker] = get("workers.json")["workers"]
        assert worker["queues"] == [keys.DEFAULT_QUEUE] and worker["successful_job_count"] == 1
        run_id = text(connection.zrange(keys.RUNS, 0, 0)[0])
        job = get(f"job/{run_id}_b0.json")
        assert job["status"] == "finished" and "classify run" in job["description"]
    finally:
        dashboard.terminate()
        dashboard.wait(timeout=10)


def test_oversized_job_is_refused_and_the_worker_survives(connection: redis.Redis, default_version: str,
                                                          start_workers: StartWorkers,
                                                          digit_folder: MakeFolder) -> None:
    pool = start_workers(1)
    job = batch_queue(connection).enqueue("worker.jobs.classify_batch", "x" * 5_000_000, 0, 60)
    registry = FailedJobRegistry(queue=batch_queue(connection))
    wait_for(lambda: job.id in registry.get_job_ids(), what="the oversized job to fail")
    result = job.latest_result()
    assert result is not None and result.exc_string is not None
    assert "over the limit of 65536" in result.exc_string
    assert pool.process.poll() is None
    folder, _ = digit_folder(5)
    assert len(classify(connection, folder)) == 5


def test_an_idle_pool_stops_within_seconds_every_time(redis_url: str, connection: redis.Redis) -> None:
    """RQ's command listener slept 60 s at a time, and stopping a worker waits for it: an idle
    worker sometimes took 60 s to stop on SIGTERM (past compose's grace period)."""
    for attempt in range(6):
        pool = WorkerPool(redis_url, 1)
        pool.wait_registered(connection, 1)
        time.sleep(0.3 * attempt)  # stop it at different points of its listener's sleep
        started = time.monotonic()
        os.killpg(pool.process.pid, signal.SIGTERM)
        assert pool.process.wait(timeout=30) == 0
        assert time.monotonic() - started < 5, f"stop {attempt} took {time.monotonic() - started:.1f} s"
    wait_for(lambda: connection.scard("rq:workers") == 0, what="workers to deregister")


def test_a_shared_folder_run_is_read_from_the_workers_files_root(
        tmp_path: Path, redis_url: str, connection: redis.Redis, default_version: str, start_workers: StartWorkers,
        mnist_test: Digits) -> None:
    """`run --shared-root`: the payloads carry paths, not bytes, and workers read the files under
    their --files-root; what they must not read fails alone, saying why."""
    share = tmp_path / "share"
    truth = write_pngs(share / "scans" / "today", mnist_test[0][:12], mnist_test[1][:12])
    nested = {f"sub/{name}": label for name, label in
              write_pngs(share / "scans" / "today" / "sub", mnist_test[0][20:22], mnist_test[1][20:22]).items()}
    (tmp_path / "secret.png").write_bytes((share / "scans" / "today" / "00000.png").read_bytes())
    big = share / "scans" / "today" / "big.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (200, 200), dtype=np.uint8)).save(big)
    (share / "scans" / "today" / "out.png").symlink_to(tmp_path / "secret.png")  # out of the folder
    settings = runs.Settings(batch_size=16, retries=0, shared_folder="scans/today", max_bytes=5000)
    run_id = send_folder(connection, share / "scans" / "today", settings)
    payload = connection.hgetall(keys.batch(run_id, 0))
    assert set(payload) == {b"paths", b"options", b"folder", b"results", b"13:error"}  # no bytes; the link is refused
    assert json.loads(payload[b"options"]) == {"max_bytes": 5000}  # the run's limit, applied by the workers
    assert payload[b"folder"] == b"scans/today"
    paths = json.loads(payload[b"paths"])
    paths[paths.index("00001.png")] = "../../../secret.png"  # a payload written by hand cannot climb out ...
    paths[paths.index("sub/00001.png")] = "evil/secret.png"  # ... nor go through a linked folder
    connection.hset(keys.batch(run_id, 0), "paths", json.dumps(paths))
    (share / "scans" / "today" / "evil").symlink_to(tmp_path)
    today = share / "scans" / "today"
    os.remove(today / "00002.png")
    os.mkfifo(today / "00002.png")  # a pipe in a file's place is refused, not waited on
    os.rename(today / "00003.png", today / "moved.png")
    (today / "00003.png").symlink_to("moved.png")  # a link inside the folder is followed ...
    os.remove(today / "00004.png")
    (today / "00004.png").symlink_to(tmp_path / "secret.png")  # ... one out of it is not
    start_workers(1, ["--files-root", str(share), "--max-bytes", "100000"])  # the run's 5000 is lower
    records = {result.path: result.record for result in follow(connection, run_id)}
    assert records["../../../secret.png"]["error"].startswith(
        "../../../secret.png: refused: it would be read outside the run's folder")
    assert records["00002.png"]["error"] == "00002.png: not a regular file (a pipe, socket or device is never read)"
    assert records["big.png"]["error"] == "big.png: file is over the size limit of 5000 bytes"
    assert records["out.png"]["error"] == "out.png: symbolic link points outside the enqueued folder; not followed"
    assert records["00004.png"]["error"].startswith("00004.png: refused: it would be read outside the run's folder")
    assert records["evil/secret.png"]["error"].startswith(
        "evil/secret.png: refused: it would be read outside the run's folder")
    in_sub = records["sub/00000.png"]  # a subfolder's file, its folder resolved once a batch
    assert in_sub["error"] is None and in_sub["digits"] == str(nested["sub/00000.png"])
    refused = ("00001.png", "00002.png", "00004.png")
    read = {path: r for path, r in records.items() if path in truth and path not in refused}
    assert len(read) == 9 and all(r["error"] is None and r["digits"] == str(truth[p]) for p, r in read.items())


def test_a_worker_without_files_root_fails_each_image_of_a_shared_folder_run_saying_why(
        tmp_path: Path, redis_url: str, connection: redis.Redis, default_version: str, start_workers: StartWorkers,
        digit_folder: MakeFolder) -> None:
    folder, truth = digit_folder(3)
    run_id = send_folder(connection, folder, runs.Settings(batch_size=3, shared_folder="."))
    start_workers(1)
    records = {result.path: result.record for result in follow(connection, run_id)}
    assert sorted(records) == sorted(truth)
    assert all(r["error"] == f"{p}: the run sends paths in a shared folder (enqueued with --shared-root), and this "
               "worker reads none: start it with --files-root" for p, r in records.items())
    warned = subprocess.run([sys.executable, "-m", "producer", "enqueue", str(folder), "--shared-root", str(folder),
                             "--redis-url", redis_url], cwd=ROOT, capture_output=True, text=True, timeout=60,
                            check=True)  # sending by path to such a worker is warned of first
    warning = " ".join(warned.stderr.split())
    assert "1 of the 1 live workers on queue digits read no shared folder (--files-root)" in warning


def test_a_worker_renews_what_it_tells_status_with_its_heartbeat(
        tmp_path: Path, connection: redis.Redis, default_version: str, start_workers: StartWorkers,
        digit_folder: MakeFolder) -> None:
    """The model a worker serves and the shared folder it reads expire with its registration (a
    worker killed outright leaves none behind) and come back with its next heartbeat after a
    Redis that lost them: at the latest around its next job."""
    share = tmp_path / "share"
    share.mkdir()
    start_workers(1, ["--files-root", str(share)])
    name = text(next(iter(connection.smembers("rq:workers")))).removeprefix("rq:worker:")
    said = (keys.worker_model(name), keys.worker_files(name))
    wait_for(lambda: all(connection.exists(key) for key in said), what="the worker's model and files keys")
    assert [text(v) for v in connection.mget(said)] == [default_version, os.path.realpath(share)]
    assert all(0 < connection.ttl(key) <= WORKER_TTL + JOB_TIMEOUT + 60 for key in said)  # the registration's TTL
    connection.delete(*said)  # as a Redis restarted without its AOF would have lost them
    folder, _truth = digit_folder(2)
    classify(connection, folder)
    wait_for(lambda: all(connection.exists(key) for key in said), what="the keys to come back")
    assert [text(v) for v in connection.mget(said)] == [default_version, os.path.realpath(share)]


def test_run_shared_root_with_two_senders_and_a_folder_outside_it_is_refused(
        tmp_path: Path, redis_url: str, connection: redis.Redis, default_version: str, start_workers: StartWorkers,
        mnist_test: Digits) -> None:
    share = tmp_path / "share"
    truth = write_pngs(share / "scans", mnist_test[0][:20], mnist_test[1][:20])
    start_workers(1, ["--files-root", str(share)])
    command = [sys.executable, "-m", "producer", "run", "--redis-url", redis_url, "--batch-size", "8"]
    done = subprocess.run([*command, str(share / "scans"), "--shared-root", str(share), "--jobs", "2"], cwd=ROOT,
                          capture_output=True, text=True, timeout=120, check=True)  # senders take the run's settings
    records = [json.loads(line) for line in done.stdout.splitlines()]
    assert {r["path"]: r["digits"] for r in records} == {p: str(label) for p, label in truth.items()}
    status = subprocess.run([sys.executable, "-m", "producer", "status", done.stderr.split()[1], "--json",
                             "--redis-url", redis_url], cwd=ROOT, capture_output=True, text=True, timeout=60,
                            check=True)
    report = json.loads(status.stdout)
    assert report["run"]["shared_folder"] == "scans" and report["workers"][0]["files_root"] == os.path.realpath(share)
    assert "read no shared folder" not in done.stderr
    refused = subprocess.run([*command, str(share / "scans"), "--shared-root", str(tmp_path / "elsewhere")],
                             cwd=ROOT, capture_output=True, text=True, timeout=60, check=False)
    assert refused.returncode == 2 and "does not exist" in refused.stderr  # click checks the root exists
    (tmp_path / "elsewhere").mkdir()
    refused = subprocess.run([*command, str(share / "scans"), "--shared-root", str(tmp_path / "elsewhere")],
                             cwd=ROOT, capture_output=True, text=True, timeout=60, check=False)
    assert refused.returncode == 2 and "is not inside --shared-root" in refused.stderr
