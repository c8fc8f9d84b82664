"""What a worker process serves: the model, loaded once and swapped only when `current` moves,
and how it reads; handed to every job it runs."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import redis

from digits import defaults, keys
from digits.connection import text
from digits.network import Recogniser
from digits.registry import Readers, Registry, RegistryError
from digits.sweep import StripReader
from digits.theta import ThetaError
from worker import metrics

log = logging.getLogger(__name__)
EARLIER_TRIED = 10  # earlier currents a new process tries when `current` cannot load


class NoModelError(RuntimeError):
    """No version is published as current, so nothing can be classified yet."""


@dataclass(frozen=True)
class Loaded:
    version: str
    sha256: str
    model: Recogniser
    manifest: dict[str, Any]
    strips: StripReader | None = None  # the version's strip reader, which reads crops when it has one


class ModelServer:
    """Holds one loaded model per process; `refresh` follows the registry's `current` pointer."""

    def __init__(self) -> None:
        self.loaded: Loaded | None = None
        self.refused: str | None = None  # the last version made current that could not be loaded

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
        if self.loaded is not None and wanted in (self.loaded.version, self.refused):
            return self.loaded  # the refused one is tried once, not at every job
        try:
            readers = registry.load(wanted)
        except (ThetaError, RegistryError) as exc:
            metrics.MODEL_REFUSED.labels(wanted).inc()
            self.refused = wanted
            if self.loaded is not None:  # never switch to a version that cannot be served
                log.error("cannot load model %s, still serving %s: %s", wanted, self.loaded.version, exc)
                return self.loaded
            wanted, readers = self.earlier_current(connection, wanted, exc)
        return self.swap(connection, wanted, readers, worker_name)

    def earlier_current(self, connection: redis.Redis, refused: str, why: Exception
                        ) -> tuple[str, Readers]:
        """A new process whose `current` cannot load serves the newest earlier current that does
        (as a rollback would), rather than failing every start; the error says which and why."""
        registry = Registry(connection)
        for raw in connection.lrange(keys.MODEL_HISTORY, 0, EARLIER_TRIED - 1):
            version = text(raw)
            try:
                readers = registry.load(version)
            except (ThetaError, RegistryError):
                continue
            log.error("cannot load model %s (current): %s; serving %s, the newest earlier current that loads",
                      refused, why, version)
            return version, readers
        raise why

    def swap(self, connection: redis.Redis, version: str, readers: Readers, worker_name: str | None) -> Loaded:
        previous = self.loaded.version if self.loaded else None
        self.loaded = Loaded(version, str(readers.manifest["model_sha256"]), readers.model, readers.manifest,
                             readers.strips)
        architecture = readers.model.architecture + (f" + {readers.strips.architecture}" if readers.strips else "")
        metrics.record_model(version, architecture, previous)
        log.info("serving model %s (%s)", version, architecture)
        if worker_name:  # at once; the worker's heartbeats renew it (DigitsWorker.announce)
            connection.set(keys.worker_model(worker_name), version, ex=defaults.WORKER_TTL + 60)
        return self.loaded


@dataclass(frozen=True)
class Serving:
    """Given by a worker process to each job it runs (RQ's SimpleWorker runs them all in-process)."""

    models: ModelServer
    review_threshold: float  # unless the run sets its own
    max_pixels: int
    files_root: Path | None = None  # the shared folder that runs enqueued with --shared-root are read from
    max_bytes: int = defaults.MAX_BYTES  # the largest file read from it
