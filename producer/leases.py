"""One producer a share: a producer holds a lease in Redis on every share of a run it sends.

A pass sends the files that have no result and are in no open batch. Two producers sending one
share at once (a run resumed while its first producer still runs, one share started on two
hosts) would both send the files that neither has seen sent: classified twice, counted twice. So
a producer takes the lease of each share it sends before sending anything (SET NX with a short
expiry), renews it while it sends and gives it back at the end. A producer killed outright stops
renewing, and its lease lapses within SENDER_LEASE_SECONDS: a producer resuming the run waits
that long for it. A lease still renewed after that belongs to a live producer: the new one says
so and sends nothing. A producer that stalls past its lease (a paused VM, a stopped process) may
find its share taken when it wakes: it checks before every batch it sends (`check`), renewing
first if its last renewal is half a lease old, and stops with ShareLost instead of sending on.
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
import socket
import threading
import time
from types import TracebackType

import redis

from digits import defaults, keys
from digits.connection import text
from producer.files import Share

log = logging.getLogger(__name__)

RENEW = """-- KEYS[1] the lease, ARGV[1] its holder, ARGV[2] milliseconds: renewed only by its holder
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) and 1 or 0"""
RELEASE = """-- KEYS[1] the lease, ARGV[1] its holder: given back only by its holder
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0"""


class ShareBusy(RuntimeError):
    """Another live producer sends this share of the run; the message names it."""


class ShareLost(ShareBusy):
    """This producer's lease lapsed and another producer took the share: it must send no more."""


class ShareLease:
    """The leases of every part of `share` for one producer, held while in a `with` block."""

    def __init__(self, connection: redis.Redis, run_id: str, share: Share,
                 seconds: float = defaults.SENDER_LEASE_SECONDS) -> None:
        self.redis = connection
        self.run_id = run_id
        self.share = share
        self.milliseconds = int(seconds * 1000)
        self.holder = f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"
        self.done = threading.Event()
        self.renewing = threading.Thread(target=self.renew, name="share-lease", daemon=True)
        self.renewal = connection.register_script(RENEW)
        self.release = connection.register_script(RELEASE)
        self.renewed_at = time.monotonic()  # when every part's lease was last renewed
        self.lost: str | None = None  # why this producer no longer holds its share, once it does not

    def __enter__(self) -> ShareLease:
        self.take()
        self.renewing.start()
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        self.done.set()
        self.renewing.join()
        self.give_back(self.share.parts)

    def take(self) -> None:
        """Take every part's lease, waiting as long as a lease lasts for those whose holder stopped
        renewing; ShareBusy (and none kept) if one is still held after that."""
        deadline = time.monotonic() + 1.2 * self.milliseconds / 1000  # a lease, and a fifth for the clocks
        waiting = sorted(self.share.parts)
        while waiting := [part for part in waiting if not self.redis.set(
                keys.run_sender(self.run_id, part), self.holder, nx=True, px=self.milliseconds)]:
            if time.monotonic() > deadline:
                holder = text(self.redis.get(keys.run_sender(self.run_id, waiting[0])) or b"gone just now")
                self.give_back(self.share.parts.difference(waiting))
                raise ShareBusy(f"run {self.run_id}: {self.name(waiting[0])} is being sent by another producer "
                                f"({holder}); let it finish, or stop it first")
            time.sleep(0.1)
        self.renewed_at = time.monotonic()

    def renew(self) -> None:
        """Every third of a lease, until done or lost: renew each part's lease (taking it again if a
        Redis restart lost it). A Redis that is down is waited out, as every other client does."""
        while not self.done.wait(self.milliseconds / 3000) and self.lost is None:
            try:
                self.renew_once()
            except redis.RedisError as exc:
                log.warning("run %s: cannot renew this producer's lease: %s", self.run_id, exc)

    def renew_once(self) -> None:
        """Renew every part's lease now; note it lost if another producer holds one."""
        for part in self.share.parts:
            lease = keys.run_sender(self.run_id, part)
            if not self.renewal(keys=[lease], args=[self.holder, self.milliseconds]):
                holder = text(self.redis.get(lease) or b"gone just now")
                self.lost = (f"run {self.run_id}: {self.name(part)} was taken by another producer ({holder}) "
                             f"while this one stalled past its lease; this one stopped sending it")
                log.warning("%s", self.lost)
                return
        self.renewed_at = time.monotonic()

    def check(self) -> None:
        """Before sending: ShareLost if another producer took the share. A lease last renewed half
        a lease ago or more (this process stalled, and its renewing thread with it) is renewed
        first, so a producer that wakes from a stall learns whether it still holds its share
        before it sends anything more."""
        if self.lost is None and time.monotonic() - self.renewed_at > self.milliseconds / 2000:
            self.renew_once()
        if self.lost is not None:
            raise ShareLost(self.lost)

    def give_back(self, parts: frozenset[int]) -> None:
        for part in parts:
            with contextlib.suppress(redis.RedisError):  # a lease not given back lapses by itself
                self.release(keys=[keys.run_sender(self.run_id, part)], args=[self.holder])

    def name(self, part: int) -> str:
        return f"share {part + 1}/{self.share.of}" if self.share.of > 1 else "the run"
