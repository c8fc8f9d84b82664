"""A batch payload's list of paths, checked: the one field of the payload every reader trusts;
and its image bytes, cut by their checked sizes.

The producer writes `paths` (a JSON list of the batch's image paths) beside the image bytes; the
worker, the producer's resume and the recovery sweeps read it. A payload corrupted in Redis (by
hand, a bug, another program) must fail its batch with a message naming the run, the batch and
what is wrong, never crash a reader or put bogus paths in a run's results.
"""

from __future__ import annotations

import json
from typing import Any

from digits.defaults import MAX_BATCH_PATHS, MAX_PATH_CHARS

# A producer that reads results a batch at a time (since 2026-12-07) marks each payload so: its
# results are stored one value a batch. A payload without the mark is an older producer's, which
# reads every result by path: its results are stored that way (a rolling upgrade, workers first).
RESULTS_FIELD, BY_BATCH = "results", "batch"


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


def batch_images(images: bytes | None, raw_sizes: Any, count: int, run_id: str, batch: int) -> list[bytes] | None:
    """Each image's bytes, cut from the payload's `images` by its checked `sizes` (one per path, 0
    for a file the producer could not read); None for a payload that has no `images` field: a run
    sent by path, or a batch stored by a producer from before 2026-12-06 (one field per image)."""
    if images is None:
        return None
    where = f"run {run_id} batch {batch}: payload field 'sizes'"
    if raw_sizes is None:
        raise PayloadError(f"{where} is missing")
    try:
        sizes = json.loads(raw_sizes)
    except (json.JSONDecodeError, UnicodeDecodeError, TypeError) as exc:
        raise PayloadError(f"{where} is not JSON ({exc})") from None
    if not isinstance(sizes, list) or not all(type(size) is int and size >= 0 for size in sizes):
        raise PayloadError(f"{where} is not a list of byte counts")
    if len(sizes) != count:
        raise PayloadError(f"{where} holds {len(sizes)} sizes for {count} paths")
    if sum(sizes) != len(images):
        raise PayloadError(f"{where} adds up to {sum(sizes)} bytes, but 'images' holds {len(images)}")
    cut: list[bytes] = []
    start = 0
    for size in sizes:
        cut.append(images[start:start + size])
        start += size
    return cut
