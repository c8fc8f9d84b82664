"""The RQ queue that carries batch jobs, configured the same way for every component."""

from __future__ import annotations

import redis
from rq import Queue
from rq.serializers import JSONSerializer

from digits import keys

JOB_FUNCTION = "worker.jobs.classify_batch"  # the only function a worker will run


def batch_queue(connection: redis.Redis, name: str = keys.DEFAULT_QUEUE) -> Queue:
    """JSON-serialised: nothing on the queue path is ever pickled."""
    return Queue(name, connection=connection, serializer=JSONSerializer)


def job_id(run_id: str, batch: int) -> str:
    """RQ job ids allow letters, digits, dashes and underscores only."""
    return f"{run_id}_b{batch}"


def parse_job_id(value: str) -> tuple[str, int] | None:
    run_id, _, batch = value.rpartition("_b")
    return (run_id, int(batch)) if run_id and batch.isdigit() else None
