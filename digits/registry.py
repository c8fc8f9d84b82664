"""The model registry, kept in Redis so that workers on any host can reach it.

A version is immutable: one hash holding both theta files (gzipped CSV) and a manifest.
Publishing validates the files first and writes the hash and the version index in one
transaction, so a version is either whole or absent. `current` is a pointer that can be
moved to any published version; the previous pointer values are kept for rollback.
"""

from __future__ import annotations

import gzip
import json
import platform
import time
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

import redis

from digits import keys
from digits.connection import text
from digits.manifest import THETA_FILES, ManifestError, check_manifest, parse_manifest
from digits.theta import Theta, ThetaError, parse_pair, plain_bytes, read_pair, sha256_hex

PLOT_FILES = ("accuracy.png", "confusion.png", "worst.png")  # made by the trainer, kept beside the manifest
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
DEFAULT_MODEL_DIR = Path(__file__).resolve().parent / "default_model"  # shipped, made by the trainer


class RegistryError(RuntimeError):
    """A registry operation could not be done; the message says why."""


def library_versions() -> dict[str, str]:
    found = {"python": platform.python_version()}
    for name in ("numpy", "tensorflow-cpu", "tensorflow", "keras", "redis", "rq", "pillow"):
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return found


def new_version_id(preset: str, sha: str) -> str:
    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    return f"{stamp}-{preset}-{sha[:8]}"


def build_manifest(theta1_csv: bytes, theta2_csv: bytes, theta: Theta, *, preset: str,
                   hyperparameters: dict[str, Any] | None = None,
                   metrics: dict[str, Any] | None = None, version: str | None = None,
                   source: str = "trainer") -> dict[str, Any]:
    sha = sha256_hex(theta1_csv, theta2_csv)
    return {
        "version": version or new_version_id(preset, sha),
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "files": {
            "theta1.csv": {"sha256": sha256_hex(theta1_csv), "shape": list(theta.theta1.shape)},
            "theta2.csv": {"sha256": sha256_hex(theta2_csv), "shape": list(theta.theta2.shape)},
        },
        "model_sha256": sha,
        "hidden": theta.hidden,
        "preset": preset,
        "hyperparameters": hyperparameters or {},
        "metrics": metrics or {},
        "libraries": library_versions(),
        "source": source,
    }


class Registry:
    def __init__(self, connection: redis.Redis) -> None:
        self.redis = connection

    # -- writing -------------------------------------------------------------------------
    def publish(self, theta1: bytes, theta2: bytes, manifest: dict[str, Any],
                promote: bool = False, plots: dict[str, bytes] | None = None) -> str:
        """Validate and store a version atomically, with its plots; refuse to overwrite an existing one."""
        plots = plots or {}
        for name, data in plots.items():
            if name not in PLOT_FILES or not data.startswith(PNG_SIGNATURE):
                raise RegistryError(f"{name}: not one of the version plots ({', '.join(PLOT_FILES)}) as a PNG")
        plain1, plain2 = plain_bytes(theta1, "theta1.csv"), plain_bytes(theta2, "theta2.csv")
        parse_pair(plain1, plain2)  # raises ThetaError naming the file and the problem
        try:
            check_manifest(manifest, "manifest")
        except ManifestError as exc:
            raise RegistryError(str(exc)) from None
        for name, data in zip(THETA_FILES, (plain1, plain2), strict=True):
            want = manifest["files"][name]["sha256"]
            if want != sha256_hex(data):
                raise RegistryError(f"{name}: sha256 {sha256_hex(data)} does not match the manifest's {want}")
        if manifest["model_sha256"] != sha256_hex(plain1, plain2):
            raise RegistryError(f"manifest: model_sha256 {manifest['model_sha256']} is not the sha256 of "
                                f"theta1.csv and theta2.csv ({sha256_hex(plain1, plain2)})")
        version: str = manifest["version"]
        key = keys.model(version)
        with self.redis.pipeline(transaction=True) as pipe:
            pipe.watch(key)
            if pipe.exists(key):
                raise RegistryError(f"version {version} already exists; versions are immutable")
            pipe.multi()
            pipe.hset(key, mapping={
                "theta1": gzip.compress(plain1, mtime=0),
                "theta2": gzip.compress(plain2, mtime=0),
                "manifest": json.dumps(manifest, sort_keys=True),
                **{f"plot:{name}": data for name, data in plots.items()},
            })
            pipe.zadd(keys.MODEL_VERSIONS, {version: time.time()})
            if promote:
                self._queue_promotion(pipe, version)
            pipe.execute()
        return version

    def publish_dir(self, directory: Path, *, preset: str = "imported",
                    promote: bool = False) -> str:
        """Import a plain directory of theta CSVs (plain or .gz), with its manifest.json if any."""
        (name1, data1), (name2, data2) = read_pair(directory)
        theta = parse_pair(data1, data2, name1, name2)
        manifest_path = directory / "manifest.json"
        if manifest_path.is_file():
            try:
                manifest = parse_manifest(manifest_path.read_bytes(), str(manifest_path))
            except ManifestError as exc:
                raise RegistryError(str(exc)) from None
        else:
            manifest = build_manifest(data1, data2, theta, preset=preset, source=f"import:{directory}")
        plots = {name: (directory / name).read_bytes() for name in PLOT_FILES if (directory / name).is_file()}
        return self.publish(data1, data2, manifest, promote=promote, plots=plots)

    def promote(self, version: str) -> None:
        """Point `current` at a published version that loads, remembering the old pointer for rollback."""
        self.check_loads(version)
        with self.redis.pipeline(transaction=True) as pipe:
            pipe.watch(keys.MODEL_CURRENT)
            pipe.multi()
            self._queue_promotion(pipe, version)
            pipe.execute()

    def _queue_promotion(self, pipe: Any, version: str) -> None:
        previous = self.redis.get(keys.MODEL_CURRENT)
        if previous is not None and text(previous) != version:
            pipe.lpush(keys.MODEL_HISTORY, previous)
        pipe.set(keys.MODEL_CURRENT, version)

    def rollback(self) -> str:
        """Move `current` back to the version it pointed at before the last promotion."""
        with self.redis.pipeline(transaction=True) as pipe:
            pipe.watch(keys.MODEL_CURRENT, keys.MODEL_HISTORY)
            previous = pipe.lindex(keys.MODEL_HISTORY, 0)
            if previous is None:
                raise RegistryError("nothing to roll back to: no earlier current version")
            self.check_loads(text(previous))
            pipe.multi()
            pipe.lpop(keys.MODEL_HISTORY)
            pipe.set(keys.MODEL_CURRENT, previous)
            pipe.execute()
        return text(previous)

    def check_loads(self, version: str) -> None:
        """RegistryError, saying why, unless a worker could load and serve the version."""
        try:
            self.load(version)
        except ThetaError as exc:
            raise RegistryError(f"version {version} cannot be served: {exc}") from None

    # -- reading -------------------------------------------------------------------------
    def current(self) -> str | None:
        value = self.redis.get(keys.MODEL_CURRENT)
        return text(value) if value is not None else None

    def versions(self) -> list[str]:
        return [text(v) for v in self.redis.zrange(keys.MODEL_VERSIONS, 0, -1)]

    def manifest(self, version: str) -> dict[str, Any]:
        raw = self.redis.hget(keys.model(version), "manifest")
        if raw is None:
            raise RegistryError(f"no such version: {version}")
        try:
            return parse_manifest(raw, f"version {version}: manifest")
        except ManifestError as exc:
            raise RegistryError(str(exc)) from None

    def files(self, version: str) -> tuple[bytes, bytes, dict[str, Any]]:
        """Both plain CSV files and the manifest, checked against the manifest's sha256s."""
        fields: list[bytes | None] = self.redis.hmget(  # type: ignore[assignment]
            keys.model(version), ["theta1", "theta2", "manifest"])
        raw1, raw2, raw_manifest = fields
        if raw1 is None or raw2 is None or raw_manifest is None:
            raise RegistryError(f"no such version: {version}")
        try:
            manifest = parse_manifest(raw_manifest, f"version {version}: manifest")
        except ManifestError as exc:
            raise RegistryError(str(exc)) from None
        plain1, plain2 = (plain_bytes(raw, f"version {version}: {name}")
                          for raw, name in ((raw1, "theta1"), (raw2, "theta2")))
        for name, data in zip(THETA_FILES, (plain1, plain2), strict=True):
            if sha256_hex(data) != manifest["files"][name]["sha256"]:
                raise ThetaError(f"version {version}: {name} does not match its manifest sha256")
        return plain1, plain2, manifest

    def load(self, version: str) -> tuple[Theta, dict[str, Any]]:
        plain1, plain2, manifest = self.files(version)
        return parse_pair(plain1, plain2, f"{version}/theta1.csv", f"{version}/theta2.csv"), manifest

    def export(self, version: str, directory: Path) -> Path:
        """Write a version as a plain directory: theta1.csv, theta2.csv, manifest.json and its plots."""
        plain1, plain2, manifest = self.files(version)
        return write_dir(directory, plain1, plain2, manifest, self.plots(version))

    def plots(self, version: str) -> dict[str, bytes]:
        """The PNGs published with a version (none for imported CSVs without them)."""
        stored: list[bytes | None] = self.redis.hmget(  # type: ignore[assignment]
            keys.model(version), [f"plot:{name}" for name in PLOT_FILES])
        return {name: data for name, data in zip(PLOT_FILES, stored, strict=True) if data is not None}


def write_dir(directory: Path, theta1: bytes, theta2: bytes, manifest: dict[str, Any],
              plots: dict[str, bytes]) -> Path:
    """A version as a plain directory, the form `publish_dir` reads: theta1.csv, theta2.csv,
    manifest.json and its plots."""
    directory.mkdir(parents=True, exist_ok=True)
    for name, data in plots.items():
        (directory / name).write_bytes(data)
    for name, data in zip(THETA_FILES, (theta1, theta2), strict=True):
        (directory / name).write_bytes(data)
    (directory / "manifest.json").write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    return directory
