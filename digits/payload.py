"""A batch payload's list of paths, checked: the one field of the payload every reader trusts.

The producer writes `paths` (a JSON list of the batch's image paths) beside the image bytes; the
worker, the producer's resume and the recovery sweeps read it. A payload corrupted in Redis (by
hand, a bug, another program) must fail its batch with a message naming the run, the batch and
what is wrong, never crash a reader or put bogus paths in a run's results.
"""

from __future__ import annotations

import json
from typing import Any

from digits.defaults import MAX_BATCH_PATHS, MAX_PATH_CHARS


class PayloadError(ValueError):
    """A batch payload that cannot be read; the message names the run, the batch and why."""


def batch_paths(raw: Any, run_id: str, batch: int) -> list[str]:
    """The checked `paths` of a batch payload (its raw field, bytes or str)."""
    where = f"run {run_id} batch {batch}: payload field 'paths'"
    if raw is None:
        raise PayloadError(f"{where} is missing")
    try:
        paths = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError, TypeError) as exc:
        raise PayloadError(f"{where} is not JSON ({exc})") from None
    if not isinstance(paths, list) or not all(isinstance(path, str) and path for path in paths):
        raise PayloadError(f"{where} is not a list of path strings")
    if len(paths) > MAX_BATCH_PATHS:
        raise PayloadError(f"{where} holds {len(paths)} paths, over the limit of {MAX_BATCH_PATHS}")
    if longest := max((len(path) for path in paths if len(path) > MAX_PATH_CHARS), default=0):
        raise PayloadError(f"{where} holds a path of {longest} characters, over the limit of {MAX_PATH_CHARS}")
    if len(set(paths)) != len(paths):
        raise PayloadError(f"{where} names a path twice")
    return paths


def batch_options(raw: Any, run_id: str, batch: int) -> dict[str, Any]:
    """The checked `options` of a batch payload (how to read its images); {} when absent."""
    if raw is None:
        return {}
    try:
        options = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError, TypeError) as exc:
        raise PayloadError(f"run {run_id} batch {batch}: payload field 'options' is not JSON ({exc})") from None
    if not isinstance(options, dict):
        raise PayloadError(f"run {run_id} batch {batch}: payload field 'options' is not an object")
    return options
