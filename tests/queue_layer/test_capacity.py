"""A signal holds what the store has room for (``gaesignals.queue.spread``, ``.append``,
``.cap``), on every store: it spreads when its keys are full, sweeps find it however wide, and
only a cap the user set (or a declared signal's shards) refuses a send.

Each test shrinks the store's ``max_value_size`` to a few kilobytes, so that a signal spreads
past the shards a sweep reads in full after a few hundred sends."""

from __future__ import annotations

from typing import Any

import pytest

import gaesignals
from gaesignals import QueueFull, config, deliver, frames, pending, send, send_multi
from gaesignals.config import get_settings
from gaesignals.keys import shard_queues, signal_keys, spread_key
from gaesignals.queue import spread
from gaesignals.stores import Store
from gaesignals.testing.doubles import CountingStore

from ..conftest import RawAccess

#: One key's room in these tests: about twenty payloads of :func:`payload`.
SMALL = 4_000


def small(store: Store) -> Store:
    """``store`` holding at most :data:`SMALL` bytes per key, configured afresh (a process
    that learned nothing yet)."""
    store.max_value_size = SMALL
    config.reset()
    gaesignals.configure(store=store)
    return store


def payload(index: int) -> dict[str, Any]:
    return {"id": index, "pad": "x" * 120}


def home(name: str) -> str:
    return signal_keys(name, get_settings().namespace).queue


def learned(name: str) -> int:
    return spread.widths(get_settings()).get(home(name), 1)


def fill(name: str, count: int) -> None:
    for index in range(count):
        send(name, payload(index))


def delivered(name: str, *, reliable: bool = False) -> list[int]:
    got: list[int] = []
    while deliver({name: lambda data: got.append(data["id"])}, reliable=reliable):
        pass
    return got


def test_a_signal_sent_past_one_keys_size_spreads_and_delivers_each_payload_once(
    store: Store, raw: RawAccess, reliable: bool
) -> None:
    """An undeclared signal sent many keys' worth takes every send, spreads past the shards a
    sweep reads in full, and delivers every payload once; its own key and each rung's first
    shard keep a marker of their width once emptied."""
    small(store)
    fill("backlog", 600)  # about thirty keys' worth
    width = learned("backlog")
    assert width > spread.SWEPT
    got = delivered("backlog", reliable=reliable)
    assert sorted(got) == list(range(600))
    assert pending("backlog")["backlog"].count == 0
    signer, keys = home("backlog").encode(), get_settings().secret_keys
    anchors = spread.anchors(width)
    marked = [
        frames.parse_queue(raw.get(key) or b"", signer, keys).marker_width
        for key in shard_queues(home("backlog"), (0, *anchors))
    ]
    assert marked[0] == max(marked) == width
    assert all(seen >= spread.rung(at) for seen, at in zip(marked[1:], anchors, strict=True))


def test_a_declared_signal_keeps_its_shards_and_is_full_with_them(store: Store) -> None:
    """A signal declared with ``shards`` never spreads: it raises ``QueueFull`` once its
    shards are full, and delivers every payload it took."""
    small(store)
    gaesignals.declare("fixed", shards=2)
    taken = 0
    with pytest.raises(QueueFull) as raised:
        for index in range(200):
            send("fixed", payload(index))
            taken += 1
    assert raised.value.signals == ("fixed",) and raised.value.cap is None
    assert learned("fixed") == 1
    assert sorted(delivered("fixed")) == list(range(taken))


def test_a_signal_as_wide_as_it_gets_is_full(store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    """Once a signal has spread as wide as it gets and those shards are full, a send raises
    ``QueueFull`` (the widest spread made small here), and every payload taken is delivered."""
    monkeypatch.setattr(spread, "MAX_SPREAD", 2 * spread.SWEPT)
    small(store)
    taken = 0
    with pytest.raises(QueueFull) as raised:
        for index in range(2_000):
            send("widest", payload(index))
            taken += 1
    assert raised.value.cap is None and raised.value.signals == ("widest",)
    assert learned("widest") == 2 * spread.SWEPT
    assert taken > 2 * spread.SWEPT * (SMALL // 200) // 2  # at least half of all shards' room
    assert sorted(delivered("widest")) == list(range(taken))


def test_a_send_to_a_wide_full_signal_takes_a_few_round_trips(store: Store) -> None:
    """A sender new to a signal spread over many full shards finds room in a bounded number
    of round trips, not one per full shard: at worst its own shard, two of the newest rung
    (each an append, an add and a read where full), the width read, the widening's writes and
    the send, where the newest rung alone has more than thirty full shards."""
    small(store)
    fill("wide", 700)
    assert learned("wide") >= 2 * spread.SWEPT
    gaesignals.stats("wide")  # writes the sent counts this process holds for ``store``
    counting = CountingStore(store)
    config.reset()
    gaesignals.configure(store=counting)
    for index in range(700, 720):
        before = counting.total
        send("wide", payload(index))
        assert counting.total - before <= 20
    assert sorted(delivered("wide")) == list(range(720))


def test_a_sweep_finds_a_wide_signal_whose_markers_the_cache_lost(
    store: Store, raw: RawAccess
) -> None:
    """A new deliverer (and ``pending``) finds every shard of a signal spread far past the
    swept ones although the signal's own key lost its marker and its spread key was evicted:
    each rung's first shard holds the marker."""
    small(store)
    fill("lost", 700)
    width = learned("lost")
    assert width >= 2 * spread.SWEPT
    own = home("lost")
    value = raw.get(own) or b""
    parsed = frames.parse_queue(value, own.encode(), get_settings().secret_keys)
    assert parsed.marker_width  # (the marker of a width it had room for then)
    raw.set(own, b"".join(value[f.start : f.end] for f in parsed.found))  # no marker
    with store.connection() as conn:
        conn.delete_many([spread_key(own)])
    config.reset()
    gaesignals.configure(store=store)  # a new process: it knows no width
    assert pending("lost")["lost"].count == 700
    assert sorted(delivered("lost")) == list(range(700))
    assert learned("lost") == width


def test_a_sweep_reads_a_bounded_number_of_keys() -> None:
    """A sweep reads the first sixteen shards and each rung's first shard up to the widest
    spread: a few dozen keys, however wide a signal may grow."""
    gaesignals.configure(store="memory://")
    settings = get_settings()
    shards = spread.swept(settings, home("any"), 1)
    assert isinstance(shards, tuple)
    assert shards[: spread.SWEPT] == tuple(range(spread.SWEPT))
    assert shards[spread.SWEPT :] == spread.anchors(spread.MAX_SPREAD)
    assert len(shards) < 32 and max(shards) < spread.MAX_SPREAD
    assert all(spread.rung(i) > i for i in shards)
    gaesignals.declare("declared", shards=3)
    assert spread.swept(settings, home("declared"), 3) == 3
    assert shard_queues(home("any"), (0, 16))[1].startswith(f"gs:{settings.namespace}:q16:")


def test_max_pending_refuses_sends_at_the_cap_and_loses_nothing(store: Store) -> None:
    """A signal declared with ``max_pending`` takes that many payloads, then raises
    ``QueueFull`` naming the cap (a ``send_multi`` with it stores nothing); what it holds is
    delivered, and it takes sends again."""
    gaesignals.declare("capped", max_pending=5)
    fill("capped", 5)
    with pytest.raises(QueueFull) as raised:
        send("capped", payload(5))
    assert raised.value.cap == 5 and raised.value.signals == ("capped",)
    assert "max_pending of 5" in str(raised.value)
    with pytest.raises(QueueFull) as batch:
        send_multi([("other", payload(0)), ("capped", payload(6))])
    assert set(batch.value.signals) == {"other", "capped"}
    assert delivered("other") == []
    assert sorted(delivered("capped")) == list(range(5))
    send("capped", payload(7))
    assert delivered("capped") == [7]


def test_max_pending_must_be_a_positive_count() -> None:
    """``max_pending`` is a positive number of payloads; anything else is refused at once."""
    for bad in (0, -1, 1.5, True, "5"):
        with pytest.raises(ValueError, match="max_pending"):
            gaesignals.declare("capped", max_pending=bad)  # type: ignore[arg-type]
    assert gaesignals.declare("capped", max_pending=3).max_pending == 3
