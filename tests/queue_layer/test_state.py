"""The reads reports make (:mod:`gaesignals.queue.state`), on every store: queues, counters,
locks and dead letters, read without changing anything, whatever the keys hold."""

from __future__ import annotations

import logging

import pytest

import gaesignals
from gaesignals import StoreUnavailable, accounting
from gaesignals.config import get_settings
from gaesignals.keys import COUNTERS, signal_keys
from gaesignals.queue import counters
from gaesignals.queue import state as queue_state
from gaesignals.queue.lease import lock_value
from gaesignals.stores import Store
from gaesignals.testing import DownStore

from ..conftest import RawAccess
from .support import letter

KEYS = signal_keys("looked", "")
OTHER = signal_keys("other", "")
SIGNALS = {"looked": KEYS, "other": OTHER}
#: The lease each signal declares (the default), by which its lock is judged.
LEASES = dict.fromkeys(SIGNALS, 30)

#: What a cache writer may plant in a counter: none of it is a count.
NOT_NUMBERS = [b"9" * 5000, b"garbage", b"-5", "\u0663\u0663".encode(), b"\xff\x00" * 40, b""]


def test_scan_queues_reads_the_keys_that_exist(raw: RawAccess) -> None:
    """Each queue key that exists reads as its bytes, an empty one as empty; a missing one is
    absent; nothing is changed."""
    raw.set(KEYS.queue, b"\x00garbage\xff")
    raw.set(OTHER.queue, b"")
    with raw.store.connection() as conn:
        read = queue_state.scan_queues(conn, [KEYS.queue, OTHER.queue, "gs::q:{missing}"])
    assert read == {KEYS.queue: b"\x00garbage\xff", OTHER.queue: b""}
    assert raw.get(KEYS.queue) == b"\x00garbage\xff"


def test_ping_answers_on_a_store_that_is_up(store: Store) -> None:
    """A ping on a live store returns, and writes nothing."""
    with store.connection() as conn:
        queue_state.ping(conn, "")
        assert conn.gets_many([signal_keys("health", "").counter("sent")]) == {}


def test_ping_raises_when_the_store_is_down() -> None:
    """A store that cannot be reached fails the report's first call with StoreUnavailable."""
    with pytest.raises(StoreUnavailable), DownStore().connection() as conn:
        queue_state.ping(conn, "")


def test_read_counters_reads_what_was_bumped(store: Store) -> None:
    """Counters read back as bumped; a missing counter reads as 0."""
    with store.connection() as conn:
        counters.bump(conn, {KEYS.counter("sent"): 4, KEYS.counter("delivered"): 3})
        counters.bump(conn, {KEYS.counter("delivered"): -1})
        read = queue_state.read_counters(conn, SIGNALS, ["sent", "delivered", "lost"])
    assert read == {
        "looked": {"sent": 4, "delivered": 2, "lost": 0},
        "other": {"sent": 0, "delivered": 0, "lost": 0},
    }


@pytest.mark.parametrize("planted", NOT_NUMBERS, ids=range(len(NOT_NUMBERS)))
def test_counters_holding_non_numbers_read_as_zero(
    raw: RawAccess,
    planted: bytes,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A counter holding something that is not a count (5,000 digits, a word, a sign,
    non-ASCII digits, binary, nothing) reads as 0 without raising, said in the log, and the
    others read true."""
    monkeypatch.setattr(accounting, "_reported_corrupt", set())
    for counter in COUNTERS:
        raw.set(KEYS.counter(counter), planted)
    with raw.store.connection() as conn:
        counters.bump(conn, {OTHER.counter("sent"): 2})
    with caplog.at_level(logging.WARNING, "gaesignals"), raw.store.connection() as conn:
        read = queue_state.read_counters(conn, SIGNALS, COUNTERS)
        states = queue_state.read_states(conn, SIGNALS, COUNTERS, (), LEASES)
    assert read["looked"] == dict.fromkeys(COUNTERS, 0)
    assert read["other"] == {**dict.fromkeys(COUNTERS, 0), "sent": 2}
    assert states["looked"].counters == read["looked"]
    assert raw.get(KEYS.counter("sent")) == planted
    assert f"{KEYS.counter('sent')!r} holds {len(planted)} byte(s)" in caplog.text


def test_read_states_of_a_signal_never_used(store: Store) -> None:
    """A signal with no keys has zero counters, a free lock and no dead letters."""
    with store.connection() as conn:
        states = queue_state.read_states(
            conn, {"looked": KEYS}, ["sent", "lost"], (), {"looked": 30}
        )
    assert states == {"looked": queue_state.SignalState({"sent": 0, "lost": 0}, "free", 0)}


def test_read_states_tells_each_lock_apart(raw: RawAccess) -> None:
    """A lock holding our format is held, a released (empty) one free, and one holding
    anything else foreign."""
    third = signal_keys("third", "")
    raw.set(KEYS.lock, lock_value(b"ab" * 16, 30))
    raw.set(OTHER.lock, b"")
    raw.set(third.lock, b"\xff not a lock")
    with raw.store.connection() as conn:
        states = queue_state.read_states(
            conn, {**SIGNALS, "third": third}, [], (), {**LEASES, "third": 30}
        )
    assert {name: state.lock for name, state in states.items()} == {
        "looked": "held",
        "other": "free",
        "third": "foreign",
    }


def test_read_states_counts_dead_letters_that_verify(raw: RawAccess) -> None:
    """Dead letters are counted by the frames that verify: garbage around them adds none, and
    a key of garbage counts 0."""
    letters = letter(KEYS, b"1") + b"\x00junk\xa7\x5c" + letter(KEYS, b"2")
    raw.set(KEYS.dead, letters)
    raw.set(OTHER.dead, bytes(range(256)))
    with raw.store.connection() as conn:
        states = queue_state.read_states(conn, SIGNALS, ["sent"], (), LEASES)
    assert states["looked"].dead_letters == 2
    assert states["other"].dead_letters == 0


def test_with_a_secret_key_unsigned_dead_letters_do_not_count(raw: RawAccess) -> None:
    """With a secret key, a planted unsigned dead letter is not counted; a signed one is."""
    secret = b"s" * 32
    gaesignals.configure(store=raw.store, secret_key=secret)
    raw.set(KEYS.dead, letter(KEYS, b"1") + letter(KEYS, b"2", secret=secret))
    with raw.store.connection() as conn:
        states = queue_state.read_states(conn, SIGNALS, [], get_settings().secret_keys, LEASES)
    assert states["looked"].dead_letters == 1
