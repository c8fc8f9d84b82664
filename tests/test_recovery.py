"""Abandoned-job recovery against real Redis and RQ: the states a dead worker leaves behind are
reached with RQ's own worker methods, then swept (worker kills for real are in test_chaos.py)."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import redis
from rq import Queue, Worker
from rq.job import Job, JobStatus

from digits import keys, recovery
from digits.connection import connect
from digits.defaults import MAX_ABANDONED
from digits.queueing import batch_queue, job_id
from digits.recovery import Lease, recover_abandoned
from digits.results import result_record, results_count, store_results
from producer.batches import enqueue_batch
from producer.files import walk
from producer.runs import Settings, create_run
from producer.sending import Sender
from tests.conftest import ROOT, AclRedis, MakeFolder, WorkerPool, stored_results


def one_batch(connection: redis.Redis, tmp_path: Path) -> tuple[str, Queue, Job]:
    """A run of one stored batch (two files), its job queued."""
    (tmp_path / "a.png").write_bytes(b"not really a png")
    (tmp_path / "b.png").write_bytes(b"nor this")
    settings = Settings(batch_size=2)
    run_id = create_run(connection, tmp_path, settings)
    queue = batch_queue(connection)
    enqueue_batch(connection, queue, run_id, list(walk(tmp_path, settings.extensions, ())), settings)
    job = Job.fetch(job_id(run_id, 0), connection=connection, serializer=queue.serializer)
    return run_id, queue, job


def ghost(connection: redis.Redis, queue: Queue, name: str) -> Worker:
    """A registered worker that will never run what it takes, like one about to be SIGKILLed."""
    worker = Worker([queue], connection=connection, name=name, serializer=queue.serializer)
    worker.register_birth()
    return worker


def pop(worker: Worker, queue: Queue) -> Job:
    taken = Queue.dequeue_any([queue], None, connection=queue.connection, serializer=queue.serializer)
    assert taken is not None
    return taken[0]


def start(worker: Worker, queue: Queue) -> Job:
    """Pop a job and mark it started, as a worker does before running it."""
    job = pop(worker, queue)
    worker.prepare_execution(job)
    worker.prepare_job_execution(job, remove_from_intermediate_queue=True)
    return job


def test_started_job_of_a_dead_worker_goes_back_to_the_front(connection: redis.Redis, tmp_path: Path) -> None:
    _run, queue, job = one_batch(connection, tmp_path)
    start(ghost(connection, queue, "dead"), queue)
    assert job.get_status() == JobStatus.STARTED and queue.count == 0

    assert recover_abandoned(connection, queue) == [job.id]
    assert queue.get_job_ids() == [job.id]
    assert job.get_status() == JobStatus.QUEUED
    assert job.get_meta()["abandoned"] == 1
    assert recover_abandoned(connection, queue) == []  # claimed once


def test_a_live_lease_protects_the_job_it_names(connection: redis.Redis, tmp_path: Path) -> None:
    _run, queue, job = one_batch(connection, tmp_path)
    lease = Lease(connection, "alive").start()
    try:
        lease.hold(job.id)
        start(ghost(connection, queue, "alive"), queue)
        assert recover_abandoned(connection, queue) == []
        assert job.get_status() == JobStatus.STARTED
        lease.hold("some-other-job")  # the worker moved on: this one was left behind
        assert recover_abandoned(connection, queue) == [job.id]
    finally:
        lease.end()
    assert not connection.exists(keys.worker_lease("alive"))


def test_job_popped_but_never_started_is_requeued_after_a_grace(connection: redis.Redis, tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    _run, queue, job = one_batch(connection, tmp_path)
    pop(ghost(connection, queue, "died-after-pop"), queue)
    assert connection.lrange(queue.intermediate_queue_key, 0, -1) == [job.id.encode()]
    assert recover_abandoned(connection, queue) == []  # a live worker starts it within milliseconds
    assert connection.hexists(keys.stranded(queue.name), job.id)

    monkeypatch.setattr(recovery, "STRANDED_SECONDS", 0.0)
    time.sleep(0.01)
    assert recover_abandoned(connection, queue) == [job.id]
    assert queue.get_job_ids() == [job.id]
    assert connection.llen(queue.intermediate_queue_key) == 0
    assert not connection.exists(keys.stranded(queue.name))


def test_a_batch_that_keeps_killing_workers_fails_with_its_reason(connection: redis.Redis,
                                                                  tmp_path: Path) -> None:
    run_id, queue, job = one_batch(connection, tmp_path)
    for death in range(1, MAX_ABANDONED + 1):
        start(ghost(connection, queue, f"victim-{death}"), queue)
        recover_abandoned(connection, queue)
    results = stored_results(connection, run_id)
    assert set(results) == {"a.png", "b.png"}
    assert all(f"died {MAX_ABANDONED} times" in r["error"] for r in results.values())
    assert not connection.exists(job.key) and queue.count == 0


def test_producer_re_sends_a_job_that_is_nowhere(connection: redis.Redis, tmp_path: Path) -> None:
    """A sweeper that dies between claiming a job and requeueing it leaves it in no queue or registry."""
    run_id, queue, job = one_batch(connection, tmp_path)
    sender = Sender(connection, run_id, tmp_path, Settings(batch_size=2))
    sender.adopt_open_batches()
    connection.lrem(queue.key, 1, job.id)
    sender.sweep()
    assert queue.count == 0  # once could be a job in flight between two places
    sender.sweep()
    assert queue.get_job_ids() == [job.id]
    sender.sweep()
    assert queue.get_job_ids() == [job.id]  # found again: not sent twice


def test_producer_never_re_sends_a_batch_that_finished_during_its_sweep(connection: redis.Redis,
                                                                       tmp_path: Path) -> None:
    """A batch whose payload was there when the producer last looked, and whose job then finished:
    its results are stored, nothing is missing (with no fault at all, the producer used to log
    'finished but its results are missing' and enqueue it again)."""
    run_id, queue, _job = one_batch(connection, tmp_path)
    sender = Sender(connection, run_id, tmp_path, Settings(batch_size=2))
    sender.adopt_open_batches()
    worker = ghost(connection, queue, "quick")
    finished = start(worker, queue)
    store_results(connection, run_id, 0, [result_record(path, 0) for path in ("a.png", "b.png")], 60)
    finished.set_status(JobStatus.FINISHED)
    sender.sweep()
    assert queue.count == 0 and 0 not in sender.open


@pytest.mark.parametrize("role", ["producer", "worker"])
def test_sweeps_run_under_the_documented_acl_users(acl_redis: AclRedis, acl_connection: redis.Redis,
                                                    tmp_path: Path, role: str,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """A started job whose execution record is gone, and a popped job with no worker left: the
    sweeps used to read a placeholder key `-` for them, which the producer and worker users of
    deploy/users.acl may not read (NoPermissionError crashed the producer and every sweep)."""
    (tmp_path / "started").mkdir()
    (tmp_path / "popped").mkdir()
    _run, admin_queue, _job = one_batch(acl_connection, tmp_path / "started")
    started = start(ghost(acl_connection, admin_queue, "dead"), admin_queue)
    acl_connection.delete(*acl_connection.keys(f"rq:execution:{started.id}:*"))  # expired, say
    _run, _queue, popped = one_batch(acl_connection, tmp_path / "popped")
    gone = ghost(acl_connection, admin_queue, "gone")
    pop(gone, admin_queue)
    gone.register_death()
    monkeypatch.setattr(recovery, "STRANDED_SECONDS", 0.0)

    sweeper = connect(acl_redis.url_for(role))
    queue = batch_queue(sweeper)
    assert recover_abandoned(sweeper, queue) == [started.id]  # stranded ones wait a sweep: first seen now
    assert recover_abandoned(sweeper, queue) == [popped.id]
    assert set(queue.get_job_ids()) == {started.id, popped.id}
    assert acl_redis.refusals() == []


def test_resume_survives_corrupt_payloads_and_accounts_for_every_file(
        redis_url: str, connection: redis.Redis, default_version: str, digit_folder: MakeFolder,
        start_workers: Callable[..., WorkerPool]) -> None:
    """A `paths` field that is not JSON, or a payload key of the wrong type, crashed `run --resume`
    with a traceback, and `paths=[1,2,3,4]` ended with rc 0, bogus paths and real files missing.
    The producer drops such payloads and sends their files again: every file, exactly once."""
    folder, truth = digit_folder(40)
    settings = Settings(batch_size=4, retries=0)
    run_id = create_run(connection, folder, settings)
    Sender(connection, run_id, folder, settings).send_pass()  # no worker yet: ten batches wait
    connection.hset(keys.batch(run_id, 0), "paths", "{not json")
    connection.hset(keys.batch(run_id, 1), "paths", "[1, 2, 3, 4]")
    connection.delete(keys.batch(run_id, 2))
    connection.set(keys.batch(run_id, 2), "a string, not a hash")
    start_workers(1)
    done = subprocess.run([sys.executable, "-m", "producer", "run", "--resume", run_id, "--redis-url", redis_url],
                          cwd=ROOT, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr
    paths = [json.loads(line)["path"] for line in done.stdout.splitlines()]
    assert sorted(paths) == sorted(truth)  # each once, none bogus
    assert set(stored_results(connection, run_id)) == set(truth)
    assert results_count(connection, run_id) == len(truth)
