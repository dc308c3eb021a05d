"""The sending side of coalescing and cancelling: ``send(coalesce=)`` and its frame, the
:class:`~gaesignals.Receipt` every send returns, ``cancel``'s one append, and eager mode."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

import gaesignals
from gaesignals import (
    CancelResult,
    InvalidCoalesceKey,
    InvalidPayloadId,
    Receipt,
    Signal,
    asend,
    asend_multi,
    cancel,
    declare,
    frames,
    send,
    send_multi,
)
from gaesignals.config import get_settings
from gaesignals.keys import shard_queues, signal_keys
from gaesignals.queue.cancel import parse_payload_id
from gaesignals.stores.memory import MemoryStore
from gaesignals.testing import CountingStore

from .conftest import RawAccess


def queued(name: str) -> frames.QueueRead:
    """What ``name``'s own queue key holds, read behind the library's back."""
    settings = get_settings()
    key = signal_keys(name, settings.namespace).queue
    with settings.store.connection() as conn:
        found = conn.gets_many([key]).get(key)
    value = b"" if found is None else found.value
    return frames.parse_queue(value, key.encode(), settings.secret_keys)


@pytest.fixture
def counting() -> CountingStore:
    """A memory store behind a call counter, configured for the test."""
    store = CountingStore(MemoryStore())
    gaesignals.configure(store=store)
    return store


def test_a_send_returns_a_receipt_naming_its_payload(counting: CountingStore) -> None:
    """``send`` returns a frozen receipt whose id names the stored frame; a send to a queue
    that exists is still one round trip."""
    send("profile_changed", {"user": 6})
    counting.calls.clear()
    receipt = send("profile_changed", {"user": 7})
    assert isinstance(receipt, Receipt) and receipt.signal == "profile_changed"
    assert counting.total == 1
    frame = queued("profile_changed").found[-1]
    assert parse_payload_id(receipt.id).ident == frame.ident
    with pytest.raises(AttributeError):
        receipt.id = "other"  # type: ignore[misc]


def test_a_coalesce_key_rides_in_the_frame(counting: CountingStore) -> None:
    """``coalesce=KEY`` puts the key in the payload's frame, in the same one round trip; a
    send without one carries none."""
    send("profile_changed", 0)
    counting.calls.clear()
    send("profile_changed", 1, coalesce="user_54274")
    send("profile_changed", 2)
    assert counting.total == 2
    _, first, second = queued("profile_changed").found
    found = frames.coalesce_of(first)
    assert found is not None and found.key == b"user_54274" and found.debounce_ms == 0
    assert frames.coalesce_of(second) is None


def test_a_declared_signal_coalesces_every_payload_with_its_debounce(
    counting: CountingStore,
) -> None:
    """A signal declared ``coalesce=True`` gives each payload the empty key and its debounce
    (in ms), so a deliverer needs no declaration; a send's own key still wins."""
    declare("reindex", coalesce=True, debounce=1.5, debounce_max=10)
    send("reindex", 1)
    send("reindex", 2, coalesce="shop")
    first, second = (frames.coalesce_of(f) for f in queued("reindex").found)
    assert first is not None and second is not None
    assert (first.key, first.debounce_ms, first.debounce_max_ms) == (b"", 1500, 10_000)
    assert (second.key, second.debounce_ms) == (b"shop", 1500)


@pytest.mark.parametrize(
    ("key", "says"),
    [
        (7, "must be a str, not int"),
        (b"raw", "must be a str, not bytes"),
        ("é" * 128, "at most 255 bytes of UTF-8, got 256"),
    ],
)
def test_a_bad_coalesce_key_is_refused_and_nothing_stored(
    counting: CountingStore, key: Any, says: str
) -> None:
    """A coalesce key that is not a short str raises InvalidCoalesceKey (a ValueError, with
    the key given) before anything is written, from every send function."""
    for attempt in (
        lambda: send("s", 1, coalesce=key),
        lambda: Signal("s").send(1, coalesce=key),
        lambda: send_multi([("s", 1)], coalesce=key),
    ):
        with pytest.raises(InvalidCoalesceKey, match=says) as raised:
            attempt()
        assert isinstance(raised.value, ValueError) and raised.value.key == key
    assert counting.total == 0


def test_send_multi_returns_a_receipt_per_payload_in_order(counting: CountingStore) -> None:
    """``send_multi`` returns one receipt per payload, in the order given, each naming its
    own frame; ``coalesce=`` keys every payload."""
    receipts = send_multi([("a", 1), ("b", 2), ("a", 3)], coalesce="k")
    assert [r.signal for r in receipts] == ["a", "b", "a"]
    a_frames = queued("a").found
    idents = [parse_payload_id(r.id).ident for r in receipts]
    assert [idents[0], idents[2]] == [f.ident for f in a_frames]
    assert all(frames.coalesce_of(f) is not None for f in a_frames)


def test_the_awaitable_sends_take_the_key_and_return_receipts(counting: CountingStore) -> None:
    """``asend``, ``Signal.asend`` and ``asend_multi`` take ``coalesce=`` and return receipts."""

    async def sends() -> list[Receipt]:
        one = await asend("s", 1, coalesce="k")
        two = await Signal("s").asend(2, coalesce="k")
        return [one, two, *await asend_multi([("s", 3)], coalesce="k")]

    receipts = asyncio.run(sends())
    assert len({r.id for r in receipts}) == 3
    keys = [frames.coalesce_of(f) for f in queued("s").found]
    assert [k.key if k else None for k in keys] == [b"k", b"k", b"k"]


def test_cancelling_is_one_append_beside_the_payload(counting: CountingStore) -> None:
    """``receipt.cancel()`` and ``cancel(name, id)`` each append a cancellation naming the
    payload to its queue: one round trip, no read, and the answer says the mark is stored."""
    receipt = send("s", "doomed")
    counting.calls.clear()
    assert receipt.cancel() is CancelResult.CANCELLED
    assert counting.total == 1 and "gets_many" not in counting.calls
    assert cancel("s", receipt.id) is CancelResult.CANCELLED
    read = queued("s")
    assert [mark.body for mark in read.cancels] == [read.found[0].ident] * 2


@pytest.mark.parametrize("bad", ["", "nonsense", "0123456789abcdef", "0123456789abcdeg.0", 42])
def test_a_bad_payload_id_is_refused(counting: CountingStore, bad: Any) -> None:
    """Text that is not a payload id raises InvalidPayloadId (a ValueError), writing nothing."""
    with pytest.raises(InvalidPayloadId) as raised:
        cancel("s", bad)
    assert isinstance(raised.value, ValueError)
    assert counting.total == 0


def test_eager_sends_say_their_payload_ran(counting: CountingStore) -> None:
    """In eager mode a signal with receivers runs them at once; its receipt, and ``cancel``
    of its id, answer DELIVERED without a store call (nothing was ever pending)."""
    gaesignals.configure(store=counting, eager=True)
    got: list[Any] = []
    gaesignals.connect("now", got.append)
    receipt = send("now", 1, coalesce="k")
    (multi,) = send_multi([("now", 2)])
    assert got == [1, 2] and receipt.ran and multi.ran
    assert receipt.cancel() is CancelResult.DELIVERED
    assert cancel("now", multi.id) is CancelResult.DELIVERED
    assert counting.total == 0
    stored = send("no_receivers", 3)
    assert not stored.ran and counting.total > 0


@pytest.mark.parametrize("store_kind", ["memory", "memory-cas", "memcached", "redis"])
def test_a_receipt_names_the_shard_its_payload_went_to(raw: RawAccess) -> None:
    """On a sharded signal the id names the shard the send wrote to, where the cancellation
    is appended."""
    declare("wide", shards=4)
    receipt = send("wide", 1)
    placed = parse_payload_id(receipt.id)
    settings = get_settings()
    base = signal_keys("wide", settings.namespace).queue
    key = shard_queues(base, 4)[placed.key_index]
    assert receipt.cancel() is CancelResult.CANCELLED
    value = raw.get(key)
    assert value is not None
    read = frames.parse_queue(value, base.encode(), settings.secret_keys)
    assert [f.ident for f in read.found] == [placed.ident]
    assert [mark.body for mark in read.cancels] == [placed.ident]
