"""What a worker process serves: the model, loaded once and swapped only when `current` moves,
and how it reads; handed to every job it runs."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import redis

from digits import keys
from digits.registry import Registry, RegistryError
from digits.theta import Model, ThetaError
from worker import metrics

log = logging.getLogger(__name__)


class NoModelError(RuntimeError):
    """No version is published as current, so nothing can be classified yet."""


@dataclass(frozen=True)
class Loaded:
    version: str
    sha256: str
    model: Model
    manifest: dict[str, Any]


class ModelServer:
    """Holds one loaded model per process; `refresh` follows the registry's `current` pointer."""

    def __init__(self) -> None:
        self.loaded: Loaded | None = None

    def refresh(self, connection: redis.Redis, worker_name: str | None = None) -> Loaded:
        """Load `current` if it moved; if the new version fails to load, keep serving the old one."""
        return self.serve(connection, Registry(connection).current(), worker_name)

    def serve(self, connection: redis.Redis, wanted: str | None, worker_name: str | None = None) -> Loaded:
        """`refresh`, with the registry's `current` already read (by a job, in its first round trip)."""
        registry = Registry(connection)
        if wanted is None:
            if self.loaded is not None:
                return self.loaded
            raise NoModelError("no model version is published as current: run `digits-trainer promote`")
        if self.loaded is not None and self.loaded.version == wanted:
            return self.loaded
        try:
            theta, manifest = registry.load(wanted)
        except (ThetaError, RegistryError) as exc:
            if self.loaded is None:
                raise
            log.error("cannot load model %s, still serving %s: %s", wanted, self.loaded.version, exc)
            return self.loaded
        previous = self.loaded.version if self.loaded else None
        self.loaded = Loaded(wanted, str(manifest["model_sha256"]), Model(theta), manifest)
        metrics.record_model(wanted, theta.hidden, previous)
        log.info("serving model %s (H=%d)", wanted, theta.hidden)
        if worker_name:
            connection.set(keys.worker_model(worker_name), wanted)
        return self.loaded


@dataclass(frozen=True)
class Serving:
    """Given by a worker process to each job it runs (RQ's SimpleWorker runs them all in-process)."""

    models: ModelServer
    review_threshold: float  # unless the run sets its own
    max_pixels: int
