"""A run's metadata: the folder and settings it was created with, kept in its Redis hash.

A run is one folder sent as batches; everything else about it (its results, its events, its
batches) hangs off its id under the keys in digits/keys.py.
"""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import redis

from digits import defaults, keys
from digits.connection import text_hash
from producer.files import Share


class RunError(RuntimeError):
    """A run cannot be found or driven; the message says why."""


@dataclass(frozen=True)
class Settings:
    """How a folder is cut and paced; the defaults are measured in docs/benchmarks.md."""

    batch_size: int = defaults.BATCH_SIZE
    batch_bytes: int = defaults.BATCH_BYTES  # a batch stops taking files once its payload holds this many bytes
    window: int = defaults.WINDOW
    result_ttl: int = defaults.RESULT_TTL
    queue: str = keys.DEFAULT_QUEUE
    max_bytes: int = defaults.MAX_BYTES
    job_timeout: int = defaults.JOB_TIMEOUT
    retries: int = defaults.JOB_RETRIES
    extensions: tuple[str, ...] = defaults.EXTENSIONS
    globs: tuple[str, ...] = ()
    expect: str | None = None  # digits per image, as a count ("5") or a pattern ("#####-####")
    review_threshold: float | None = None  # None: each worker's own threshold
    part: str | None = None  # "K/N": only that part of the folder (one folder split over independent pools)
    shared_folder: str | None = None  # the folder under the workers' --files-root: its files go as paths, not bytes

    def open_batches(self, window: int) -> int:
        """The most batches open at once under a window of images: batches of large files hold
        fewer images, and this bounds their bytes as the window bounds small files'."""
        return max(window // self.batch_size, 1)

    def part_of_folder(self) -> Share | None:
        return Share.parse(self.part) if self.part else None

    def reading_options(self) -> dict[str, Any]:
        """What the worker needs to know about reading this run's images (stored with each batch);
        for a shared folder, the size limit too: the workers read the files, not the producer."""
        max_bytes = self.max_bytes if self.shared_folder is not None else None
        return {k: v for k, v in (("expect", self.expect), ("review_threshold", self.review_threshold),
                                  ("max_bytes", max_bytes)) if v is not None}


SUM_SHARES = """
-- The sum of a run's shares: each one's files once its producer has sent it whole ('total:K'),
-- else those its producer has found so far ('found:K'); and how many are sent whole.
local function sum_shares(run, shares)
  local sum, done = 0, 0
  for part = 0, shares - 1 do
    local final = redis.call('HGET', run, 'total:' .. part)
    if final then
      sum, done = sum + tonumber(final), done + 1
    else
      sum = sum + tonumber(redis.call('HGET', run, 'found:' .. part) or '0')
    end
  end
  return sum, done
end
"""

FINISH_SHARES = SUM_SHARES + """
-- KEYS[1]: a run's hash. ARGV: its share count, the time, then (share, files found) pairs from
-- a producer's finished pass. The run is enqueued once every share has been sent whole, and its
-- total is then final.
for i = 3, #ARGV, 2 do
  redis.call('HSET', KEYS[1], 'total:' .. ARGV[i], ARGV[i + 1])
end
local sum, done = sum_shares(KEYS[1], tonumber(ARGV[1]))
redis.call('HSET', KEYS[1], 'total', sum)
if done == tonumber(ARGV[1]) then
  redis.call('HSET', KEYS[1], 'status', 'enqueued', 'enqueued_at', ARGV[2])
end
return sum
"""


def finish_shares(connection: redis.Redis, run_id: str, share: Share, totals: dict[int, int]) -> int:
    """Record the files each share of `share` holds, once its pass is done; return the run's total
    so far (final once every share of the run is done). One script: shares finish concurrently."""
    return int(connection.register_script(FINISH_SHARES)(keys=[keys.run(run_id)],
                                                         args=[share.of, time.time(), *part_counts(share, totals)]))


def part_counts(share: Share, counts: dict[int, int]) -> list[int]:
    """A script's (part, count) arguments for each part of `share`, 0 for a part with none."""
    return [value for part in sorted(share.parts) for value in (part, counts.get(part, 0))]


SHOW_FOUND = SUM_SHARES + """
-- KEYS[1]: a run's hash. ARGV: its share count, then (share, files found so far) pairs from a
-- producer's pass in progress. While the run is enqueueing, its total is the sum of what its producers have found,
-- for `status`; a share's count only grows (a resumed producer starts its count again). Once
-- enqueued, FINISH_SHARES' sum is final: a follower ends when it has that many results.
if redis.call('HGET', KEYS[1], 'status') ~= 'enqueueing' then
  return 0
end
for i = 2, #ARGV, 2 do
  local found = 'found:' .. ARGV[i]
  if tonumber(ARGV[i + 1]) > tonumber(redis.call('HGET', KEYS[1], found) or '0') then
    redis.call('HSET', KEYS[1], found, ARGV[i + 1])
  end
end
redis.call('HSET', KEYS[1], 'total', (sum_shares(KEYS[1], tonumber(ARGV[1]))))
return 1
"""


def show_found(connection: redis.Redis, run_id: str, share: Share, found: dict[int, int]) -> None:
    """Record the files found so far in each part of `share` in a pass in progress, and the run's
    total (while it is being enqueued) as their sum over its producers. One script: a read then a
    write raced with another share's FINISH_SHARES and lowered a final total."""
    connection.register_script(SHOW_FOUND)(keys=[keys.run(run_id)], args=[share.of, *part_counts(share, found)])


def new_run_id() -> str:
    return f"{datetime.now(UTC):%Y%m%d-%H%M%S}-{uuid.uuid4().hex[:6]}"


def create_run(connection: redis.Redis, root: Path, settings: Settings, run_id: str | None = None) -> str:
    run_id = run_id or new_run_id()
    with connection.pipeline(transaction=True) as pipe:
        queue_creation(pipe, root, settings, run_id, shares=1)
        pipe.execute()
    return run_id


def queue_creation(pipe: redis.client.Pipeline, root: Path, settings: Settings, run_id: str, shares: int) -> None:
    """A new run's hash and its place in the runs index, on a transaction the caller executes."""
    pipe.hset(keys.run(run_id), mapping={
        "root": str(root.resolve()), "created_at": time.time(), "status": "enqueueing", "total": 0,
        "shares": shares, "batches": 0, "batch_size": settings.batch_size, "window": settings.window,
        "queue": settings.queue, "result_ttl": settings.result_ttl, "settings": json.dumps(asdict(settings)),
    })
    pipe.expire(keys.run(run_id), settings.result_ttl)
    pipe.zadd(keys.RUNS, {run_id: time.time()})


def run_meta(connection: redis.Redis, run_id: str) -> dict[str, str]:
    """The run's hash, decoded; RunError if there is no such run."""
    meta = text_hash(connection.hgetall(keys.run(run_id)))
    if not meta:
        raise RunError(f"no such run: {run_id} (never created, or its results expired)")
    return meta


def stored_settings(connection: redis.Redis, run_id: str) -> tuple[Path, Settings]:
    """The folder and settings a run was created with, so `--resume` sends the rest the same way."""
    meta = run_meta(connection, run_id)
    if "settings" not in meta:
        raise RunError(f"run {run_id} cannot be resumed: it was made by `watch` or an older version")
    fields = json.loads(meta["settings"])
    fields["extensions"], fields["globs"] = tuple(fields["extensions"]), tuple(fields["globs"])
    return Path(meta["root"]), Settings(**fields)


def join_run(connection: redis.Redis, root: Path, settings: Settings, run_id: str, shares: int) -> str:
    """Run `run_id` of root split `shares` ways: created by the first producer to come, joined by
    the others, which must name the same folder, settings and share count."""
    with connection.pipeline(transaction=True) as pipe:
        try:
            pipe.watch(keys.run(run_id))
            if not pipe.exists(keys.run(run_id)):
                pipe.multi()
                queue_creation(pipe, root, settings, run_id, shares)
                pipe.execute()
                return run_id
        except redis.WatchError:
            pass  # another producer created it a moment ago: join theirs
    stored_root, stored = stored_settings(connection, run_id)
    stored_shares = run_shares(connection, run_id)
    if stored_root != root.resolve() or stored != settings or stored_shares != shares:
        raise RunError(f"run {run_id} exists with folder {stored_root}, {stored_shares} share(s) and other "
                       f"settings or folder than this producer's: join it with the same folder and options")
    return run_id


def run_shares(connection: redis.Redis, run_id: str) -> int:
    """How many shares the run's folder is sent in (1 for a run made by one producer)."""
    return int(connection.hget(keys.run(run_id), "shares") or 1)
