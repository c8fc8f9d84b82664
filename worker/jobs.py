"""The one RQ job of the system: classify a batch of images and store their results."""

from __future__ import annotations

import logging
import socket
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import redis
from rq import get_current_job

from digits import keys
from digits.arrays import Floats
from digits.connection import text
from digits.files import UnsafePath, inside, read_in_folder
from digits.images import FIELD, ImageError, decode
from digits.pattern import Pattern, parse_pattern
from digits.payload import batch_images, batch_options, batch_paths
from digits.readers import read_images
from digits.reading import Reading
from digits.results import Record, result_record, store_results
from digits.theta import BLOCK_ROWS
from worker import metrics
from worker.serving import Loaded, Serving

log = logging.getLogger(__name__)
DECODED_PIXELS = BLOCK_ROWS * FIELD * FIELD  # decoded pixels read together: a default batch of MNIST digits, ~33 crops


def classify_batch(run_id: str, batch: int, result_ttl: int, *, serving: Serving) -> dict[str, int]:
    """Decode, cut and classify one batch and store its results; one bad image never fails the
    others. `serving` comes from the worker process (worker/worker.py), not from the queue."""
    started = time.perf_counter()
    job = get_current_job()
    if job is None:
        raise RuntimeError("classify_batch must run inside an RQ job")
    connection = job.connection
    with connection.pipeline(transaction=False) as pipe:  # one round trip: the batch and the model pointer
        pipe.hgetall(keys.batch(run_id, batch))
        pipe.get(keys.MODEL_CURRENT)
        payload, current = pipe.execute()
    if not payload:  # already finished by an earlier attempt: results are keyed by image
        return {"images": 0, "failed": 0}
    paths = batch_paths(payload.get(b"paths"), run_id, batch)  # PayloadError fails the job, naming what is wrong
    contents = batch_images(payload.get(b"images"), payload.get(b"sizes"), len(paths), run_id, batch)
    worker = job.worker_name or socket.gethostname()
    loaded = serving.models.serve(connection, text(current) if current else None, worker)  # it may have moved
    options = batch_options(payload.get(b"options"), run_id, batch)
    threshold = float(options.get("review_threshold", serving.review_threshold))
    try:
        expect = parse_pattern(options["expect"]) if options.get("expect") else None
    except ValueError as exc:  # the producer checks it; a job written by hand may not
        records = [result_record(path, batch, error=f"{path}: {exc}", worker=worker) for path in paths]
    else:
        run_limit = options.get("max_bytes")  # the run's --max-bytes, within the worker's own
        max_bytes = min(serving.max_bytes, run_limit) if isinstance(run_limit, int) else serving.max_bytes
        images = BatchImages(payload, paths, contents, *shared_run_folder(payload, serving), max_bytes)
        records = read_batch(images, batch, expect, threshold, serving.max_pixels, loaded, worker)
    store_results(connection, run_id, batch, records, result_ttl)
    failed = sum(1 for record in records if record["error"] is not None)
    record_batch(connection, worker, len(records), failed, time.perf_counter() - started, loaded.version)
    log.info("batch done", extra={"run_id": run_id, "batch": batch, "images": len(records), "failed": failed,
                                  "seconds": round(time.perf_counter() - started, 4),
                                  "model_version": loaded.version, "worker": worker})
    return {"images": len(records), "failed": failed}


def read_batch(images: BatchImages, batch: int, expect: Pattern | None, threshold: float,
               max_pixels: int, loaded: Loaded, worker: str) -> list[Record]:
    """Each image's result: failed alone if it cannot be decoded or holds no code. Images are
    decoded and read about DECODED_PIXELS at a time and let go (single digits of one size
    normalised together, their candidates read in one product): a batch of long crops (40
    candidates each) never holds all its fields at once."""
    records: list[Record] = []
    decoded: list[tuple[int, Floats]] = []
    read_paths: list[str] = []
    readings: list[Reading] = []
    pixels = 0
    paths = images.paths
    for index, path in enumerate(paths):
        try:
            decoded.append((index, decode(images.data(index), max_pixels)))
            pixels += decoded[-1][1].size
        except ImageError as exc:
            records.append(result_record(path, batch, error=f"{path}: {exc}", worker=worker))
        if pixels >= DECODED_PIXELS or index == len(paths) - 1:
            greys = [grey for _, grey in decoded]
            for (image, _), found in zip(decoded, read_images(greys, loaded.model, loaded.strips, threshold, expect),
                                         strict=True):
                if isinstance(found, ImageError):
                    records.append(result_record(paths[image], batch, error=f"{paths[image]}: {found}", worker=worker))
                else:
                    read_paths.append(paths[image])
                    readings.append(found)
            decoded, pixels = [], 0
    return records + reading_records(read_paths, batch, readings, loaded.version, loaded.sha256, worker)


@dataclass(frozen=True)
class BatchImages:
    """Where a batch's image bytes are: in its payload, or, for a run of a shared folder, in files
    of the run's folder under this worker's --files-root (read here, bounded like the producer's)."""

    payload: dict[bytes, bytes]
    paths: list[str]
    contents: list[bytes] | None  # each image's bytes, cut from the payload's `images` (digits/payload.py)
    folder: Path | None  # a shared-folder run's folder under --files-root, resolved (os.path.realpath)
    folder_problem: str | None  # why this worker cannot read that folder: every image fails with it
    max_bytes: int
    folders: dict[str, str] = field(default_factory=dict)  # the run's subfolders, resolved once a batch

    def data(self, index: int) -> bytes:
        """The bytes of image `index`, or the ImageError that says why there are none."""
        problem = self.payload.get(f"{index}:error".encode())
        if problem is not None:
            raise ImageError(problem.decode())
        if self.folder_problem is not None:
            raise ImageError(self.folder_problem)
        if self.contents is not None:
            return self.contents[index]
        if self.folder is None:  # a batch stored before `images`, one field per image
            data = self.payload.get(str(index).encode())
            if data is None:
                raise ImageError(f"its bytes are missing from the batch payload (field {index})")
            return data
        try:
            read, why = read_in_folder(str(self.folder), self.paths[index], self.max_bytes, self.folders)
        except UnsafePath as exc:
            raise ImageError(f"refused: it would be read outside the run's folder ({exc})") from None
        if read is None:
            raise ImageError(why or "unreadable")
        return read


def shared_run_folder(payload: dict[bytes, bytes], serving: Serving) -> tuple[Path | None, str | None]:
    """The run's folder under --files-root when the payload names one (a shared-folder run), or why
    this worker cannot read it; (None, None) for a payload that carries its images' bytes."""
    folder = payload.get(b"folder")
    if folder is None:
        return None, None
    if serving.files_root is None:
        return None, ("the run sends paths in a shared folder (enqueued with --shared-root), and this worker "
                      "reads none: start it with --files-root")
    name = folder.decode("utf-8", "surrogateescape")
    try:
        found = Path(inside(serving.files_root, name))
    except UnsafePath as exc:
        return None, f"the run's folder is refused: {exc}"
    if not found.is_dir():
        return None, f"the run's folder {name} is not in --files-root {serving.files_root} here (is the share mounted?)"
    return found, None


def record_batch(connection: redis.Redis, worker: str, images: int, failed: int, seconds: float,
                 version: str) -> None:
    """The batch's counts in this process's Prometheus metrics and in the worker's totals in Redis."""
    metrics.record_batch(version, images, failed, seconds)
    with connection.pipeline(transaction=False) as pipe:
        stats = keys.worker_stats(worker)
        pipe.hincrby(stats, "batches", 1)
        pipe.hincrby(stats, "images", images)
        pipe.hincrby(stats, "failed", failed)
        pipe.hincrbyfloat(stats, "seconds", seconds)
        pipe.execute()


def reading_records(paths: list[str], batch: int, readings: list[Reading], model_version: str,
                    model_sha256: str, worker: str) -> list[Record]:
    """The results of images that were read: code, per-digit probabilities and boxes, rounded for
    JSON by NumPy, every image's at once (rounding each float in Python took a third of the time
    of a digit's result; rounding each image's array, a quarter)."""
    if not readings:
        return []
    rounded = np.round(np.concatenate([r.probabilities for r in readings]).astype(np.float64), 6).tolist()
    records, first = [], 0
    for path, reading in zip(paths, readings, strict=True):
        probabilities = rounded[first:first + len(reading.probabilities)]
        first += len(reading.probabilities)
        records.append(result_record(
            path, batch, code=reading.code, digits=reading.digits,
            confidence=round(reading.confidence, 6), review=reading.review,
            confidences=[max(row) for row in probabilities], probabilities=probabilities,
            boxes=[list(box) for box in reading.boxes],
            model_version=model_version, model_sha256=model_sha256, worker=worker,
        ))
    return records
