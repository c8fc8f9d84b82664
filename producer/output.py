"""Writing results as JSON Lines (every field) or CSV (one row per image, the essentials).

A result that a keying station keyed carries it under `keyed` (producer/keying.py); in CSV, as
the last four columns, empty for the others.
"""

from __future__ import annotations

import csv
from datetime import UTC, datetime
from typing import IO, Any

from digits.results import Finished, Result

FORMATS = ("jsonl", "csv")
CSV_FIELDS = ("path", "digits", "code", "confidence", "review", "model_version", "error",
              "keyed_code", "keyed_unreadable", "keyed_station", "keyed_at")


class ResultWriter:
    def __init__(self, stream: IO[str], fmt: str, header: bool = True) -> None:
        if fmt not in FORMATS:
            raise ValueError(f"unknown format {fmt!r}; expected one of {', '.join(FORMATS)}")
        self.stream = stream
        self.fmt = fmt
        self.csv = csv.writer(stream) if fmt == "csv" else None
        if self.csv is not None and header:
            self.csv.writerow(CSV_FIELDS)

    def write_batch(self, batch: Finished) -> None:
        """Write a finished batch's results: for JSON Lines its stored lines as they are, at once."""
        if self.csv is not None:
            for result in batch.results():
                self.write(result)
        elif batch.paths:
            self.stream.write(batch.text + "\n")

    def write(self, result: Result) -> None:
        """Write one result: for JSON Lines its stored line as it is, unparsed."""
        if self.csv is None:
            self.stream.write(result.line + "\n")
            return
        record = result.record
        confidence = record.get("confidence")
        review = record.get("review")
        keyed = record.get("keyed")
        self.csv.writerow([record["path"], record.get("digits") or "", record.get("code") or "",
                           "" if confidence is None else f"{confidence:.6f}", "" if review is None else int(review),
                           record.get("model_version") or "", record.get("error") or "",
                           *(keyed_columns(keyed) if keyed else ("", "", "", ""))])


def keyed_columns(keyed: dict[str, Any]) -> tuple[str, str, str, str]:
    """The keyed code (empty if unreadable), 1 if unreadable else 0, the station, the time (ISO 8601, UTC)."""
    return keyed["code"] or "", str(int(keyed["unreadable"])), keyed["station"], iso_time(keyed["keyed_at"])


def iso_time(unix_seconds: float) -> str:
    """A time as ISO 8601 in UTC, to the millisecond: 2026-12-04T17:03:12.345Z."""
    return datetime.fromtimestamp(unix_seconds, UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"
