"""Every Redis key name the system uses, in one place (documented in docs/redis-keys.md)."""

PREFIX = "digits"

# Model registry
MODEL_VERSIONS = f"{PREFIX}:model:versions"  # sorted set: version id -> publish time (unix seconds)
MODEL_CURRENT = f"{PREFIX}:model:current"  # string: the version id workers serve
MODEL_HISTORY = f"{PREFIX}:model:history"  # list: previous values of `current`, newest first

# RQ queue that carries batch jobs (RQ adds its own rq:* keys around it)
DEFAULT_QUEUE = "digits"

# Runs
RUNS = f"{PREFIX}:runs"  # sorted set: run id -> creation time


def model(version: str) -> str:
    """Hash with one field per model file, named without ".csv" (theta1 and theta2, or each layer
    file of an N-layer model: gzipped CSV bytes), manifest (JSON) and the trainer's PNGs
    plot:accuracy.png, plot:confusion.png, plot:worst.png."""
    return f"{PREFIX}:model:{version}"


def run(run_id: str) -> str:
    """Hash of a run's metadata: folder, totals, created/finished times, status, results (the count)."""
    return f"{PREFIX}:run:{run_id}"


def run_batch_results(run_id: str) -> str:
    """Hash: batch index -> the batch's results as JSON Lines, in the order of its event's paths."""
    return f"{PREFIX}:run:{run_id}:batch-results"


def run_results(run_id: str) -> str:
    """Hash: image path (relative to the folder) -> result JSON, for the images flagged for review
    or failed: those a person looks up by path. (Before 2026-12-07: every image's.)"""
    return f"{PREFIX}:run:{run_id}:results"


def run_failed(run_id: str) -> str:
    """Set of image paths whose result carries an error."""
    return f"{PREFIX}:run:{run_id}:failed"


def run_review(run_id: str) -> str:
    """Set of image paths whose code was flagged for review: the run's manual-sorting list."""
    return f"{PREFIX}:run:{run_id}:review"


def run_events(run_id: str) -> str:
    """Stream: one entry per finished batch, field `paths` names its images (results in run_batch_results)."""
    return f"{PREFIX}:run:{run_id}:events"


def run_pending(run_id: str) -> str:
    """Hash kept by `digits-producer watch`: image path -> batch, for files enqueued but not yet handled."""
    return f"{PREFIX}:run:{run_id}:pending"


def run_unmoved(run_id: str) -> str:
    """Hash kept by `digits-producer watch`: image path -> "size:mtime_ns" of a file whose result
    is out but that could not be moved out of the folder. It is not sent again while unchanged."""
    return f"{PREFIX}:run:{run_id}:unmoved"


def run_keyed(run_id: str) -> str:
    """Hash: image path -> what a person keyed at a keying station for a flagged code (JSON: code,
    digits, unreadable, station, keyed_at), beside the machine's result in run_results, never over it."""
    return f"{PREFIX}:run:{run_id}:keyed"


def run_keying(run_id: str) -> str:
    """Sorted set: the run's flagged paths not yet keyed -> 0 while waiting, or the deadline (unix ms)
    of the claim of the station showing it. A claim not renewed by then is free again."""
    return f"{PREFIX}:run:{run_id}:keying"


def run_claims(run_id: str) -> str:
    """Hash: image path -> the name of the keying station that last claimed it (see run_keying)."""
    return f"{PREFIX}:run:{run_id}:claims"


def run_sender(run_id: str, part: int) -> str:
    """String with a short TTL, renewed while a producer sends share part (0-based) of the run: who
    sends it (host:pid:token). One producer a share (producer/leases.py)."""
    return f"{PREFIX}:run:{run_id}:sender:{part}"


def batch(run_id: str, index: int) -> str:
    """Hash holding one batch's payload until a worker finishes it: `paths` (JSON), `images` (their bytes, one
    after another) and `sizes` (JSON: each one's byte count), or for a run sent by path, `folder`."""
    return f"{PREFIX}:run:{run_id}:batch:{index}"


def worker_model(worker_name: str) -> str:
    """String: the model version a live worker has loaded."""
    return f"{PREFIX}:worker:{worker_name}:model"


def worker_files(worker_name: str) -> str:
    """String: the shared folder a live worker reads runs sent by path from (--files-root); absent if none."""
    return f"{PREFIX}:worker:{worker_name}:files"


def worker_lease(worker_name: str) -> str:
    """String with a short TTL, renewed every few seconds while the worker process lives: the job id
    it is running, or empty when idle. A started job whose worker's lease is gone or names another
    job was abandoned, and is recovered (digits/recovery.py)."""
    return f"{PREFIX}:worker:{worker_name}:lease"


def stranded(queue: str) -> str:
    """Hash: job id -> when a sweep first saw it popped off `queue` by a worker but not started.
    A job still there after STRANDED_SECONDS lost its worker between the two steps (digits/recovery.py)."""
    return f"{PREFIX}:queue:{queue}:stranded"


def worker_stats(worker_name: str) -> str:
    """Hash of a live worker's totals: batches, images, failed, seconds (for `digits-producer status`)."""
    return f"{PREFIX}:worker:{worker_name}:stats"


def run_keys(run_id: str) -> list[str]:
    """The keys that expire together when a run's results expire."""
    return [run(run_id), run_batch_results(run_id), run_results(run_id), run_failed(run_id), run_events(run_id),
            run_review(run_id), run_unmoved(run_id), run_keyed(run_id), run_keying(run_id), run_claims(run_id)]
