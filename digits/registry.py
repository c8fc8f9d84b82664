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
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

import redis

from digits import keys
from digits.connection import text
from digits.manifest import THETA_FILES, Layer, ManifestError, check_manifest, model_files, parse_manifest
from digits.network import Recogniser, load_model
from digits.sweep import StripReader, load_strip_reader
from digits.theta import Model, ThetaError, csv_shape, plain_bytes, read_files, sha256_hex

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


def build_manifest(files: dict[str, bytes], model: Recogniser, *, preset: str,
                   layers: list[Layer] | None = None, hyperparameters: dict[str, Any] | None = None,
                   metrics: dict[str, Any] | None = None, version: str | None = None,
                   source: str = "trainer") -> dict[str, Any]:
    """The manifest of a model's plain CSV files, in layer order (the seed's pair without `layers`)."""
    sha = sha256_hex(*files.values())
    manifest: dict[str, Any] = {
        "version": version or new_version_id(preset, sha),
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "files": {name: {"sha256": sha256_hex(data), "shape": list(csv_shape(data))} for name, data in files.items()},
        "model_sha256": sha,
        "architecture": model.architecture,
        "preset": preset,
        "hyperparameters": hyperparameters or {},
        "metrics": metrics or {},
        "libraries": library_versions(),
        "source": source,
    }
    if layers is not None:
        manifest["layers"] = [layer.as_json() for layer in layers]
    elif isinstance(model, Model):
        manifest["hidden"] = model.hidden
    return manifest



@dataclass(frozen=True)
class Readers:
    """What a version reads with: its digit model, its strip reader if it has one (digits/sweep.py)."""

    model: Recogniser
    strips: StripReader | None
    manifest: dict[str, Any]


class Registry:
    def __init__(self, connection: redis.Redis) -> None:
        self.redis = connection

    # -- writing -------------------------------------------------------------------------
    def publish(self, files: dict[str, bytes], manifest: dict[str, Any],
                promote: bool = False, plots: dict[str, bytes] | None = None) -> str:
        """Validate and store a version atomically, with its plots; refuse to overwrite an existing one.
        `files` are the model's CSV files (plain or gzipped) by name."""
        plots = plots or {}
        for name, data in plots.items():
            if name not in PLOT_FILES or not data.startswith(PNG_SIGNATURE):
                raise RegistryError(f"{name}: not one of the version plots ({', '.join(PLOT_FILES)}) as a PNG")
        try:
            check_manifest(manifest, "manifest")
            names = model_files(manifest)
        except ManifestError as exc:
            raise RegistryError(str(exc)) from None
        if sorted(files) != sorted(names):
            raise RegistryError(f"manifest names the files {', '.join(names)}; given {', '.join(sorted(files))}")
        plain = {name: plain_bytes(files[name], name) for name in names}
        load_model(plain, manifest, manifest["version"])  # raises ThetaError naming the file and the layer
        load_strip_reader(plain, manifest, manifest["version"])
        for name, data in plain.items():
            want = manifest["files"][name]["sha256"]
            if want != sha256_hex(data):
                raise RegistryError(f"{name}: sha256 {sha256_hex(data)} does not match the manifest's {want}")
        if manifest["model_sha256"] != sha256_hex(*plain.values()):
            raise RegistryError(f"manifest: model_sha256 {manifest['model_sha256']} is not the sha256 of "
                                f"{', '.join(names)} in that order ({sha256_hex(*plain.values())})")
        version: str = manifest["version"]
        key = keys.model(version)
        with self.redis.pipeline(transaction=True) as pipe:
            pipe.watch(key)
            if pipe.exists(key):
                raise RegistryError(f"version {version} already exists; versions are immutable")
            pipe.multi()
            pipe.hset(key, mapping={
                # zlib's default level: 9 took 3.1 s on the bundled model's first layer, 6 takes 1.3 s, 1% bigger
                **{field_of(name): gzip.compress(data, compresslevel=6, mtime=0) for name, data in plain.items()},
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
        """Import a plain directory of theta CSVs (plain or .gz), with its manifest.json if any
        (which it needs for an N-layer model: the manifest lists the layers)."""
        manifest_path = directory / "manifest.json"
        try:
            manifest = parse_manifest(manifest_path.read_bytes(), str(manifest_path)) \
                if manifest_path.is_file() else None
        except ManifestError as exc:
            raise RegistryError(str(exc)) from None
        if manifest is None:
            unlisted = sorted(path.name for path in directory.glob("*.csv*")
                              if path.name.removesuffix(".gz") not in THETA_FILES)
            if unlisted:  # read as the seed's pair, they would be left out without a word
                raise RegistryError(f"{directory}: {', '.join(unlisted)} but no manifest.json: only a manifest says "
                                    "how layer files chain (docs/theta-format.md); import the directory with its "
                                    "manifest")
        files = read_files(directory, model_files(manifest))
        if manifest is None:
            model = load_model(files, None, str(directory))
            manifest = build_manifest(files, model, preset=preset, source=f"import:{directory}")
        plots = {name: (directory / name).read_bytes() for name in PLOT_FILES if (directory / name).is_file()}
        return self.publish(files, manifest, promote=promote, plots=plots)

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

    def files(self, version: str) -> tuple[dict[str, bytes], dict[str, Any]]:
        """The model's plain CSV files by name, in layer order, and the manifest; each file checked
        against the manifest's sha256."""
        manifest = self.manifest(version)
        names = model_files(manifest)
        stored: list[bytes | None] = self.redis.hmget(  # type: ignore[assignment]
            keys.model(version), [field_of(name) for name in names])
        files: dict[str, bytes] = {}
        for name, raw in zip(names, stored, strict=True):
            if raw is None:
                raise RegistryError(f"version {version}: {name} is missing")
            files[name] = plain_bytes(raw, f"version {version}: {name}")
            if sha256_hex(files[name]) != manifest["files"][name]["sha256"]:
                raise ThetaError(f"version {version}: {name} does not match its manifest sha256")
        return files, manifest

    def load(self, version: str) -> Readers:
        """A version's digit model and strip reader, loaded and checked whole, with its manifest."""
        files, manifest = self.files(version)
        return Readers(load_model(files, manifest, version), load_strip_reader(files, manifest, version), manifest)

    def export(self, version: str, directory: Path) -> Path:
        """Write a version as a plain directory: its CSV files, manifest.json and its plots."""
        files, manifest = self.files(version)
        return write_dir(directory, files, manifest, self.plots(version))

    def plots(self, version: str) -> dict[str, bytes]:
        """The PNGs published with a version (none for imported CSVs without them)."""
        stored: list[bytes | None] = self.redis.hmget(  # type: ignore[assignment]
            keys.model(version), [f"plot:{name}" for name in PLOT_FILES])
        return {name: data for name, data in zip(PLOT_FILES, stored, strict=True) if data is not None}


def field_of(name: str) -> str:
    """A model file's field in the version's hash: theta1.csv is stored as theta1."""
    return name.removesuffix(".csv")


def write_dir(directory: Path, files: dict[str, bytes], manifest: dict[str, Any],
              plots: dict[str, bytes]) -> Path:
    """A version as a plain directory, the form `publish_dir` reads: its CSV files,
    manifest.json and its plots."""
    directory.mkdir(parents=True, exist_ok=True)
    for name, data in {**plots, **files}.items():
        (directory / name).write_bytes(data)
    (directory / "manifest.json").write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    return directory
