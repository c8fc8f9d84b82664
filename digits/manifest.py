"""A version's manifest, checked: what a worker needs from it must be there and well formed.

The fields a worker reads (`files` with each theta file's sha256, `model_sha256`, `version`) are
required and typed; the rest (`preset`, `metrics`, `hyperparameters`, ...) is informative and
kept as it is. A manifest that breaks this is refused where it enters: import, publish, promote,
rollback and a worker's load, each naming the manifest and the field.
"""

from __future__ import annotations

import json
import re
from typing import Any

from digits.defaults import MAX_MANIFEST_BYTES

THETA_FILES = ("theta1.csv", "theta2.csv")
VERSION_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
RESERVED_IDS = frozenset({"versions", "current", "history"})  # registry keys share the namespace
SHA256 = re.compile(r"^[0-9a-f]{64}$")


class ManifestError(ValueError):
    """A manifest a worker could not serve from; the message names it and the field."""


def parse_manifest(raw: bytes | str, where: str) -> dict[str, Any]:
    """The checked manifest from its JSON text."""
    if len(raw) > MAX_MANIFEST_BYTES:
        raise ManifestError(f"{where}: {len(raw)} bytes, over the limit of {MAX_MANIFEST_BYTES} for a manifest")
    try:
        manifest = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ManifestError(f"{where}: not JSON ({exc})") from None
    return check_manifest(manifest, where)


def check_manifest(manifest: Any, where: str) -> dict[str, Any]:
    """The manifest, if it has every field a worker needs, well formed; else ManifestError."""
    if not isinstance(manifest, dict):
        raise ManifestError(f"{where}: a manifest is a JSON object, not {type(manifest).__name__}")
    version = manifest.get("version")
    if not isinstance(version, str) or not VERSION_ID.match(version) or version in RESERVED_IDS:
        raise ManifestError(f"{where}: version {version!r} is not a version id (1-128 letters, digits, '.', '_' "
                            f"or '-', not one of {', '.join(sorted(RESERVED_IDS))})")
    files = manifest.get("files")
    if not isinstance(files, dict):
        raise ManifestError(f"{where}: files is missing or not an object naming {' and '.join(THETA_FILES)}")
    for name in THETA_FILES:
        entry = files.get(name)
        if not isinstance(entry, dict) or not isinstance(entry.get("sha256"), str) \
                or not SHA256.match(entry["sha256"]):
            raise ManifestError(f"{where}: files.{name}.sha256 is missing or not 64 lowercase hex digits")
    if not isinstance(manifest.get("model_sha256"), str) or not SHA256.match(manifest["model_sha256"]):
        raise ManifestError(f"{where}: model_sha256 is missing or not 64 lowercase hex digits")
    return manifest
