"""Keying flagged codes: which station shows which image, and what a person keyed, in Redis.

A run's flagged paths (its review set) not yet keyed wait in `keys.run_keying`, scored 0; a
station claims the first free one by setting its score to a deadline a claim period ahead, and
renews it while the image is on screen. A claim that is not renewed (the station crashed, the
browser closed) lapses at its deadline and the image is free again, so a crash loses at most
the image on screen. Keying stores the code in `keys.run_keyed`, beside the machine's result,
and takes the path out of the queue, in the same step; each step is one Lua script, so two
stations never hold the same image, nor key one twice. Every script keeps the keying keys
expiring with the run's hash (its remaining TTL), as the results' script does.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import redis

from digits import defaults, keys
from digits.connection import text
from digits.results import Finished, decode_result, encode_result, results_count

Keyed = dict[str, Any]  # what a station stored for one path: code, digits, unreadable, station, keyed_at
CODE = re.compile(r"[0-9]+(?:[- ][0-9]+)*")  # ASCII digits: \\d would take any script's


class KeyingError(ValueError):
    """A code cannot be keyed (bad code, not flagged, already keyed, held by another station)."""


def script_keys(run_id: str) -> list[str]:
    """KEYS of every script below: the run (its TTL), the queue, the claims, the keyed codes, the review set."""
    return [keys.run(run_id), keys.run_keying(run_id), keys.run_claims(run_id), keys.run_keyed(run_id),
            keys.run_review(run_id)]


# Shared by the scripts: the run's remaining TTL (nil if the run is gone), Redis' clock in ms, and
# keeping the keying keys (KEYS[2] to KEYS[4]) expiring with the run.
PRELUDE = """
local ttl = redis.call('PTTL', KEYS[1])
if ttl == -2 then return {-1} end
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)
local function keep()
  if ttl > 0 then for i = 2, 4 do redis.call('PEXPIRE', KEYS[i], ttl) end end
end
"""

# ARGV: paths of the review set. Queues those not keyed; a claimed one keeps its claim.
ADD_SCRIPT = PRELUDE + """
for i = 1, #ARGV do
  if redis.call('HEXISTS', KEYS[4], ARGV[i]) == 0 then redis.call('ZADD', KEYS[2], 'NX', 0, ARGV[i]) end
end
keep()
return {1}
"""

# ARGV: station, claim ms. Claims the first waiting path (or one whose claim lapsed): {1, left, path}.
CLAIM_SCRIPT = PRELUDE + """
local found = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', now, 'LIMIT', 0, 1)
if #found == 0 then return {0, redis.call('ZCARD', KEYS[2])} end
redis.call('ZADD', KEYS[2], 'XX', now + tonumber(ARGV[2]), found[1])
redis.call('HSET', KEYS[3], found[1], ARGV[1])
keep()
return {1, redis.call('ZCARD', KEYS[2]), found[1]}
"""

# ARGV: station, claim ms, then paths. Renews the station's claims on them: {1, renewed paths...}.
RENEW_SCRIPT = PRELUDE + """
local renewed = {1}
for i = 3, #ARGV do
  if redis.call('HGET', KEYS[3], ARGV[i]) == ARGV[1] and redis.call('ZSCORE', KEYS[2], ARGV[i]) then
    redis.call('ZADD', KEYS[2], 'XX', now + tonumber(ARGV[2]), ARGV[i])
    table.insert(renewed, ARGV[i])
  end
end
keep()
return renewed
"""

# ARGV: station, then paths. Puts the station's claimed paths back in the queue at once.
RELEASE_SCRIPT = PRELUDE + """
for i = 2, #ARGV do
  if redis.call('HGET', KEYS[3], ARGV[i]) == ARGV[1] then
    redis.call('ZADD', KEYS[2], 'XX', 0, ARGV[i])
    redis.call('HDEL', KEYS[3], ARGV[i])
  end
end
return {1}
"""

# ARGV: station, path, keyed JSON. Stores it unless the path is keyed, not flagged, or held by
# another station's live claim: {1, left} or {0, reason, detail}.
SUBMIT_SCRIPT = PRELUDE + """
if redis.call('HEXISTS', KEYS[4], ARGV[2]) == 1 then return {0, 'keyed', redis.call('HGET', KEYS[4], ARGV[2])} end
if redis.call('SISMEMBER', KEYS[5], ARGV[2]) == 0 then return {0, 'unflagged', ''} end
local deadline = redis.call('ZSCORE', KEYS[2], ARGV[2])
local holder = redis.call('HGET', KEYS[3], ARGV[2])
if deadline and tonumber(deadline) > now and holder and holder ~= ARGV[1] then return {0, 'claimed', holder} end
redis.call('HSET', KEYS[4], ARGV[2], ARGV[3])
redis.call('ZREM', KEYS[2], ARGV[2])
redis.call('HDEL', KEYS[3], ARGV[2])
keep()
return {1, redis.call('ZCARD', KEYS[2])}
"""


def run_script(connection: redis.Redis, run_id: str, script: str, args: Sequence[Any]) -> list[Any]:
    """One of the scripts above; KeyingError if the run is gone (expired, or never was)."""
    reply: list[Any] = connection.register_script(script)(keys=script_keys(run_id), args=list(args))
    if reply[0] == -1:
        raise KeyingError(f"no such run: {run_id} (never created, or its results expired)")
    return reply


def sync(connection: redis.Redis, run_id: str, chunk: int = 1000) -> None:
    """Queue the flagged paths that are neither keyed nor queued yet (the review set grows while a
    run is read). Each flagged path is keyed or queued, never both, so counting tells when to scan."""
    with connection.pipeline(transaction=False) as pipe:
        pipe.scard(keys.run_review(run_id))
        pipe.hlen(keys.run_keyed(run_id))
        pipe.zcard(keys.run_keying(run_id))
        flagged, keyed, queued = pipe.execute()
    if flagged <= keyed + queued:
        return
    paths: list[bytes] = []
    for path in connection.sscan_iter(keys.run_review(run_id), count=chunk):
        paths.append(path)
        if len(paths) == chunk:
            run_script(connection, run_id, ADD_SCRIPT, paths)
            paths = []
    if paths:
        run_script(connection, run_id, ADD_SCRIPT, paths)


@dataclass(frozen=True)
class Claimed:
    """The path a station now holds (None if every remaining one is on another screen), and how
    many flagged codes are left to key, that one included."""

    path: str | None
    left: int


def claim_next(connection: redis.Redis, run_id: str, station: str,
               claim_seconds: float = defaults.CLAIM_SECONDS) -> Claimed:
    """Claim the next flagged path to key, in path order, for claim_seconds (renew to keep it)."""
    sync(connection, run_id)
    reply = run_script(connection, run_id, CLAIM_SCRIPT, [station, int(claim_seconds * 1000)])
    return Claimed(text(reply[2]) if reply[0] == 1 else None, int(reply[1]))


def renew(connection: redis.Redis, run_id: str, station: str, paths: Sequence[str],
          claim_seconds: float = defaults.CLAIM_SECONDS) -> list[str]:
    """Extend the station's claims on paths; the paths it still holds (a lapsed claim that another
    station took is not among them)."""
    reply = run_script(connection, run_id, RENEW_SCRIPT, [station, int(claim_seconds * 1000), *paths])
    return [text(path) for path in reply[1:]]


def release(connection: redis.Redis, run_id: str, station: str, paths: Sequence[str]) -> None:
    """Give the station's claims on paths back at once (the page closed), instead of at their deadline."""
    run_script(connection, run_id, RELEASE_SCRIPT, [station, *paths])


def parse_code(typed: str, max_chars: int = defaults.MAX_KEYED_CHARS) -> tuple[str, str]:
    """A keyed code as (code, digits): digits, with '-' or one space between groups."""
    code = typed.strip()
    if len(code) > max_chars:
        raise KeyingError(f"the code {code[:max_chars]!r}... is over {max_chars} characters")
    if not CODE.fullmatch(code):
        raise KeyingError(f"{code!r} is not a code: type digits, with '-' or a space between groups")
    return code, re.sub(r"[^0-9]", "", code)


def submit(connection: redis.Redis, run_id: str, station: str, path: str, typed: str | None) -> Keyed:
    """Store what the station keyed for path (typed=None: unreadable); the stored record.

    Refused (KeyingError) if the path is not flagged, is already keyed, or is held by another
    station's live claim; a station whose own claim lapsed may still key it if nobody took it.
    """
    code, digits = parse_code(typed) if typed is not None else (None, None)
    record: Keyed = {"code": code, "digits": digits, "unreadable": typed is None, "station": station,
                     "keyed_at": round(time.time(), 3)}
    reply = run_script(connection, run_id, SUBMIT_SCRIPT, [station, path, json.dumps(record)])
    if reply[0] == 1:
        return record
    reason, detail = text(reply[1]), text(reply[2])
    if reason == "keyed":
        raise KeyingError(f"{path} was already keyed by {json.loads(detail)['station']}")
    if reason == "unflagged":
        raise KeyingError(f"{path} is not flagged for review in run {run_id}")
    raise KeyingError(f"{path} is on the screen of station {detail}")


def keyed_codes(connection: redis.Redis, run_id: str, paths: Sequence[str] | None = None) -> dict[str, Keyed]:
    """The keyed records of a run (or of some of its paths), by path."""
    if paths is None:
        return {text(path): json.loads(raw) for path, raw in connection.hgetall(keys.run_keyed(run_id)).items()}
    raws = connection.hmget(keys.run_keyed(run_id), list(paths))
    return {path: json.loads(raw) for path, raw in zip(paths, raws, strict=True) if raw is not None}


def with_keyed(connection: redis.Redis, run_id: str, batches: list[Finished]) -> list[Finished]:
    """Finished batches whose keyed paths' lines carry the keyed code, under `keyed`; every other
    stored line is passed on as it is (and a run nobody keyed costs one EXISTS)."""
    if not batches or not connection.exists(keys.run_keyed(run_id)):
        return batches
    keyed = keyed_codes(connection, run_id, [path for batch in batches for path in batch.paths])
    if not keyed:
        return batches
    return [batch._replace(text="\n".join(encode_result({**decode_result(line), "keyed": keyed[path]})
                                           if path in keyed else line
                                           for path, line in zip(batch.paths, batch.lines, strict=True)))
            for batch in batches]


def progress(connection: redis.Redis, run_id: str) -> dict[str, Any]:
    """Where keying stands: flagged codes left (on screens included) and keyed, and how far the
    run's reading is (more codes may be flagged until it is complete)."""
    sync(connection, run_id)
    with connection.pipeline(transaction=False) as pipe:
        pipe.zcard(keys.run_keying(run_id))
        pipe.hlen(keys.run_keyed(run_id))
        pipe.scard(keys.run_review(run_id))
        pipe.hmget(keys.run(run_id), ["total", "status"])
        left, keyed, flagged, (total, status) = pipe.execute()
    total, read = int(total or 0), results_count(connection, run_id)
    return {"left": left, "keyed": keyed, "flagged": flagged, "read": read, "total": total,
            "complete": status == b"enqueued" and read >= total}
