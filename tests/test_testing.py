"""gaesignals.testing's store doubles: CountingStore counts every round trip, DownStore is an
outage, and the tapped store of a capture declares what it may pass on."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pytest

import gaesignals
from gaesignals import StoreUnavailable, deliver, send
from gaesignals.config import get_settings
from gaesignals.stores import Store, TakeGroup, Taken
from gaesignals.stores.memory import MemoryStore
from gaesignals.testing import CountingStore, DownStore, captured_signals, eager_signals


class FakeNative:
    """Native queue operations that record their arguments and answer fixed values."""

    def __init__(self) -> None:
        self.takes: list[list[TakeGroup]] = []
        self.acks: list[tuple[str, bytes, bytes]] = []

    def take_many(self, groups: Sequence[TakeGroup], now: int = 0) -> Taken:
        self.takes.append(list(groups))
        return Taken(values={"q": b"frames"}, read={}, counted={"q": 1})

    def acknowledge(self, key: str, taken: bytes, keep: bytes) -> bool:
        self.acks.append((key, taken, keep))
        return True


class FakeFastSend:
    """A fast path that sends only the keys it is told to, as memcached's does."""

    def __init__(self, sends: bool) -> None:
        self.sends = sends

    def append_one(self, key: str, value: bytes, counter: str | None) -> bool | None:
        return True if self.sends else None


class NativeMemoryStore(MemoryStore):
    """A memory store that declares native queue operations and a fast path."""

    def __init__(self, native: Any, fast: Any = None) -> None:
        super().__init__()
        self.native = native
        self.fast_send = fast


# -- CountingStore --------------------------------------------------------------------------------


def test_counting_store_counts_native_calls() -> None:
    """The inner store's native take_many and acknowledge are counted by name, passed their
    arguments and answer what the inner store answered."""
    inner = FakeNative()
    store = CountingStore(NativeMemoryStore(inner))
    assert store.native is not None
    group = TakeGroup(queues=("q",))
    assert store.native.take_many([group]) == Taken({"q": b"frames"}, {}, {"q": 1})
    assert store.native.acknowledge("q", b"taken", b"keep") is True
    assert store.native.acknowledge("q", b"taken", b"") is True
    assert dict(store.calls) == {"take_many": 1, "acknowledge": 2}
    assert store.total == 3
    assert inner.takes == [[group]] and inner.acks[0] == ("q", b"taken", b"keep")


def test_counting_store_declares_no_native_where_the_inner_has_none() -> None:
    """A store without native operations or a fast path gets none through the wrapper."""
    store = CountingStore(MemoryStore(append=False))
    assert (store.native, store.fast_send, store.sizes) == (None, None, None)
    assert (store.supports_append, store.shared) == (False, False)
    assert isinstance(store, Store)


def test_counting_store_counts_the_fast_path_only_when_it_sent() -> None:
    """append_one is counted when it stored or refused, not when it sent nothing."""
    sending = CountingStore(NativeMemoryStore(None, FakeFastSend(sends=True)))
    idle = CountingStore(NativeMemoryStore(None, FakeFastSend(sends=False)))
    assert sending.fast_send is not None and idle.fast_send is not None
    assert sending.fast_send.append_one("k", b"v", None) is True
    assert idle.fast_send.append_one("k", b"v", None) is None
    assert (dict(sending.calls), dict(idle.calls)) == ({"append_one": 1}, {})


def test_counting_store_counts_connection_calls() -> None:
    """A send and a delivery through the wrapper are counted call by call."""
    store = CountingStore(MemoryStore())
    gaesignals.configure(store=store)
    send("a", 1)
    assert store.calls["append_many"] == 1
    got: list[Any] = []
    assert deliver({"a": got.append}) == 1 and got == [1]
    assert store.total == sum(store.calls.values()) > 1


# -- DownStore ------------------------------------------------------------------------------------


def test_down_store_refuses_every_connection() -> None:
    """Entering a connection raises StoreUnavailable with the message given."""
    store = DownStore("memcached at 127.0.0.1:1 is unreachable")
    with pytest.raises(StoreUnavailable) as raised, store.connection():
        pass
    assert str(raised.value) == "memcached at 127.0.0.1:1 is unreachable"
    assert repr(store) == "DownStore('memcached at 127.0.0.1:1 is unreachable')"


def test_down_store_makes_sends_and_deliveries_fail() -> None:
    """Configured, it makes send and deliver raise StoreUnavailable, as an outage does."""
    gaesignals.configure(store=DownStore())
    with pytest.raises(StoreUnavailable, match="the cache is down"):
        send("a", 1)
    with pytest.raises(StoreUnavailable, match="the cache is down"):
        deliver({"a": print})


def test_down_store_declares_its_capabilities() -> None:
    """It is a Store with no fast path and no native operations; its limits are settable."""
    store = DownStore("down", max_value_size=1000, supports_append=False, shared=True)
    assert isinstance(store, Store)
    assert (store.sizes, store.fast_send, store.native) == (None, None, None)
    assert (store.max_value_size, store.supports_append, store.shared) == (1000, False, True)
    assert DownStore().max_value_size == 1_000_000


# -- the tapped store -----------------------------------------------------------------------------


@pytest.mark.parametrize("block", ["capture", "eager"])
def test_tapped_store_has_no_fast_path_and_passes_native_on(block: str) -> None:
    """Inside a capture or an eager block, the configured store declares no fast path (every
    send passes the taps) and the inner store's native operations and limits."""
    inner = NativeMemoryStore(FakeNative(), FakeFastSend(sends=True))
    gaesignals.configure(store=inner)
    tapping = captured_signals() if block == "capture" else eager_signals({"a": print})
    with tapping:
        tapped = get_settings().store
        assert tapped is not inner
        assert tapped.fast_send is None
        assert tapped.native is inner.native
        assert (tapped.max_value_size, tapped.supports_append, tapped.shared, tapped.sizes) == (
            inner.max_value_size,
            inner.supports_append,
            inner.shared,
            inner.sizes,
        )
    assert get_settings().store is inner
