"""Coalescing, debounce, cancellation and purge through delivery, weak and reliable, on every
store: the handlers get the newest payload of a key only, and the counters add up
(``sent = delivered + coalesced + cancelled + purged``), with no loss reported."""

from __future__ import annotations

from typing import Any

import pytest

import gaesignals
from gaesignals import Retry, SignalMapping, deliver, frames, stats
from gaesignals.codec import encode_payload
from gaesignals.config import get_settings
from gaesignals.keys import shard_queues, signal_keys
from gaesignals.queue.cancel import Placed, cancel
from gaesignals.queue.purge import purge
from gaesignals.stores import Store

from ..conftest import RawAccess
from .coalesce_sending import send_coalesced

START = 1_800_000_000.0


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """The senders' and deliverers' clock (seconds), moved by the test."""
    now = [START]
    monkeypatch.setattr(frames, "clock", lambda: now[0])
    return now


def _collect(got: list[Any]) -> SignalMapping:
    return SignalMapping([("s", got.append)])


def _sent_adds_up(name: str) -> dict[str, int]:
    """The signal's counters, once checked: every payload sent met one outcome, none lost."""
    counts = stats(name)[name]
    gone = ("delivered", "coalesced", "cancelled", "purged", "expired", "dropped")
    assert counts["sent"] == sum(counts[what] for what in gone)
    assert counts["lost"] == 0
    return {what: n for what, n in counts.items() if n}


@pytest.mark.usefixtures("store")
def test_only_the_newest_of_each_key_is_delivered(reliable: bool, clock: list[float]) -> None:
    """Ten sends over two keys give two handler calls, with each key's newest payload; the
    others are counted coalesced, and a lost check finds nothing missing."""
    gaesignals.configure(lost_check_interval=0)
    for i in range(10):
        clock[0] += 0.01
        send_coalesced("s", (i % 2, i), key=str(i % 2))
    send_coalesced("s", "plain", key=None)
    got: list[Any] = []
    assert deliver(_collect(got), reliable=reliable) == 3
    assert sorted(map(str, got)) == ["(0, 8)", "(1, 9)", "plain"]
    assert deliver(_collect(got), reliable=reliable) == 0
    assert _sent_adds_up("s") == {"sent": 11, "delivered": 3, "coalesced": 8}


@pytest.mark.usefixtures("store")
def test_a_cancelled_payload_is_never_delivered(reliable: bool) -> None:
    """A payload cancelled by its id while pending never reaches a handler; cancelling one
    already delivered changes nothing."""
    doomed = send_coalesced("s", "doomed", key=None)
    send_coalesced("s", "kept", key=None)
    cancel(get_settings(), "s", doomed)
    got: list[Any] = []
    assert deliver(_collect(got), reliable=reliable) == 1
    assert got == ["kept"]
    delivered = send_coalesced("s", "delivered", key=None)
    assert deliver(_collect(got), reliable=reliable) == 1
    cancel(get_settings(), "s", delivered)
    assert deliver(_collect(got), reliable=reliable) == 0
    assert got == ["kept", "delivered"]
    assert _sent_adds_up("s") == {"sent": 3, "delivered": 2, "cancelled": 1}


@pytest.mark.usefixtures("store")
def test_debounce_waits_for_a_quiet_spell(reliable: bool, clock: list[float]) -> None:
    """A debounced key is delivered once no newer payload came for ``debounce``, or once its
    first is ``debounce_max`` old: one call with the newest."""
    got: list[Any] = []
    for i in range(3):
        send_coalesced("s", i, debounce_ms=2_000, debounce_max_ms=10_000)
        clock[0] += 1
        assert deliver(_collect(got), reliable=reliable) == 0
    clock[0] += 1
    assert deliver(_collect(got), reliable=reliable) == 1
    assert got == [2]
    for i in range(12):  # a steady stream, one a second: debounce_max delivers it
        send_coalesced("s", 10 + i, debounce_ms=2_000, debounce_max_ms=10_000)
        deliver(_collect(got), reliable=reliable)
        clock[0] += 1
    assert got == [2, 20]
    clock[0] += 2
    assert deliver(_collect(got), reliable=reliable) == 1
    assert got == [2, 20, 21]
    assert _sent_adds_up("s")["delivered"] == 3


@pytest.mark.usefixtures("store")
def test_a_newer_payload_supersedes_one_waiting_for_a_retry(clock: list[float]) -> None:
    """Reliable: a payload that failed and waits for its retry is superseded by a newer one of
    its key delivered meanwhile (counted coalesced): its retry would deliver older news."""
    calls: list[Any] = []

    def flaky(data: Any) -> None:
        calls.append(data)
        if data == "old":
            raise Retry(delay=60)

    mapping = SignalMapping([("s", flaky)])
    send_coalesced("s", "old")
    assert deliver(mapping, reliable=True) == 0
    clock[0] += 1
    send_coalesced("s", "new")
    assert deliver(mapping, reliable=True) == 1
    clock[0] += 120
    assert deliver(mapping, reliable=True) == 0
    assert calls == ["old", "new"]
    counts = stats("s")["s"]
    assert (counts["coalesced"], counts["delivered"], counts["retried"]) == (1, 1, 1)


def test_purge_counts_what_it_dropped(store: Store) -> None:
    """Purged payloads are counted: sent adds up, nothing is delivered after."""
    for i in range(4):
        send_coalesced("s", i, key=None)
    assert purge(get_settings(), "s") == 4
    got: list[Any] = []
    assert deliver(_collect(got)) == 0
    assert _sent_adds_up("s") == {"sent": 4, "purged": 4}


@pytest.mark.usefixtures("store")
def test_an_expired_newest_is_expired_and_the_older_ones_coalesced(
    reliable: bool, clock: list[float]
) -> None:
    """With a ttl, coalescing comes first: the newest past the ttl is counted expired (no
    handler runs), the older ones of its key coalesced."""
    gaesignals.declare("s", ttl=10)
    send_coalesced("s", "old")
    send_coalesced("s", "newest")
    clock[0] += 20
    got: list[Any] = []
    assert deliver(_collect(got), reliable=reliable) == 0
    assert got == []
    counts = _sent_adds_up("s")
    assert (counts["expired"], counts["coalesced"]) == (1, 1)


def test_a_cancellation_never_touches_dead_letters(store: Store) -> None:
    """Cancelling a payload that reached the dead letters leaves it there."""
    gaesignals.declare("s", max_attempts=1)

    def fail(data: Any) -> None:
        raise ValueError("no")

    dead = send_coalesced("s", "dead", key=None)
    deliver(SignalMapping([("s", fail)]), reliable=True)
    assert len(gaesignals.dead_letters("s")) == 1
    cancel(get_settings(), "s", dead)
    deliver(SignalMapping([("s", fail)]), reliable=True)
    assert len(gaesignals.dead_letters("s")) == 1


def test_a_cancellation_finds_its_payload_in_another_shard(raw: RawAccess) -> None:
    """A payload that went to another shard than its id names (its own was full) is still
    cancelled: a weak take matches cancellations across every shard it reads, and reads
    plain payloads as frames again to do so."""
    gaesignals.declare("s", shards=2)
    settings = get_settings()
    keys = signal_keys("s", settings.namespace)
    moved = encode_payload("s", "moved", keys, settings)
    raw.set(shard_queues(keys.queue, 2)[1], moved + encode_payload("s", "kept", keys, settings))
    cancel(settings, "s", Placed(frames.ident_of(moved), 0).id)
    got: list[Any] = []
    assert deliver(_collect(got)) == 1
    assert got == ["kept"]
    assert stats("s")["s"]["cancelled"] == 1
