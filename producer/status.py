"""What `digits-producer status` reports: the queue, the live workers, the model, a run's progress."""

from __future__ import annotations

import json
import time
from typing import Any

import redis
from rq import Worker
from rq.worker import BaseWorker

from digits import keys
from digits.connection import redact, text, text_hash
from digits.queueing import batch_queue, parse_job_id
from digits.results import results_count
from producer.runs import run_meta


def run_status(connection: redis.Redis, run_id: str) -> dict[str, Any]:
    """Counts for one run: images total, queued, in progress, done, failed, flagged for review,
    keyed at a keying station, and throughput."""
    meta = run_meta(connection, run_id)
    total = int(meta.get("total", 0))
    finished = results_count(connection, run_id)
    failed = int(connection.scard(keys.run_failed(run_id)))
    review = int(connection.scard(keys.run_review(run_id)))
    keyed = int(connection.hlen(keys.run_keyed(run_id)))  # by keying stations (`review RUN`)
    queue = batch_queue(connection, meta.get("queue", keys.DEFAULT_QUEUE))
    started = sum(1 for j in queue.started_job_registry.get_job_ids()
                  if (p := parse_job_id(j)) is not None and p[0] == run_id)
    in_progress = min(started * int(meta.get("batch_size", 1)), total - finished)
    created = float(meta.get("created_at", time.time()))
    last: list[Any] = connection.xrevrange(keys.run_events(run_id), count=1)  # type: ignore[assignment]
    finished_at = int(text(last[0][0]).split("-")[0]) / 1000 if last else created
    elapsed = max(finished_at - created, 1e-9)
    return {
        "run": run_id, "root": meta.get("root"), "status": meta.get("status"),
        "shared_folder": json.loads(meta.get("settings", "{}")).get("shared_folder"),  # read by workers from there
        "complete": meta.get("status") == "enqueued" and finished >= total,
        "total": total, "queued": total - finished - in_progress, "in_progress": in_progress,
        "done": finished - failed, "failed": failed, "review": review, "keyed": keyed,
        "images_per_second": round(finished / elapsed, 1) if finished else 0.0,
        "senders": senders(connection, run_id, int(meta.get("shares", 1))),
    }


def senders(connection: redis.Redis, run_id: str, shares: int) -> dict[str, str | None]:
    """Which producer (host:pid) sends each share of the run now, from the shares' leases
    (producer/leases.py); None for a share nobody sends: finished, or its producer stopped."""
    holders = connection.mget([keys.run_sender(run_id, part) for part in range(shares)])
    return {f"{part + 1}/{shares}": text(holder).rsplit(":", 1)[0] if holder else None
            for part, holder in enumerate(holders)}


def workers_reading_no_share(connection: redis.Redis, queue: str) -> tuple[int, int]:
    """How many of the queue's live workers have no --files-root, of how many: a run sent by path
    fails the images those take."""
    names = [worker.name for worker in Worker.all(queue=batch_queue(connection, queue))]
    roots = connection.mget([keys.worker_files(name) for name in names]) if names else []
    return sum(1 for root in roots if root is None), len(names)


def worker_report(connection: redis.Redis, worker: BaseWorker) -> dict[str, Any]:
    """One live worker: its state, the model it serves and its totals."""
    model, files_root = connection.mget([keys.worker_model(worker.name), keys.worker_files(worker.name)])
    stats = text_hash(connection.hgetall(keys.worker_stats(worker.name)))
    batches, images = int(stats.get("batches", 0)), int(stats.get("images", 0))
    return {
        "name": worker.name, "state": str(worker.get_state()), "model": text(model) if model else None,
        "files_root": text(files_root) if files_root else None,
        "batches": batches, "images": images, "errors": int(stats.get("failed", 0)),
        "average_batch": round(images / batches, 1) if batches else None,
        "average_batch_ms": round(float(stats["seconds"]) * 1000 / batches, 1) if batches else None,
    }


def status_report(connection: redis.Redis, redis_url: str, queue: str, run_id: str | None) -> dict[str, Any]:
    """Everything `status` shows, as plain data; the latest run's progress if no run is named."""
    rq_queue = batch_queue(connection, queue)
    if run_id is None:
        latest = connection.zrevrange(keys.RUNS, 0, 0)
        run_id = text(latest[0]) if latest else None
    current = connection.get(keys.MODEL_CURRENT)
    return {
        "redis": redact(redis_url),
        "queue": {"name": queue, "waiting": rq_queue.count, "running": rq_queue.started_job_registry.count,
                  "failed": rq_queue.failed_job_registry.count},
        "current_model": text(current) if current is not None else None,
        "workers": [worker_report(connection, worker) for worker in Worker.all(queue=rq_queue)],
        "run": run_status(connection, run_id) if run_id else None,
    }
