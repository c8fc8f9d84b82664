"""One producer a share: a share's lease is held while a producer sends it, waited for when its
holder stopped renewing it, and refused while its holder is alive."""

from __future__ import annotations

import threading
import time

import pytest
import redis

from digits import keys
from producer.files import Share
from producer.leases import ShareBusy, ShareLease, ShareLost

SECONDS = 1.0  # a short lease, so that waiting one out is quick


def test_a_lease_is_renewed_while_held_and_given_back_after(connection: redis.Redis) -> None:
    with ShareLease(connection, "leased", Share.parse("2/3"), SECONDS) as lease:
        time.sleep(2.5 * SECONDS)  # renewed meanwhile: still there past its first expiry
        assert connection.get(keys.run_sender("leased", 1)) == lease.holder.encode()
        assert 0 < connection.pttl(keys.run_sender("leased", 1)) <= 1000 * SECONDS
    assert not connection.exists(keys.run_sender("leased", 1))


def test_a_live_producers_share_is_refused_naming_it(connection: redis.Redis) -> None:
    """A second producer of a share waits as long as a lease lasts, then gives up, keeping none of
    the shares it took meanwhile; other shares of the run are free."""
    with ShareLease(connection, "busy", Share.parse("1/2"), SECONDS) as first:
        started = time.monotonic()
        whole = ShareLease(connection, "busy", Share.whole(2), SECONDS)
        with pytest.raises(ShareBusy, match=r"run busy: share 1/2 is being sent by another producer \(.*:\d+:"):
            whole.take()
        assert SECONDS <= time.monotonic() - started < 3 * SECONDS
        assert not connection.exists(keys.run_sender("busy", 1))  # share 2 given back
        assert connection.get(keys.run_sender("busy", 0)) == first.holder.encode()
        with ShareLease(connection, "busy", Share.parse("2/2"), SECONDS):
            pass


def test_a_killed_producers_lease_lapses_and_is_taken(connection: redis.Redis) -> None:
    """A holder killed outright renews no more: its lease lapses and a resumed producer takes it,
    having waited no longer than that."""
    connection.set(keys.run_sender("killed", 0), "elsewhere:123:dead", px=int(600 * SECONDS))
    started = time.monotonic()
    with ShareLease(connection, "killed", Share(), SECONDS) as lease:
        assert 0.4 * SECONDS < time.monotonic() - started < 1.5 * SECONDS
        assert connection.get(keys.run_sender("killed", 0)) == lease.holder.encode()


def test_the_next_producer_takes_a_share_as_soon_as_it_is_given_back(connection: redis.Redis) -> None:
    taken = threading.Event()

    def second() -> None:
        with ShareLease(connection, "next", Share(), 10 * SECONDS):
            taken.set()

    with ShareLease(connection, "next", Share(), 10 * SECONDS):
        waiting = threading.Thread(target=second)
        waiting.start()
        assert not taken.wait(0.5)
    assert taken.wait(2.0)
    waiting.join()


def test_a_lease_a_redis_restart_lost_is_taken_again(connection: redis.Redis) -> None:
    with ShareLease(connection, "restart", Share(), SECONDS) as lease:
        connection.delete(keys.run_sender("restart", 0))  # as a restart from an older snapshot does
        time.sleep(SECONDS)
        assert connection.get(keys.run_sender("restart", 0)) == lease.holder.encode()


def test_a_producer_whose_share_was_taken_stops_before_its_next_batch(connection: redis.Redis) -> None:
    """A lease taken by another producer (this one's lapsed) is noticed within a renewal, and the
    share left to its new holder: not renewed over it, not given back on its behalf."""
    with ShareLease(connection, "taken", Share.parse("1/2"), SECONDS) as lease:
        connection.set(keys.run_sender("taken", 0), "elsewhere:7:live", px=int(10_000 * SECONDS))
        time.sleep(SECONDS)
        with pytest.raises(ShareLost, match=r"run taken: share 1/2 was taken by another producer \(elsewhere:7:live\)"):
            lease.check()
    assert connection.get(keys.run_sender("taken", 0)) == b"elsewhere:7:live"


def test_a_producer_that_stalled_past_its_lease_asks_before_sending_again(connection: redis.Redis) -> None:
    """A stalled process renews nothing, its renewing thread stalled with it: its first check after
    the stall renews the lease itself, so it learns at once whether another producer took it."""
    stalled = ShareLease(connection, "stalled", Share(), SECONDS)
    stalled.take()  # held, but never renewed: as a process paused right after taking it
    time.sleep(1.2 * SECONDS)  # lapsed
    with ShareLease(connection, "stalled", Share(), SECONDS) as other:
        with pytest.raises(ShareLost, match=r"run stalled: the run was taken by another producer"):
            stalled.check()
        assert connection.get(keys.run_sender("stalled", 0)) == other.holder.encode()
    alone = ShareLease(connection, "alone", Share(), SECONDS)
    alone.take()
    time.sleep(1.2 * SECONDS)  # lapsed, and nobody took it: the check takes it again and goes on
    alone.check()
    assert connection.get(keys.run_sender("alone", 0)) == alone.holder.encode()
    alone.give_back(alone.share.parts)
