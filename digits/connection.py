"""Connecting to Redis from a URL: password or ACL user in the URL, `rediss://` for TLS."""

from __future__ import annotations

import os
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import click
import redis
from redis.backoff import ExponentialWithJitterBackoff
from redis.retry import Retry

DEFAULT_URL = "redis://127.0.0.1:6379/0"
URL_ENV = "REDIS_URL"


def default_url() -> str:
    return os.environ.get(URL_ENV, DEFAULT_URL)


redis_url_option = click.option(
    "--redis-url", envvar=URL_ENV, default=default_url, show_default=DEFAULT_URL,
    help=f"redis://[user:password@]host:port/db, or rediss:// for TLS (env {URL_ENV}).")


# A patient client retries a command that met a dropped connection, backing off exponentially
# (with jitter) up to 3 s between tries: 20 tries ride out about a minute of Redis being away.
OUTAGE_RETRIES = 20
OUTAGE_BACKOFF = ExponentialWithJitterBackoff(cap=3.0, base=0.1)


def connect(url: str, *, patient: bool = True, check: bool = True) -> redis.Redis:
    """A client that keeps bytes as bytes: image payloads and theta files are binary.

    Patient clients ride out a Redis restart. With check, Redis must answer at once first, so a
    wrong URL or a Redis that is down fails now with a clear message instead of after a minute.
    """
    if check:
        with client(url, retries=0) as first_contact:
            first_contact.ping()
    return client(url, retries=OUTAGE_RETRIES if patient else 0)


def client(url: str, retries: int) -> redis.Redis:
    return redis.Redis.from_url(
        url, health_check_interval=30, socket_keepalive=True,
        retry=Retry(OUTAGE_BACKOFF, retries), retry_on_error=[redis.ConnectionError, redis.TimeoutError],
    )


class RedisErrorsAsMessages:
    """Mixin for click commands: an unreachable or refusing Redis is one clear line, not a traceback."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)  # type: ignore[misc]
        except redis.AuthenticationError as exc:
            raise click.ClickException(f"Redis refused the credentials: {exc}") from None
        except redis.ResponseError as exc:
            if "NOPERM" in str(exc) or "WRONGPASS" in str(exc):
                raise click.ClickException(f"Redis refused: {exc}") from None
            raise
        except redis.ConnectionError as exc:
            raise click.ClickException(f"cannot reach Redis: {exc}") from None


class Group(RedisErrorsAsMessages, click.Group):
    """A CLI group whose commands report Redis failures as messages."""


class Command(RedisErrorsAsMessages, click.Command):
    """A CLI command that reports Redis failures as a message."""


def text(value: Any) -> str:
    """A Redis reply as str: replies are bytes because payloads are binary."""
    return value.decode() if isinstance(value, bytes) else str(value)


def text_hash(reply: Any) -> dict[str, str]:
    """An HGETALL reply as str keys and values (empty if the hash does not exist)."""
    return {text(k): text(v) for k, v in reply.items()}


def redact(url: str) -> str:
    """The URL with any password replaced, safe for logs and status output."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    user = parts.username or ""
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    return urlunsplit((parts.scheme, f"{user}:***@{host}", parts.path, parts.query, parts.fragment))
