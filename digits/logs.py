"""Logging set-up shared by the CLIs: plain text for people, JSON lines for log pipelines.

Context such as run id, batch, model version and worker travels as `extra` fields, which the
JSON format writes as keys and the text format appends to the message.
"""

from __future__ import annotations

import logging

from pythonjsonlogger.json import JsonFormatter

FORMATS = ("text", "json")
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s [%(process)d] %(message)s"
CONTEXT = ("run_id", "batch", "images", "failed", "seconds", "model_version", "worker")


class TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        context = [f"{name}={getattr(record, name)}" for name in CONTEXT if hasattr(record, name)]
        return f"{line} {' '.join(context)}" if context else line


def setup(level: str = "INFO", fmt: str = "text") -> None:
    handler = logging.StreamHandler()
    if fmt == "json":
        handler.setFormatter(JsonFormatter("%(asctime)s %(levelname)s %(name)s %(process)d %(message)s",
                                           rename_fields={"asctime": "time", "levelname": "level"}))
    else:
        handler.setFormatter(TextFormatter(TEXT_FORMAT))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
