"""A version's manifest, checked: what a worker needs from it must be there and well formed.

The fields a worker reads (`files` with each model file's sha256, `model_sha256`, `version`, and
`layers` for an N-layer model) are required and typed; the rest (`preset`, `metrics`,
`hyperparameters`, ...) is informative and kept as it is. A manifest that breaks this is refused
where it enters: import, publish, promote, rollback and a worker's load, each naming the
manifest and the field.

Without `layers`, a version is the seed's pair, theta1.csv and theta2.csv (a 784-H-10 sigmoid
MLP). With it, the version is the listed layers in order, each weighted one a CSV file of its
own in the same format (docs/theta-format.md). `strip_layers`, where present, add a strip
reader that reads a whole crop in one pass (digits/sweep.py), its layers' files in the same format.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any, TypeGuard

from digits.defaults import MAX_KERNEL, MAX_LAYERS, MAX_MANIFEST_BYTES

THETA_FILES = ("theta1.csv", "theta2.csv")
VERSION_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
RESERVED_IDS = frozenset({"versions", "current", "history"})  # registry keys share the namespace
SHA256 = re.compile(r"^[0-9a-f]{64}$")
LAYER_FILE = re.compile(r"^(?!manifest\.)[a-z0-9][a-z0-9_-]{0,63}\.csv$")  # safe as a file name and a hash field
OPERATIONS = ("conv", "maxpool", "dense")
ACTIVATIONS = ("relu", "sigmoid", "linear", "softmax")
PADDINGS = ("valid", "same")


class ManifestError(ValueError):
    """A manifest a worker could not serve from; the message names it and the field."""


@dataclass(frozen=True)
class Layer:
    """One entry of a manifest's `layers`: the operation and its settings; `file` holds the
    weights (bias row, then the matrix) of a convolution or a dense layer."""

    op: str
    file: str | None = None
    kernel: tuple[int, int] = (0, 0)  # conv: its window's (height, width)
    stride: int = 1  # conv, along both axes
    padding: str = "valid"  # conv: "same" keeps the side (at stride 1), as in Keras
    activation: str = "linear"  # conv and dense
    size: tuple[int, int] = (0, 0)  # maxpool: its window's (height, width), which is also its stride

    def as_json(self) -> dict[str, Any]:
        if self.op == "maxpool":
            return {"op": self.op, "size": side_or_pair(self.size)}
        if self.op == "dense":
            return {"op": self.op, "file": self.file, "activation": self.activation}
        return {"op": self.op, "file": self.file, "kernel": side_or_pair(self.kernel), "stride": self.stride,
                "padding": self.padding, "activation": self.activation}


def side_or_pair(window: tuple[int, int]) -> int | list[int]:
    """A window as the manifest writes it: one number for a square, [height, width] otherwise."""
    return window[0] if window[0] == window[1] else list(window)


def window_name(window: tuple[int, int]) -> str:
    """A window as an architecture names it: "3" for 3x3, "7x13" otherwise."""
    return str(window[0]) if window[0] == window[1] else f"{window[0]}x{window[1]}"


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
    names = model_files(manifest, where)
    files = manifest.get("files")
    if not isinstance(files, dict):
        raise ManifestError(f"{where}: files is missing or not an object naming {' and '.join(names)}")
    for name in names:
        entry = files.get(name)
        if not isinstance(entry, dict) or not isinstance(entry.get("sha256"), str) \
                or not SHA256.match(entry["sha256"]):
            raise ManifestError(f"{where}: files.{name}.sha256 is missing or not 64 lowercase hex digits")
    if not isinstance(manifest.get("model_sha256"), str) or not SHA256.match(manifest["model_sha256"]):
        raise ManifestError(f"{where}: model_sha256 is missing or not 64 lowercase hex digits")
    return manifest


def model_files(manifest: dict[str, Any] | None, where: str = "manifest") -> tuple[str, ...]:
    """The model's weight files in layer order: the seed's pair, or each weighted layer's file;
    then its strip reader's, if it has one."""
    if manifest is None:
        return THETA_FILES
    digit_files = THETA_FILES if "layers" not in manifest else \
        tuple(layer.file for layer in layer_specs(manifest["layers"], where) if layer.file is not None)
    if "strip_layers" not in manifest:
        return digit_files
    strip_files = tuple(layer.file for layer in strip_layer_specs(manifest["strip_layers"], where)
                        if layer.file is not None)
    if set(strip_files) & set(digit_files):
        raise ManifestError(f"{where}: strip_layers name a file the digit model's layers name too")
    return digit_files + strip_files


def layer_specs(raw: Any, where: str) -> list[Layer]:
    """A manifest's `layers`, each checked on its own (how they chain is checked against the files
    when they load: digits/network.py); the last is the dense softmax over the 10 classes."""
    layers = layer_list(raw, "layers", where)
    for number, entry in enumerate(raw, start=1):
        if any(isinstance(entry.get(field), list) for field in ("kernel", "size")):
            raise ManifestError(f"{where}: layers[{number}] has a [height, width] window; a digit model's are "
                                f"one number (the browser page reads them), only strip_layers' may be pairs")
    last = layers[-1]
    if last.op != "dense" or last.activation != "softmax":
        raise ManifestError(f"{where}: layers[{len(layers)}] is not a dense softmax over the classes, "
                            f"which ends every model")
    if any(layer.activation == "softmax" for layer in layers[:-1]):
        raise ManifestError(f"{where}: softmax is only the last layer's activation")
    return layers


def strip_layer_specs(raw: Any, where: str) -> list[Layer]:
    """A manifest's `strip_layers`: a strip reader (digits/sweep.py), convolutions and pools that
    end in a softmax convolution over its symbols and a blank (its shapes are checked as it loads)."""
    layers = layer_list(raw, "strip_layers", where)
    for number, layer in enumerate(layers, start=1):
        if layer.op == "dense":
            raise ManifestError(f"{where}: strip_layers[{number}] is dense; a strip reader is convolutions and "
                                f"pools, so that it reads a strip of any width")
        if (layer.activation == "softmax") != (number == len(layers)):
            raise ManifestError(f"{where}: strip_layers[{number}]: softmax is the last layer's activation, and "
                                f"only its")
    return layers


def layer_list(raw: Any, field: str, where: str) -> list[Layer]:
    """A list of 1 to MAX_LAYERS layers (`layers` or `strip_layers`), each well formed, no file named twice."""
    if not isinstance(raw, list) or not 1 <= len(raw) <= MAX_LAYERS:
        raise ManifestError(f"{where}: {field} is not a list of 1 to {MAX_LAYERS} layers")
    layers = [layer_spec(entry, f"{where}: {field}[{number}]") for number, entry in enumerate(raw, start=1)]
    files = [layer.file for layer in layers if layer.file is not None]
    if len(set(files)) != len(files):
        raise ManifestError(f"{where}: {field} name a file twice")
    return layers


def layer_spec(entry: Any, where: str) -> Layer:
    """One layer entry, its operation known and each setting in range."""
    if not isinstance(entry, dict):
        raise ManifestError(f"{where}: a layer is a JSON object, not {type(entry).__name__}")
    op = entry.get("op")
    if op not in OPERATIONS:
        raise ManifestError(f"{where}: unknown operation {op!r} (known: {', '.join(OPERATIONS)})")
    if op == "maxpool":
        return Layer(op, size=window(entry, "size", 2, 4, where))
    file, activation = entry.get("file"), entry.get("activation")
    if not isinstance(file, str) or not LAYER_FILE.match(file):
        raise ManifestError(f"{where}: file {file!r} is not a layer file name (lowercase letters, digits, '_' or "
                            f"'-', ending .csv)")
    if activation not in ACTIVATIONS:
        raise ManifestError(f"{where}: activation {activation!r} is not one of {', '.join(ACTIVATIONS)}")
    if op == "dense":
        return Layer(op, file, activation=activation)
    kernel = window(entry, "kernel", 1, MAX_KERNEL, where)
    padding = entry.get("padding")
    if padding not in PADDINGS:
        raise ManifestError(f"{where}: padding {padding!r} is not one of {', '.join(PADDINGS)}")
    return Layer(op, file, kernel, whole(entry, "stride", 1, min(kernel), where), padding, activation)


def window(entry: dict[str, Any], field: str, smallest: int, high: int, where: str) -> tuple[int, int]:
    """A window's (height, width): one whole number from smallest to high (a square), or a
    [height, width] pair of sides from 1 to high with one of them at least smallest."""
    value: Any = entry.get(field)
    pair: list[Any] = value if isinstance(value, list) and len(value) == 2 else [value, value]
    if not all(is_whole(side, 1, high) for side in pair) or max(pair) < smallest:
        raise ManifestError(f"{where}: {field} {value!r} is not a whole number from {smallest} to {high} or a "
                            f"[height, width] pair of them (a side of a pair may be 1)")
    return pair[0], pair[1]


def is_whole(value: Any, low: int, high: int) -> TypeGuard[int]:
    return not isinstance(value, bool) and isinstance(value, int) and low <= value <= high


def whole(entry: dict[str, Any], field: str, low: int, high: int, where: str) -> int:
    value: Any = entry.get(field)
    if not is_whole(value, low, high):
        raise ManifestError(f"{where}: {field} {value!r} is not a whole number from {low} to {high}")
    return value
