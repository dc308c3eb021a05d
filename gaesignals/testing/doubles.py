"""Stores that stand in for a real one in tests: one that counts, one that is down.

:class:`CountingStore` wraps any store and counts the calls (round trips) made through it, the
native queue operations and the one-send fast path included; :class:`DownStore` refuses every
connection, as a cache that cannot be reached. :class:`Forwarding` is what a wrapper shares:
the inner store's declared limits.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager

from ..exceptions import StoreUnavailable
from ..stores import (
    DEFAULT_MAX_VALUE_SIZE,
    Cached,
    Connection,
    FastSend,
    NativeQueue,
    Store,
    TakeGroup,
    Taken,
)


class Forwarding:
    """A store in front of ``inner``, declaring its limits: item size, append, sharing and
    the sizes it keeps. A subclass declares ``fast_send`` and ``native`` and the connection,
    since what it does to the calls decides which of them it may pass on."""

    def __init__(self, inner: Store) -> None:
        self.inner = inner
        self.max_value_size = inner.max_value_size
        self.supports_append = inner.supports_append
        self.shared = inner.shared

    @property
    def sizes(self) -> Mapping[str, int] | None:
        return self.inner.sizes


class _CountingConnection:
    """Counts each call by name in ``calls``, then makes it on the inner connection."""

    def __init__(self, inner: Connection, calls: Counter[str]) -> None:
        self._inner = inner
        self._calls = calls

    def gets_many(self, keys: Sequence[str]) -> dict[str, Cached]:
        self._calls["gets_many"] += 1
        return self._inner.gets_many(keys)

    def scan_many(self, keys: Sequence[str]) -> dict[str, Cached]:
        self._calls["scan_many"] += 1
        return self._inner.scan_many(keys)

    def cas_many(
        self,
        items: Mapping[str, Cached],
        expire: int = 0,
        counters: Mapping[str, int] | None = None,
    ) -> dict[str, bool]:
        self._calls["cas_many"] += 1
        return self._inner.cas_many(items, expire, counters)

    def add_many(self, items: Mapping[str, bytes], expire: int = 0) -> dict[str, bool]:
        self._calls["add_many"] += 1
        return self._inner.add_many(items, expire)

    def set_many(self, items: Mapping[str, bytes], expire: int = 0) -> dict[str, bool]:
        self._calls["set_many"] += 1
        return self._inner.set_many(items, expire)

    def append_many(
        self, items: Mapping[str, bytes], counters: Mapping[str, int] | None = None
    ) -> dict[str, bool]:
        self._calls["append_many"] += 1
        return self._inner.append_many(items, counters)

    def incr_many(self, deltas: Mapping[str, int]) -> None:
        self._calls["incr_many"] += 1
        self._inner.incr_many(deltas)

    def delete_many(self, keys: Sequence[str]) -> None:
        self._calls["delete_many"] += 1
        self._inner.delete_many(keys)


class _CountingFastSend:
    """Counts ``append_one`` when it sent something: a None answer made no round trip."""

    def __init__(self, inner: FastSend, calls: Counter[str]) -> None:
        self._inner = inner
        self._calls = calls

    def append_one(self, key: str, value: bytes, counter: str | None) -> bool | None:
        stored = self._inner.append_one(key, value, counter)
        if stored is not None:  # None: it sent nothing, the general path runs
            self._calls["append_one"] += 1
        return stored


class _CountingNative:
    """Counts the native queue operations by name, each one round trip."""

    def __init__(self, inner: NativeQueue, calls: Counter[str]) -> None:
        self._inner = inner
        self._calls = calls

    def take_many(self, groups: Sequence[TakeGroup], now: int = 0) -> Taken:
        self._calls["take_many"] += 1
        return self._inner.take_many(groups, now)

    def acknowledge(self, key: str, taken: bytes, keep: bytes) -> bool:
        self._calls["acknowledge"] += 1
        return self._inner.acknowledge(key, taken, keep)


class CountingStore(Forwarding):
    """Wraps a store and counts its calls by name in ``calls``: the connection's batched
    calls, and the inner store's fast path (``append_one``) and native queue operations
    (``take_many``, ``acknowledge``) when it declares them. Each count is one round trip."""

    def __init__(self, inner: Store) -> None:
        super().__init__(inner)
        self.calls: Counter[str] = Counter()
        fast, native = inner.fast_send, inner.native
        self._fast = None if fast is None else _CountingFastSend(fast, self.calls)
        self._native = None if native is None else _CountingNative(native, self.calls)

    @property
    def fast_send(self) -> FastSend | None:
        return self._fast

    @property
    def native(self) -> NativeQueue | None:
        return self._native

    @property
    def total(self) -> int:
        """Every call counted: the round trips made through this store."""
        return sum(self.calls.values())

    @contextmanager
    def connection(self) -> Iterator[Connection]:
        with self.inner.connection() as conn:
            yield _CountingConnection(conn, self.calls)


class DownStore:
    """A store that cannot be reached: every connection raises :class:`StoreUnavailable`
    with ``message``, as a cache that is down does, so a test can check what an outage does
    to a send, a delivery or a request without stopping a server.

    The limits are those of a memcache by default; pass them to look like another store.
    """

    sizes = None
    fast_send = None  # every send tries the connection, and fails there
    native = None

    def __init__(
        self,
        message: str = "the cache is down",
        *,
        max_value_size: int = DEFAULT_MAX_VALUE_SIZE,
        supports_append: bool = True,
        shared: bool = False,
    ) -> None:
        self.message = message
        self.max_value_size = max_value_size
        self.supports_append = supports_append
        self.shared = shared

    def __repr__(self) -> str:
        return f"DownStore({self.message!r})"

    @contextmanager
    def connection(self) -> Iterator[Connection]:
        raise StoreUnavailable(self.message)
        yield  # a generator, so the error comes at ``with``, as a real store's does
