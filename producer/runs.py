"""A run's metadata: the folder and settings it was created with, kept in its Redis hash.

A run is one folder sent as batches; everything else about it (its results, its events, its
batches) hangs off its id under the keys in digits/keys.py.
"""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import redis

from digits import defaults, keys
from digits.connection import text_hash


class RunError(RuntimeError):
    """A run cannot be found or driven; the message says why."""


@dataclass(frozen=True)
class Settings:
    """How a folder is cut and paced; the defaults are measured in docs/benchmarks.md."""

    batch_size: int = defaults.BATCH_SIZE
    window: int = defaults.WINDOW
    result_ttl: int = defaults.RESULT_TTL
    queue: str = keys.DEFAULT_QUEUE
    max_bytes: int = defaults.MAX_BYTES
    job_timeout: int = defaults.JOB_TIMEOUT
    retries: int = defaults.JOB_RETRIES
    extensions: tuple[str, ...] = defaults.EXTENSIONS
    globs: tuple[str, ...] = ()
    expect: str | None = None  # digits per image, as a count ("5") or a pattern ("#####-####")
    review_threshold: float | None = None  # None: each worker's own threshold

    def reading_options(self) -> dict[str, Any]:
        """What the worker needs to know about reading this run's images (stored with each batch)."""
        return {k: v for k, v in (("expect", self.expect), ("review_threshold", self.review_threshold))
                if v is not None}


def new_run_id() -> str:
    return f"{datetime.now(UTC):%Y%m%d-%H%M%S}-{uuid.uuid4().hex[:6]}"


def create_run(connection: redis.Redis, root: Path, settings: Settings, run_id: str | None = None) -> str:
    run_id = run_id or new_run_id()
    with connection.pipeline(transaction=True) as pipe:
        pipe.hset(keys.run(run_id), mapping={
            "root": str(root.resolve()), "created_at": time.time(), "status": "enqueueing", "total": 0,
            "batches": 0, "batch_size": settings.batch_size, "window": settings.window,
            "queue": settings.queue, "result_ttl": settings.result_ttl, "settings": json.dumps(asdict(settings)),
        })
        pipe.expire(keys.run(run_id), settings.result_ttl)
        pipe.zadd(keys.RUNS, {run_id: time.time()})
        pipe.execute()
    return run_id


def run_meta(connection: redis.Redis, run_id: str) -> dict[str, str]:
    """The run's hash, decoded; RunError if there is no such run."""
    meta = text_hash(connection.hgetall(keys.run(run_id)))
    if not meta:
        raise RunError(f"no such run: {run_id} (never created, or its results expired)")
    return meta


def stored_settings(connection: redis.Redis, run_id: str) -> tuple[Path, Settings]:
    """The folder and settings a run was created with, so `--resume` sends the rest the same way."""
    meta = run_meta(connection, run_id)
    if "settings" not in meta:
        raise RunError(f"run {run_id} cannot be resumed: it was made by `watch` or an older version")
    fields = json.loads(meta["settings"])
    fields["extensions"], fields["globs"] = tuple(fields["extensions"]), tuple(fields["globs"])
    return Path(meta["root"]), Settings(**fields)
