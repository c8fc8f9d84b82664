"""Prometheus metrics of one worker process, served on its own port when asked for.

From these, dashboards read throughput (rate of digits_images_total), error rate, the
achieved batch size (digits_batch_images) and the model version each worker serves.
"""

from __future__ import annotations

import socket

from prometheus_client import Counter, Gauge, Histogram, start_http_server

IMAGES = Counter("digits_images", "Images finished, by outcome", ["model_version", "outcome"])
BATCHES = Counter("digits_batches", "Batches finished", ["model_version"])
ERRORS = Counter("digits_image_errors", "Images that got an error result", ["model_version"])
BATCH_IMAGES = Histogram("digits_batch_images", "Images per batch", ["model_version"],
                         buckets=(1, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192))
BATCH_SECONDS = Histogram("digits_batch_seconds", "Seconds to decode, classify and store a batch",
                          ["model_version"], buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30))
MODEL_REFUSED = Counter("digits_model_refused", "Versions made current that this process could not load "
                        "(it kept serving the one it had)", ["model_version"])
MODEL = Gauge("digits_model_loaded", "1 for the model version this process serves", ["model_version", "architecture"])


def record_batch(version: str, images: int, failed: int, seconds: float) -> None:
    IMAGES.labels(version, "ok").inc(images - failed)
    IMAGES.labels(version, "error").inc(failed)
    ERRORS.labels(version).inc(failed)
    BATCHES.labels(version).inc()
    BATCH_IMAGES.labels(version).observe(images)
    BATCH_SECONDS.labels(version).observe(seconds)


def record_model(version: str, architecture: str, previous: str | None) -> None:
    if previous is not None:
        MODEL.clear()
    MODEL.labels(version, architecture).set(1)


def serve(port: int) -> None:
    """Expose /metrics on 0.0.0.0:port in a background thread."""
    start_http_server(port)


def taken(ports: range) -> list[int]:
    """The ports of `ports` that something already listens on (checked as start_http_server binds)."""
    busy = []
    for port in ports:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind(("0.0.0.0", port))  # noqa: S104 -- the metrics server listens on every interface
            except OSError:
                busy.append(port)
    return busy
