"""Counters as queue operations (:mod:`gaesignals.queue.counters`), on every store: bumps,
and loss estimates written only over what was read."""

from __future__ import annotations

from gaesignals.keys import signal_keys
from gaesignals.queue import counters
from gaesignals.stores import Store

KEYS = signal_keys("counted", "")
SENT, LOST = KEYS.counter("sent"), KEYS.counter("lost")


def _value(store: Store, key: str) -> bytes | None:
    with store.connection() as conn:
        item = conn.gets_many([key]).get(key)
    return None if item is None else item[0].rstrip(b" ")


def test_bump_creates_adds_and_stops_at_zero(store: Store) -> None:
    """A bump creates a missing counter at the delta (0 for a negative one), adds to one that
    exists, and a subtraction past 0 stops there."""
    with store.connection() as conn:
        counters.bump(conn, {SENT: 3, LOST: -2})
        assert (_value(store, SENT), _value(store, LOST)) == (b"3", b"0")
        counters.bump(conn, {SENT: 2})
        assert _value(store, SENT) == b"5"
        counters.bump(conn, {SENT: -9})
    assert _value(store, SENT) == b"0"


def test_a_fresh_estimate_is_only_created(store: Store) -> None:
    """A fresh estimate is written where the counter does not exist, never over one that does."""
    with store.connection() as conn:
        counters.bump(conn, {SENT: 7})
        written = counters.record_estimates(conn, {SENT: b"1", LOST: b"2"}, {})
    assert written == {SENT: False, LOST: True}
    assert (_value(store, SENT), _value(store, LOST)) == (b"7", b"2")


def test_a_grown_estimate_replaces_only_what_was_read(store: Store) -> None:
    """An estimate grown over the value read is written while the counter still holds it, and
    not once another deliverer changed it meanwhile."""
    with store.connection() as conn:
        counters.record_estimates(conn, {LOST: b"2"}, {})
        read = conn.gets_many([LOST])[LOST]
        assert counters.record_estimates(conn, {}, {LOST: (b"5", read)}) == {LOST: True}
        assert _value(store, LOST) == b"5"
        assert counters.record_estimates(conn, {}, {LOST: (b"9", read)}) == {LOST: False}
    assert _value(store, LOST) == b"5"


def test_an_estimate_read_without_a_token_is_read_again(store: Store) -> None:
    """A counter read without a CAS token (a native take reads none) is read again for one: the
    estimate is written if the value is unchanged, not if it changed."""
    with store.connection() as conn:
        counters.record_estimates(conn, {LOST: b"2"}, {})
        read = (conn.gets_many([LOST])[LOST][0], None)
        assert counters.record_estimates(conn, {}, {LOST: (b"4", read)}) == {LOST: True}
        assert _value(store, LOST) == b"4"
        assert counters.record_estimates(conn, {}, {LOST: (b"6", read)}) == {}
    assert _value(store, LOST) == b"4"
