"""Shared fixtures: a private redis-server per test session, real worker processes, the default model."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis

from digits.connection import connect
from digits.redis_server import RedisServer
from digits.registry import DEFAULT_MODEL_DIR, Registry

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    with RedisServer() as server:
        yield server


@pytest.fixture
def redis_url(redis_server: RedisServer) -> str:
    return redis_server.url


@pytest.fixture
def connection(redis_server: RedisServer) -> Iterator[redis.Redis]:
    client = connect(redis_server.url)
    client.flushall()
    yield client
    client.close()


@pytest.fixture
def registry(connection: redis.Redis) -> Registry:
    return Registry(connection)


@pytest.fixture
def default_version(registry: Registry) -> str:
    """The bundled default model, published and current."""
    return registry.publish_dir(DEFAULT_MODEL_DIR, promote=True)


class WorkerPool:
    """`digits-worker --count N` as a real process group, stopped at the end of the test."""

    def __init__(self, redis_url: str, count: int, extra: list[str] | None = None) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "worker", "--count", str(count), "--redis-url", redis_url,
             "--log-level", "WARNING", *(extra or [])],
            cwd=ROOT, start_new_session=True,
        )

    def wait_registered(self, connection: redis.Redis, count: int, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while connection.scard("rq:workers") < count:
            assert self.process.poll() is None, "worker pool exited early"
            assert time.monotonic() < deadline, "workers did not register in time"
            time.sleep(0.1)

    def stop(self) -> int:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        return self.process.returncode


@pytest.fixture
def start_workers(redis_url: str, connection: redis.Redis) -> Iterator[Callable[..., WorkerPool]]:
    pools: list[WorkerPool] = []

    def start(count: int = 1, extra: list[str] | None = None) -> WorkerPool:
        pool = WorkerPool(redis_url, count, extra)
        pools.append(pool)
        pool.wait_registered(connection, count)
        return pool

    yield start
    for pool in pools:
        pool.stop()
