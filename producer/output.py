"""Writing results as JSON Lines (every field) or CSV (one row per image, the essentials)."""

from __future__ import annotations

import csv
import json
from typing import IO, Any

FORMATS = ("jsonl", "csv")
CSV_FIELDS = ("path", "digits", "code", "confidence", "review", "model_version", "error")


class ResultWriter:
    def __init__(self, stream: IO[str], fmt: str, header: bool = True) -> None:
        if fmt not in FORMATS:
            raise ValueError(f"unknown format {fmt!r}; expected one of {', '.join(FORMATS)}")
        self.stream = stream
        self.fmt = fmt
        self.csv = csv.writer(stream) if fmt == "csv" else None
        if self.csv is not None and header:
            self.csv.writerow(CSV_FIELDS)

    def write(self, record: dict[str, Any], line: str | None = None) -> None:
        """Write one result; `line` is its stored JSON, passed through as is for JSON Lines."""
        if self.csv is None:
            self.stream.write((line or json.dumps(record, ensure_ascii=False)) + "\n")
            return
        confidence = record.get("confidence")
        review = record.get("review")
        self.csv.writerow([record["path"], record.get("digits") or "", record.get("code") or "",
                           "" if confidence is None else f"{confidence:.6f}", "" if review is None else int(review),
                           record.get("model_version") or "", record.get("error") or ""])
