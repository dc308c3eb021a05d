"""Coalescing, debounce and cancellation in the weak take (:mod:`gaesignals.queue.collapse`
through :mod:`gaesignals.queue.weak_take`), on every store: what reaches the handlers, what
stays queued, how it is counted, and that the generic take answers as the native one."""

from __future__ import annotations

import gaesignals
from gaesignals import frames
from gaesignals.stores import Connection

from ..conftest import RawAccess
from .coalesce_support import NOW, bodies, cancel, counters, frame, keys, shard, take
from .support import MeddlingStore

SECRET = b"s" * 32


def test_only_the_newest_payload_of_a_key_is_delivered_across_shards(raw: RawAccess) -> None:
    """Of the payloads of one coalesce key, in any shard, only the newest reaches the
    handlers; other keys and plain payloads stay apart; the rest is counted coalesced."""
    raw.set(
        shard("a", 0),
        frame("a", "k1 old", key="k1", sent=NOW - 900, n=1)
        + frame("a", "plain", n=2)
        + frame("a", "k1 newest", key="k1", sent=NOW - 100, n=3),
    )
    raw.set(
        shard("a", 1),
        frame("a", "k1 middle", key="k1", sent=NOW - 500, n=4)
        + frame("a", "k2", key="k2", sent=NOW - 800, n=5),
    )
    taken = take(raw.store, ["a"], shards=2)
    assert sorted(map(str, bodies(taken)["a"])) == ["k1 newest", "k2", "plain"]
    assert counters(raw, "a") == {"accounted": 5, "delivered": 3, "coalesced": 2}
    assert raw.get(shard("a", 0)) in (None, b"") and raw.get(shard("a", 1)) in (None, b"")


def test_a_cancelled_payload_never_reaches_a_handler(raw: RawAccess) -> None:
    """A cancellation drops the payload it names (counted cancelled) and goes with it; one
    naming a payload no longer pending counts nothing and is dropped."""
    doomed = frame("a", "doomed", n=1)
    gone = frame("a", "gone", n=9)
    raw.set(keys("a").queue, frame("a", "kept", n=2) + doomed + cancel("a", doomed))
    raw.set(shard("a", 1), cancel("a", gone))
    taken = take(raw.store, ["a"], shards=2)
    assert bodies(taken) == {"a": ["kept"]}
    assert counters(raw, "a") == {"accounted": 2, "delivered": 1, "cancelled": 1}
    assert raw.get(keys("a").queue) in (None, b"") and raw.get(shard("a", 1)) in (None, b"")


def test_the_cancellation_of_a_delayed_payload_waits_with_it(raw: RawAccess) -> None:
    """A cancellation of a payload not due yet stays queued with it, and drops it when due."""
    later = frame("a", "later", due=NOW + 60_000, n=1)
    raw.set(keys("a").queue, later + cancel("a", later))
    assert bodies(take(raw.store, ["a"])) == {}
    assert frames.parse_queue(raw.get(keys("a").queue) or b"", keys("a").queue.encode()).cancels
    assert bodies(take(raw.store, ["a"], now=NOW + 60_000)) == {}
    assert counters(raw, "a") == {"accounted": 1, "cancelled": 1}
    assert raw.get(keys("a").queue) in (None, b"")


def test_a_debounced_run_waits_for_quiet_then_delivers_its_newest(raw: RawAccess) -> None:
    """A run is not due until its newest is ``debounce`` old: until then its newest and oldest
    stay queued (those between are coalesced); then only the newest is delivered."""
    run = [frame("a", i, key="", sent=NOW - 300 + 100 * i, debounce=1_000, n=i) for i in range(3)]
    raw.set(keys("a").queue, b"".join(run))
    assert bodies(take(raw.store, ["a"])) == {}
    assert counters(raw, "a") == {"accounted": 1, "coalesced": 1}
    assert bodies(take(raw.store, ["a"], now=NOW - 100 + 999)) == {}
    assert bodies(take(raw.store, ["a"], now=NOW - 100 + 1_000)) == {"a": [2]}
    assert counters(raw, "a") == {"accounted": 3, "delivered": 1, "coalesced": 2}


def test_debounce_max_delivers_a_steady_stream(raw: RawAccess) -> None:
    """A run whose oldest payload is ``debounce_max`` old is due, however recent its newest."""
    first = frame("a", "first", key="", sent=NOW - 5_000, debounce=1_000, debounce_max=5_000, n=1)
    newest = frame("a", "new", key="", sent=NOW - 10, debounce=1_000, debounce_max=5_000, n=2)
    raw.set(keys("a").queue, first + newest)
    assert bodies(take(raw.store, ["a"], now=NOW - 1)) == {}
    assert bodies(take(raw.store, ["a"])) == {"a": ["new"]}
    assert counters(raw, "a") == {"accounted": 2, "delivered": 1, "coalesced": 1}


def test_a_newer_payload_waiting_on_its_delay_supersedes_older_ones(raw: RawAccess) -> None:
    """The newest's due time wins: older due payloads of its key are coalesced now, and the
    newest is delivered when it is due."""
    newest = frame("a", "newest", key="k", sent=NOW - 10, due=NOW + 5_000, n=2)
    raw.set(keys("a").queue, frame("a", "old", key="k", sent=NOW - 900, n=1) + newest)
    assert bodies(take(raw.store, ["a"])) == {}
    assert raw.get(keys("a").queue) == newest
    assert bodies(take(raw.store, ["a"], now=NOW + 5_000)) == {"a": ["newest"]}
    assert counters(raw, "a") == {"accounted": 2, "delivered": 1, "coalesced": 1}


def test_a_forged_cancellation_cancels_nothing(raw: RawAccess) -> None:
    """With a secret key set, an unsigned cancellation (or one signed with another key) is
    dropped as unreadable: the payload it names is delivered."""
    gaesignals.configure(store=raw.store, secret_key=SECRET)
    target = frame("a", "target", n=1)
    forged = cancel("a", target, ()) + cancel("a", target, (b"o" * 32,))
    raw.set(keys("a").queue, target + forged)
    assert bodies(take(raw.store, ["a"])) == {"a": ["target"]}
    assert counters(raw, "a") == {"accounted": 3, "delivered": 1, "dropped": 2}


def _mixed() -> bytes:
    """Coalesced, debounced, cancelled, delayed and plain payloads at once."""
    doomed = frame("a", "doomed", n=1)
    later = frame("a", "later", due=NOW + 60_000, n=2)
    return (
        frame("a", "k old", key="k", sent=NOW - 900, n=3)
        + doomed
        + later
        + frame("a", "k new", key="k", sent=NOW - 100, n=4)
        + frame("a", "d1", key="d", sent=NOW - 900, debounce=5_000, n=5)
        + frame("a", "d2", key="d", sent=NOW - 800, debounce=5_000, n=6)
        + frame("a", "d3", key="d", sent=NOW - 700, debounce=5_000, n=7)
        + cancel("a", doomed)
        + cancel("a", later)
        + frame("a", "plain", n=8)
    )


def test_the_generic_take_answers_as_the_native_one(raw: RawAccess) -> None:
    """The same contents taken natively (where the store has one) and over the primitives
    deliver the same payloads, keep the same frames and count the same, twice over."""
    results = []
    for store in (raw.store, MeddlingStore(raw.store)):
        gaesignals.configure(store=store, secret_key=SECRET)
        raw.set(keys("a").queue, _mixed())
        for what in ("accounted", "delivered", "coalesced", "cancelled"):
            raw.set(keys("a").counter(what), b"0")
        first = bodies(take(store, ["a"]))
        kept = frames.parse_queue(
            raw.get(keys("a").queue) or b"", keys("a").queue.encode(), [SECRET]
        )
        second = bodies(take(store, ["a"], now=NOW + 60_000))
        results.append((first, sorted(f.body for f in kept.found), second, counters(raw, "a")))
    native, generic = results
    assert native == generic
    assert native[0] == {"a": ["k new", "plain"]}
    assert native[2] == {"a": ["d3"]}
    assert native[3] == {"accounted": 8, "delivered": 3, "coalesced": 3, "cancelled": 2}


def test_a_cancellation_racing_a_take_cancels_or_comes_too_late(raw: RawAccess) -> None:
    """A cancellation appended between a generic take's read and its reset makes the reset
    lose; the take reads again and the payload is cancelled, counted once, never delivered."""
    target = frame("a", "target", n=1)
    raced: list[bytes] = []

    def canceller(conn: Connection) -> None:
        if not raced:
            raced.append(cancel("a", target))
            conn.set_many({keys("a").queue: target + raced[0]})

    store = MeddlingStore(raw.store, before_cas=canceller)
    gaesignals.configure(store=store)
    raw.set(keys("a").queue, target)
    assert bodies(take(store, ["a"])) == {}
    assert counters(raw, "a") == {"accounted": 1, "cancelled": 1}
    assert raw.get(keys("a").queue) in (None, b"")
