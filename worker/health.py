"""`digits-worker --health live|ready`: is this host's worker pool up, and serving the current model?

Run by compose and Kubernetes every few seconds, so it reads Redis directly and loads no model
libraries.
"""

from __future__ import annotations

import socket

import redis
from rq import Worker

from digits import keys
from digits.connection import text


def probe(connection: redis.Redis, kind: str) -> tuple[bool, str]:
    """live: Redis answers and a worker of this host is registered (heartbeats expire in 35 s).
    ready: also, one of them has loaded the current model version."""
    host = socket.gethostname()
    try:
        mine = [w.name for w in Worker.all(connection=connection) if w.name.startswith(f"{host}.")]
        pointer = connection.get(keys.MODEL_CURRENT)
        loaded = [text(v) if v else None for v in connection.mget([keys.worker_model(n) for n in mine])] if mine else []
    except redis.RedisError as exc:
        return False, f"unhealthy: Redis: {exc}"
    current = text(pointer) if pointer is not None else None
    if not mine:
        return False, f"unhealthy: no worker of host {host} is registered"
    if kind == "live":
        return True, f"live: {len(mine)} worker(s) of host {host} registered"
    if current is None:
        return False, "not ready: no model version is current"
    if current not in loaded:
        return False, f"not ready: no worker of host {host} has loaded {current} yet"
    return True, f"ready: {loaded.count(current)} of {len(mine)} worker(s) serve {current}"
