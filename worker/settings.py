"""What a worker process is told when it starts, passed from the CLI to every process it spawns.

Light on purpose: the supervisor imports it, and never needs numpy, SciPy or Pillow.
"""

from __future__ import annotations

from dataclasses import dataclass

from digits import defaults, keys


@dataclass(frozen=True)
class WorkerSettings:
    url: str  # redis://... or rediss://...
    queues: tuple[str, ...] = (keys.DEFAULT_QUEUE,)
    burst: bool = False  # exit once the queues are empty
    log_level: str = "INFO"
    log_format: str = "text"
    metrics_port: int | None = None  # process i of a supervisor serves metrics on this port + i
    review_threshold: float = defaults.REVIEW_THRESHOLD  # unless a run sets its own
    max_pixels: int = defaults.MAX_PIXELS  # images with more are refused before they are decoded
    files_root: str | None = None  # a shared folder: runs enqueued with --shared-root are read from it
    max_bytes: int = defaults.MAX_BYTES  # files larger than this are refused unread (from files_root)
