"""Cancelling a payload by its id (:mod:`gaesignals.queue.cancel`) and purging a signal
(:mod:`gaesignals.queue.purge`), on every store."""

from __future__ import annotations

import pytest

import gaesignals
from gaesignals import frames
from gaesignals.config import get_settings
from gaesignals.exceptions import InvalidPayloadId
from gaesignals.queue import dead_letters
from gaesignals.queue.append import append_one
from gaesignals.queue.cancel import (
    CancelResult,
    Placed,
    cancel,
    parse_payload_id,
    payload_id,
    placed_of,
)
from gaesignals.queue.purge import purge
from gaesignals.queue.spread import marker
from gaesignals.testing.doubles import CountingStore

from ..conftest import RawAccess
from .coalesce_support import bodies, counters, frame, keys, shard, take
from .support import letter


def test_a_payload_id_names_the_frame_and_its_shard() -> None:
    """The id of a placed frame reads back as the same frame id and shard index."""
    raw = frame("a", "x", n=5)
    placed = placed_of(raw, shard("a", 2), tuple(shard("a", i) for i in range(4)))
    assert placed == Placed(frames.ident_of(raw), 2)
    assert parse_payload_id(placed.id) == placed
    assert payload_id(placed) == frames.ident_of(raw).hex() + ".2"
    assert placed_of(raw, keys("a").queue, ()).key_index == 0


@pytest.mark.parametrize(
    "text", ["", "0011", "zz" * 8 + ".0", "00" * 8, "00" * 8 + ".100", "00" * 8 + ".0\n", 12]
)
def test_a_malformed_payload_id_is_refused_with_a_library_error(text: object) -> None:
    """Text that no send returned raises InvalidPayloadId, a ValueError carrying the text."""
    with pytest.raises(InvalidPayloadId) as raised:
        parse_payload_id(text)
    assert isinstance(raised.value, ValueError) and raised.value.payload_id == text


def test_cancel_appends_one_signed_mark_and_the_take_honours_it(raw: RawAccess) -> None:
    """A cancel costs the round trips of a send to the same key (one append where the store
    appends), stores a cancellation the take reads, and the payload never reaches a handler."""
    gaesignals.configure(store=raw.store, secret_key=b"s" * 32)
    doomed = frame("a", "doomed", n=1)
    raw.set(shard("a", 1), doomed)
    counting = CountingStore(raw.store)
    gaesignals.configure(store=counting, secret_key=b"s" * 32)
    placed = Placed(frames.ident_of(doomed), 1)
    assert cancel(get_settings(), "a", placed.id) is CancelResult.CANCELLED
    assert counting.total == (1 if raw.store.supports_append else 2)
    value = raw.get(shard("a", 1)) or b""
    read = frames.parse_queue(value, keys("a").queue.encode(), [b"s" * 32])
    assert [c.body for c in read.cancels] == [placed.ident]
    assert bodies(take(raw.store, ["a"], shards=2)) == {}
    assert counters(raw, "a") == {"accounted": 1, "cancelled": 1}


def test_purge_drops_every_pending_payload_of_every_shard(raw: RawAccess) -> None:
    """Purge empties every shard, counts each payload (garbage's too) accounted and purged,
    keeps a spread marker at the head of the signal's own key, and leaves dead letters."""
    settings = get_settings()
    head = marker(settings, keys("a").queue, 3)
    raw.set(keys("a").queue, head + frame("a", 1, n=1) + frame("a", 2, n=2))
    raw.set(shard("a", 2), frame("a", 3, n=3) + b"garbage!" + frame("a", 4, n=4))
    dead = letter(keys("a"), b'"dead"')
    raw.set(keys("a").dead, dead)
    raw.set(keys("b").queue, frame("b", "other", n=1))
    assert purge(settings, "a") == 5
    assert raw.get(keys("a").queue) == head
    assert raw.get(shard("a", 2)) in (None, b"")
    assert counters(raw, "a") == {"accounted": 5, "purged": 5}
    assert len(dead_letters.read(settings, "a").found) == 1
    assert raw.get(keys("b").queue) == frame("b", "other", n=1)
    assert purge(settings, "a") == 0


def test_a_coalesced_send_costs_what_a_plain_one_does(raw: RawAccess) -> None:
    """A payload with a coalesce key and a debounce in its metadata is appended in the round
    trips of a plain one (one where the store appends)."""
    settings = get_settings()
    raw.set(keys("a").queue, frame("a", "first", n=0))  # both append to a key that exists
    costs = []
    for payload in (frame("a", "plain", n=1), frame("a", "k", key="k", debounce=500, n=2)):
        counting = CountingStore(raw.store)
        gaesignals.configure(store=counting)
        append_one(get_settings(), keys("a").queue, payload, (), keys("a").counter("sent"))
        costs.append(counting.total)
    gaesignals.configure(store=raw.store)
    assert costs[0] == costs[1] == (1 if raw.store.supports_append else costs[0])
    queued = frames.parse_queue(raw.get(keys("a").queue) or b"", keys("a").queue.encode())
    assert [frames.coalesce_of(f) is not None for f in queued.found] == [False, False, True]
    assert settings.store is raw.store
