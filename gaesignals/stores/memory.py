"""The embedded in-process store: the default for development, and a model of memcached.

It keeps memcached's semantics where delivery depends on them (CAS tokens that change on every
write, ``add`` that fails on an existing key, ``append`` that fails on a missing one or past the
item limit, expiry) so code that passes against it passes against the real thing. It is
process-local: another process, or another gunicorn worker, sees none of it.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager

from . import DEFAULT_MAX_VALUE_SIZE, Cached, counter_value


class MemoryStore:
    """A thread-safe dict with memcached's CAS, add, append and expiry rules.

    ``append=False`` makes it behave like App Engine's memcache (no atomic append), so the
    gets + cas send path can be exercised without App Engine. ``clock`` returns seconds and is
    injectable so tests can expire items without sleeping.
    """

    shared = False
    sizes = None
    fast_send = None
    native = None

    def __init__(
        self,
        *,
        max_value_size: int = DEFAULT_MAX_VALUE_SIZE,
        append: bool = True,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.max_value_size = max_value_size
        self.supports_append = append
        self._clock = clock
        self._lock = threading.RLock()
        self._items: dict[str, tuple[bytes, int, float | None]] = {}
        self._cas_counter = itertools.count(1)

    def __repr__(self) -> str:
        return f"MemoryStore(append={self.supports_append})"

    @contextmanager
    def connection(self) -> Iterator[MemoryStore]:
        yield self

    # -- the Connection protocol; every method holds the lock for its whole batch ---------------

    def gets_many(self, keys: Sequence[str]) -> dict[str, Cached]:
        with self._lock:
            found: dict[str, Cached] = {}
            for key in keys:
                item = self._live(key)
                if item is not None:
                    found[key] = Cached(item[0], item[1])
            return found

    scan_many = gets_many  # one process, one place

    def cas_many(
        self,
        items: Mapping[str, Cached],
        expire: int = 0,
        counters: Mapping[str, int] | None = None,
    ) -> dict[str, bool]:
        with self._lock:
            if counters:
                self.incr_many({k: v for k, v in counters.items() if k not in items})
            result = {}
            for key, (value, token) in items.items():
                item = self._live(key)
                ok = item is not None and item[1] == token and self._fits(value)
                if ok:
                    self._put(key, value, expire)
                result[key] = ok
            return result

    def add_many(self, items: Mapping[str, bytes], expire: int = 0) -> dict[str, bool]:
        with self._lock:
            result = {}
            for key, value in items.items():
                ok = self._live(key) is None and self._fits(value)
                if ok:
                    self._put(key, value, expire)
                result[key] = ok
            return result

    def set_many(self, items: Mapping[str, bytes], expire: int = 0) -> dict[str, bool]:
        with self._lock:
            result = {}
            for key, value in items.items():
                ok = self._fits(value)
                if ok:
                    self._put(key, value, expire)
                result[key] = ok
            return result

    def append_many(
        self, items: Mapping[str, bytes], counters: Mapping[str, int] | None = None
    ) -> dict[str, bool]:
        if not self.supports_append:
            raise NotImplementedError("this MemoryStore was made with append=False")
        with self._lock:
            result = {}
            for key, value in items.items():
                item = self._live(key)
                ok = item is not None and self._fits(item[0] + value)
                if ok:
                    assert item is not None
                    # memcached's append keeps the item's expiry.
                    self._items[key] = (item[0] + value, next(self._cas_counter), item[2])
                result[key] = ok
            if counters:
                self.incr_many({k: v for k, v in counters.items() if k not in items})
            return result

    def incr_many(self, deltas: Mapping[str, int]) -> None:
        with self._lock:
            for key, delta in deltas.items():
                item = self._live(key)
                if item is None:
                    self._put(key, b"%d" % max(delta, 0), 0)
                elif (count := counter_value(item[0])) is not None:
                    value = b"%d" % max(count + delta, 0)
                    self._items[key] = (value, next(self._cas_counter), item[2])

    def delete_many(self, keys: Sequence[str]) -> None:
        with self._lock:
            for key in keys:
                self._items.pop(key, None)

    # -- for tests and the example app ----------------------------------------------------------

    def set_raw(self, key: str, value: bytes) -> None:
        """Write bytes straight into a key, as another program sharing the cache could."""
        with self._lock:
            self._put(key, value, 0)

    def clear(self) -> None:
        """Forget everything (memcached's ``flush_all``)."""
        with self._lock:
            self._items.clear()

    def _fits(self, value: bytes) -> bool:
        return len(value) <= self.max_value_size

    def _put(self, key: str, value: bytes, expire: int) -> None:
        expires_at = self._clock() + expire if expire > 0 else None
        self._items[key] = (value, next(self._cas_counter), expires_at)

    def _live(self, key: str) -> tuple[bytes, int, float | None] | None:
        item = self._items.get(key)
        if item is not None and item[2] is not None and item[2] <= self._clock():
            del self._items[key]
            return None
        return item
