"""Abandoned-job recovery: a batch whose worker died mid-job runs again within seconds.

On its own, RQ is at-most-once here: the job of a SIGKILLed worker stays "started" until its
heartbeat runs out (job timeout + 60 s) and a maintenance pass (every 10 minutes) fails it.
Instead, every worker process holds a lease in Redis that names the job it is running, renewed
every LEASE_RENEW seconds with a TTL of LEASE_SECONDS. A started job whose worker's lease has
expired, or names another job, was abandoned: it goes back to the front of its queue. Sweeps
run in every worker supervisor and in the producer while it follows a run; a sweeper claims a
job by removing it from the started registry, so exactly one of them requeues it. A batch
abandoned MAX_ABANDONED times (an input that kills every worker that reads it) is finished with
failed results that say so, instead of taking workers down forever.

A worker can also die in the instant between popping a job off the queue and marking it
started; RQ parks such a job in its "intermediate" list and fails it after a minute. A sweep
requeues it once it has sat there STRANDED_SECONDS with no live worker's lease naming it.
"""

from __future__ import annotations

import logging
import threading
import time

import redis
from rq import Queue
from rq.exceptions import NoSuchJobError
from rq.job import Job, JobStatus
from rq.registry import FailedJobRegistry
from rq.worker import Worker
from rq.worker_registration import get_keys

from digits import keys
from digits.connection import text
from digits.defaults import LEASE_RENEW, LEASE_SECONDS, MAX_ABANDONED, RESULT_TTL, STRANDED_SECONDS
from digits.payload import PayloadError, batch_paths
from digits.queueing import batch_queue, parse_job_id
from digits.results import result_record, store_results

log = logging.getLogger(__name__)


class Lease:
    """A worker process's lease: renewed by a daemon thread, naming the job the process is running."""

    def __init__(self, connection: redis.Redis, worker_name: str) -> None:
        self.connection = connection
        self.key = keys.worker_lease(worker_name)
        self.job_id = ""
        self.stopped = threading.Event()

    def start(self) -> Lease:
        self.renew()
        threading.Thread(target=self.keep_renewing, name="lease", daemon=True).start()
        return self

    def hold(self, job_id: str) -> None:
        """Name the job now, before RQ marks it started, so a sweep never mistakes it for abandoned."""
        self.job_id = job_id
        self.renew()

    def renew(self) -> None:
        self.connection.set(self.key, self.job_id, ex=LEASE_SECONDS)

    def keep_renewing(self) -> None:
        while not self.stopped.wait(LEASE_RENEW):
            try:
                self.renew()
            except redis.RedisError as exc:  # Redis away: the lease lapses, the job will be recovered
                log.warning("cannot renew the worker lease: %s", exc)

    def end(self) -> None:
        self.stopped.set()
        self.connection.delete(self.key)


def recover_abandoned(connection: redis.Redis, queue: Queue) -> list[str]:
    """Requeue the jobs of this queue that a dead worker held (started or only popped); return their ids."""
    return recover_started(connection, queue) + recover_stranded(connection, queue)


def recover_started(connection: redis.Redis, queue: Queue) -> list[str]:
    """Started jobs whose worker no longer holds them."""
    registry = queue.started_job_registry
    entries = registry.get_job_and_execution_ids(cleanup=False)
    if not entries:
        return []
    workers = [connection.hget(f"rq:execution:{job_id}:{execution_id}", "worker_name")
               for job_id, execution_id in entries]
    leases = held_leases(connection, [text(w) for w in workers if w])
    recovered = []
    for (job_id, execution_id), worker in zip(entries, workers, strict=True):
        if worker and leases.get(text(worker)) == job_id:
            continue  # its worker is alive and running it
        if not connection.zrem(registry.key, f"{job_id}:{execution_id}"):
            continue  # it just finished, or another sweeper claimed it
        if requeue(connection, queue, job_id, JobStatus.STARTED):
            recovered.append(job_id)
    return recovered


def recover_stranded(connection: redis.Redis, queue: Queue) -> list[str]:
    """Jobs popped off the queue by a worker that died before marking them started."""
    popped = {text(job_id) for job_id in connection.lrange(queue.intermediate_queue_key, 0, -1)}
    seen_key = keys.stranded(queue.name)
    seen = {text(job_id): float(at) for job_id, at in connection.hgetall(seen_key).items()}
    if gone := [job_id for job_id in seen if job_id not in popped]:
        connection.hdel(seen_key, *gone)
    for job_id in popped - seen.keys():
        connection.hsetnx(seen_key, job_id, time.time())
    overdue = [job_id for job_id in popped & seen.keys() if time.time() - seen[job_id] > STRANDED_SECONDS]
    if not overdue:
        return []
    names = [key.removeprefix(Worker.redis_worker_namespace_prefix) for key in get_keys(queue)]
    held = set(held_leases(connection, names).values())
    recovered = []
    for job_id in overdue:
        if job_id in held or job_id in queue.started_job_registry:
            continue
        if not connection.lrem(queue.intermediate_queue_key, 1, job_id):
            continue  # another sweeper claimed it
        connection.hdel(seen_key, job_id)
        if requeue(connection, queue, job_id, JobStatus.QUEUED):
            recovered.append(job_id)
    return recovered


def held_leases(connection: redis.Redis, workers: list[str]) -> dict[str, str]:
    """Worker name -> the job its lease names, for the named workers whose lease is alive. Only
    lease keys are read: the ACL users of docs/security.md may read nothing else there."""
    if not workers:
        return {}
    leases = connection.mget([keys.worker_lease(name) for name in workers])
    return {name: text(lease) for name, lease in zip(workers, leases, strict=True) if lease}


def requeue(connection: redis.Redis, queue: Queue, job_id: str, expected: JobStatus) -> bool:
    """Put a claimed job back at the front of its queue, or fail its batch if it keeps killing workers."""
    try:
        job = queue.job_class.fetch(job_id, connection=connection, serializer=queue.serializer)
    except NoSuchJobError:
        return False
    if job.get_status() != expected:
        return False
    abandoned = int(job.meta.get("abandoned", 0)) + 1
    if abandoned >= MAX_ABANDONED:
        drop_poison(connection, job, abandoned)
        return False
    job.meta["abandoned"] = abandoned
    job.save_meta()
    queue.enqueue_job(job, at_front=True)
    log.warning("job %s was abandoned by its worker (%d time(s)); requeued", job_id, abandoned)
    return True


def drop_poison(connection: redis.Redis, job: Job, abandoned: int) -> None:
    """Give every image of a batch that keeps killing workers a failed result, and drop its job."""
    parsed = parse_job_id(job.id)
    if parsed is not None:
        run_id, batch = parsed
        fail_batch(connection, run_id, batch, f"the worker classifying batch {batch} died {abandoned} times "
                                              "(killed, or out of memory: one of its images may be poison)")
    log.error("job %s abandoned %d times: its images are reported as failed", job.id, abandoned)
    job.delete()


def reap_failed_batches(connection: redis.Redis, run_id: str, queue: Queue) -> int:
    """Give every image of a batch of this run whose job failed for good a failed result naming the reason."""
    reaped = 0
    for failed_id in FailedJobRegistry(queue=queue).get_job_ids():
        parsed = parse_job_id(failed_id)
        if parsed is not None and parsed[0] == run_id:
            reason = failure_reason(connection, failed_id)
            reaped += fail_batch(connection, run_id, parsed[1], f"batch {parsed[1]} failed in the worker: {reason}")
    return reaped


def fail_batch(connection: redis.Redis, run_id: str, batch: int, reason: str) -> bool:
    """Finish a batch that will not be classified: each of its images gets a result with the
    reason. False if its results are stored already (whoever finishes a batch first wins)."""
    try:
        raw_paths = connection.hget(keys.batch(run_id, batch), "paths")
        if raw_paths is None:
            return False
        paths = batch_paths(raw_paths, run_id, batch)
    except (PayloadError, redis.ResponseError) as exc:  # a corrupt payload names no files to fail: drop it,
        log.warning("%s: dropping the payload; its files are sent again", exc)  # the producer sends them again
        connection.delete(keys.batch(run_id, batch))
        return False
    ttl = int(connection.hget(keys.run(run_id), "result_ttl") or RESULT_TTL)
    records = [result_record(path, batch, error=f"{path}: {reason}") for path in paths]
    return store_results(connection, run_id, batch, records, ttl)


def failure_reason(connection: redis.Redis, failed_id: str) -> str:
    """The last line of a failed job's exception, or what is known if the job is gone."""
    try:
        job = Job.fetch(failed_id, connection=connection, serializer=batch_queue(connection).serializer)
        result = job.latest_result()
    except Exception as exc:  # the job hash may be gone; the failure still needs reporting
        return f"job {failed_id} failed ({exc.__class__.__name__})"
    message = (result.exc_string if result is not None else None) or "unknown error"
    lines = [line for line in message.strip().splitlines() if line.strip()]
    return lines[-1] if lines else "unknown error"
