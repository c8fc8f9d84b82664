"""One batch of a run: its payload (the files' bytes, or their paths on a shared folder) and its
RQ job, stored together. The bytes go in one field, `images`, with their `sizes`: Redis stores
and serves one value a batch instead of one field an image (which cost it a fifth of its CPU
on a run of MNIST digits). A batch stops taking files once they hold --batch-bytes, so batches
of large files (crops, scans) hold fewer: by the bytes read, or for a shared folder, which the
producer never reads, by each file's size on disk.
"""

from __future__ import annotations

import json
import os

import redis
from rq import Queue, Retry

from digits import defaults, keys
from digits.payload import BY_BATCH, RESULTS_FIELD
from digits.queueing import JOB_FUNCTION, job_id
from producer.files import Found, read
from producer.runs import Settings


def enqueue_batch(connection: redis.Redis, queue: Queue, run_id: str, chunk: list[Found], settings: Settings,
                  most_bytes: int | None = None) -> tuple[int, int]:
    """Store one batch's file bytes (or why a file cannot be read) and enqueue its job; return the
    batch's index, the run's next (taken atomically: producers sharing a run never take the same),
    and how many files of chunk it took: with most_bytes, it stops once their bytes reach that (a
    run of a shared folder stores the folder instead of the bytes: workers read the files there)."""
    payload: dict[str, bytes | str] = {RESULTS_FIELD: BY_BATCH}  # this producer reads results a batch at a time
    if options := settings.reading_options():
        payload["options"] = json.dumps(options)
    if settings.shared_folder is not None:
        payload["folder"] = settings.shared_folder
    held = 0
    contents: list[bytes] = []
    sizes: list[int] = []
    for position, found in enumerate(chunk):
        if most_bytes is not None and held >= most_bytes:
            chunk = chunk[:position]
            break
        if settings.shared_folder is not None:  # the workers read the file: only its size counts here
            if found.problem:
                payload[f"{position}:error"] = found.problem
            else:
                held += size_on_disk(found.path)
            continue
        data, problem = read(found, settings.max_bytes)
        if data is None:
            payload[f"{position}:error"] = problem or "unreadable"
            sizes.append(0)
        else:
            contents.append(data)
            sizes.append(len(data))
            held += len(data)
    payload["paths"] = json.dumps([f.relative for f in chunk])
    if settings.shared_folder is None:
        payload["images"] = b"".join(contents)
        payload["sizes"] = json.dumps(sizes)
    index = int(connection.hincrby(keys.run(run_id), "batches", 1)) - 1
    with connection.pipeline(transaction=True) as pipe:  # payload and job land together, in one round trip
        pipe.multi()  # explicit, as RQ expects of a pipeline it is handed
        pipe.hset(keys.batch(run_id, index), mapping=payload)  # type: ignore[arg-type]
        pipe.expire(keys.batch(run_id, index), settings.result_ttl)
        enqueue_job(queue, run_id, index, len(chunk), settings, pipe)
        pipe.execute()
    return index, len(chunk)


def enqueue_job(queue: Queue, run_id: str, index: int, images: int, settings: Settings,
                pipeline: redis.client.Pipeline | None = None) -> None:
    """The job of a stored batch; enqueueing it again (same id) replaces the lost or stale one.

    With a pipeline, the job is only queued on it: it reaches Redis when the caller executes it."""
    queue.enqueue(
        JOB_FUNCTION, args=(run_id, index, settings.result_ttl), job_id=job_id(run_id, index),
        description=f"classify run {run_id} batch {index} ({images} images)",
        job_timeout=settings.job_timeout, result_ttl=defaults.JOB_RESULT_TTL, failure_ttl=settings.result_ttl,
        retry=Retry(max=settings.retries) if settings.retries else None, pipeline=pipeline,
    )


def size_on_disk(path: str) -> int:
    """A file's size, unread (0 if it cannot be seen: the worker that reads it says why)."""
    try:
        return os.stat(path).st_size
    except OSError:
        return 0
