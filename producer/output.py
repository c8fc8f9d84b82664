"""Writing results as JSON Lines (every field) or CSV (one row per image, the essentials)."""

from __future__ import annotations

import csv
import json
from typing import IO, Any

FORMATS = ("jsonl", "csv")
CSV_FIELDS = ("path", "digits", "confidence", "model_version", "error")


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
        confidences = record.get("confidences") or []
        confidence = f"{min(confidences):.6f}" if confidences else ""
        self.csv.writerow([record["path"], record.get("digits") or "", confidence,
                           record.get("model_version") or "", record.get("error") or ""])
