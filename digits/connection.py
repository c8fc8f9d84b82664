"""Connecting to Redis from a URL: password or ACL user in the URL, `rediss://` for TLS."""

from __future__ import annotations

import os
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import click
import redis
from redis.backoff import ExponentialWithJitterBackoff
from redis.connection import parse_url
from redis.retry import Retry

from digits.defaults import REDIS_TIMEOUT

DEFAULT_URL = "redis://127.0.0.1:6379/0"
URL_ENV = "REDIS_URL"
URL_FORM = "redis://[user:password@]host:port/db, or rediss:// for TLS"


def default_url() -> str:
    return os.environ.get(URL_ENV, DEFAULT_URL)


def check_url(_ctx: click.Context | None, _param: click.Parameter | None, url: str) -> str:
    """A URL redis-py can use, or one clear line that says why not (never echoing a password)."""
    try:
        parts = urlsplit(url)
        parse_url(url)
    except ValueError as exc:
        raise click.ClickException(f"the Redis URL is malformed: {exc}; expected {URL_FORM}") from None
    database = parts.path.strip("/")
    if parts.scheme in ("redis", "rediss") and database and not database.isdigit():
        raise click.ClickException(f"the Redis URL's database must be a number, not {database!r}; expected {URL_FORM}")
    return url


redis_url_option = click.option(
    "--redis-url", envvar=URL_ENV, default=default_url, show_default=DEFAULT_URL, callback=check_url,
    help=f"{URL_FORM} (env {URL_ENV}).")


# A patient client retries a command that met a dropped connection, backing off exponentially
# (with jitter) up to 3 s between tries: 20 tries ride out about a minute of Redis being away.
OUTAGE_RETRIES = 20
OUTAGE_BACKOFF = ExponentialWithJitterBackoff(cap=3.0, base=0.1)


def connect(url: str, *, patient: bool = True, check: bool = True, timeout: float = REDIS_TIMEOUT) -> redis.Redis:
    """A client that keeps bytes as bytes: image payloads and theta files are binary.

    Patient clients ride out a Redis restart. With check, Redis must answer at once first, so a
    wrong URL or a Redis that is down fails now with a clear message instead of after a minute.
    A Redis that accepts connections but does not answer fails a command after `timeout` seconds
    (patient clients try again) instead of hanging it forever; a client that blocks on purpose
    (an RQ worker's pop) needs a longer one.
    """
    if check:
        with client(url, retries=0, timeout=REDIS_TIMEOUT) as first_contact:
            first_contact.ping()
    return client(url, retries=OUTAGE_RETRIES if patient else 0, timeout=timeout)


def client(url: str, retries: int, timeout: float) -> redis.Redis:
    return redis.Redis.from_url(
        url, health_check_interval=30, socket_keepalive=True, socket_connect_timeout=timeout, socket_timeout=timeout,
        retry=Retry(OUTAGE_BACKOFF, retries), retry_on_error=[redis.ConnectionError, redis.TimeoutError],
    )


class RedisErrorsAsMessages:
    """Mixin for click commands: an unreachable, mute or refusing Redis, or a file that cannot be
    opened or written, is one clear line, not a traceback."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)  # type: ignore[misc]
        except redis.AuthenticationError as exc:
            raise click.ClickException(f"Redis refused the credentials: {exc}") from None
        except redis.exceptions.NoPermissionError as exc:  # a plain command, a pipeline's or a script's
            raise click.ClickException(f"Redis refused the URL's user: {exc} "
                                       "(docs/security.md says what each ACL user may do)") from None
        except redis.ResponseError as exc:
            if "DB index is out of range" in str(exc):
                raise click.ClickException(f"Redis has no such database ({exc}): "
                                           "the number at the end of the URL is too high") from None
            raise
        except redis.TimeoutError as exc:
            raise click.ClickException(f"Redis did not answer within {REDIS_TIMEOUT:g} s ({exc}): "
                                       "is it stopped, overloaded, or not Redis?") from None
        except redis.ConnectionError as exc:
            raise click.ClickException(f"cannot reach Redis: {exc}") from None
        except OSError as exc:
            if exc.filename is None:
                raise
            raise click.ClickException(f"{exc.filename}: {exc.strerror}") from None


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
