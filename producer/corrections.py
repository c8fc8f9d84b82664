"""`digits-producer corrections RUN... -o DIR`: what keying stations keyed, as a labelled set.

The format is a contract with the trainer (docs/corrections.md): the keyed images copied under
`images/RUN/`, `labels.csv` (one row per image with its keyed code), `unreadable.csv` (the images
marked unreadable, not copied: they teach nothing) and `manifest.json`, written last, with the runs
and their counts. A keyed image whose file cannot be read any more is listed in the manifest with
the reason, and the export says so; the rest is written.
"""

from __future__ import annotations

import csv
import json
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis

from digits import defaults, keys
from digits.files import UnsafePath, read_inside
from digits.results import decode_result
from producer import keying
from producer.output import iso_time
from producer.runs import RunError, run_meta

FORMAT, FORMAT_VERSION = "digits-corrections", 1
LABEL_FIELDS = ("path", "code", "digits", "run", "source", "station", "keyed_at", "machine_code", "model_version")
UNREADABLE_FIELDS = ("run", "source", "station", "keyed_at", "machine_code", "model_version")
RUN_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")


class ExportError(RuntimeError):
    """The export cannot be made (no such run, a folder in the way); the message says why."""


@dataclass
class RunExport:
    """One run's part of the export, as the manifest lists it."""

    run: str
    root: str
    flagged: int
    labelled: int = 0
    unreadable: int = 0
    missing: list[dict[str, str]] = field(default_factory=list)  # {source, problem}


def machine_fields(connection: redis.Redis, run_id: str, sources: Sequence[str]) -> dict[str, tuple[str, str]]:
    """The machine's code and model version of each source, from its stored result."""
    raws = connection.hmget(keys.run_results(run_id), list(sources)) if sources else []
    fields = {}
    for source, raw in zip(sources, raws, strict=True):
        result = decode_result(raw) if raw is not None else {}
        fields[source] = (result.get("code") or "", result.get("model_version") or "")
    return fields


def export_run(connection: redis.Redis, run_id: str, out: Path, labels: csv.DictWriter[str],
               unreadable: csv.DictWriter[str], max_bytes: int) -> RunExport:
    """Copy one run's keyed images and write its rows; unreadable ones only get a row."""
    meta = run_meta(connection, run_id)
    root = Path(meta["root"])
    part = RunExport(run_id, str(root), int(connection.scard(keys.run_review(run_id))))
    keyed = keying.keyed_codes(connection, run_id)
    machine = machine_fields(connection, run_id, sorted(keyed))
    for source in sorted(keyed):
        record = keyed[source]
        common = {"run": run_id, "source": source, "station": record["station"],
                  "keyed_at": iso_time(record["keyed_at"]), "machine_code": machine[source][0],
                  "model_version": machine[source][1]}
        if record["unreadable"]:
            unreadable.writerow(common)
            part.unreadable += 1
            continue
        try:
            data, problem = read_inside(root, source, max_bytes)
        except UnsafePath as exc:
            data, problem = None, str(exc)
        if data is None:
            part.missing.append({"source": source, "problem": problem or "unreadable"})
            continue
        target = Path("images") / run_id / source
        (out / target).parent.mkdir(parents=True, exist_ok=True)
        (out / target).write_bytes(data)
        labels.writerow({"path": target.as_posix(), "code": record["code"], "digits": record["digits"], **common})
        part.labelled += 1
    return part


def check_target(out: Path, run_ids: Sequence[str]) -> None:
    bad = [run_id for run_id in run_ids if not RUN_ID.fullmatch(run_id)]
    if bad:
        raise ExportError(f"not a run id: {bad[0]!r}")
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ExportError(f"{out} already exists and is not an empty folder: export into a new one")


def export(connection: redis.Redis, run_ids: Sequence[str], out: Path, max_bytes: int = defaults.MAX_BYTES,
           warn: Callable[[str], None] = lambda message: None) -> dict[str, Any]:
    """Write the keyed images of run_ids as a labelled set in out (new or empty); the manifest."""
    run_ids = list(dict.fromkeys(run_ids))
    check_target(out, run_ids)
    try:
        for run_id in run_ids:
            run_meta(connection, run_id)
    except RunError as exc:
        raise ExportError(str(exc)) from None
    out.mkdir(parents=True, exist_ok=True)
    parts = []
    with (out / "labels.csv").open("w", encoding="utf-8", newline="") as labels_file, \
            (out / "unreadable.csv").open("w", encoding="utf-8", newline="") as unreadable_file:
        labels = csv.DictWriter(labels_file, LABEL_FIELDS)
        unreadable = csv.DictWriter(unreadable_file, UNREADABLE_FIELDS)
        labels.writeheader()
        unreadable.writeheader()
        for run_id in run_ids:
            part = export_run(connection, run_id, out, labels, unreadable, max_bytes)
            for missing in part.missing:
                warn(f"run {run_id}: {missing['problem']}: left out of the export")
            parts.append(part)
    manifest = {
        "format": FORMAT, "format_version": FORMAT_VERSION, "created_at": iso_time(time.time()),
        "labels": "labels.csv", "unreadable": "unreadable.csv",
        "counts": {"labelled": sum(p.labelled for p in parts), "unreadable": sum(p.unreadable for p in parts),
                   "missing": sum(len(p.missing) for p in parts)},
        "runs": [vars(part) for part in parts],
    }
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return manifest
