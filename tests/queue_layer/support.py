"""Helpers of the queue contract suite: letters to put, and a store another writer meddles with.

:class:`MeddlingStore` wraps a real store: its connection makes every call on the real one,
but may first run a test's ``before_cas`` (what another process does between a read and a
compare-and-set), and refuses every write to the keys a test names (a key that stays full or
keeps changing). Its own calls go to the real store, so the store's contract stays in play.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import TypeVar

from gaesignals import frames
from gaesignals.config import Settings
from gaesignals.keys import SignalKeys, shard_queues, signal_keys
from gaesignals.registration import SignalSpec
from gaesignals.stores import Cached, Connection, Store
from gaesignals.testing.doubles import Forwarding

V = TypeVar("V")


def letter(
    keys: SignalKeys, body: bytes, *, attempts: int = 3, secret: bytes | None = None
) -> bytes:
    """One dead letter of ``keys``' signal: a JSON payload frame that failed ``attempts``
    times, signed with ``secret`` if given."""
    signed = [secret] if secret else []
    return frames.encode(body, keys.queue.encode(), signed, json_body=True, attempts=attempts)


class _MeddledConnection:
    def __init__(self, inner: Connection, store: MeddlingStore) -> None:
        self._inner = inner
        self._store = store

    def _allowed(self, items: Mapping[str, V]) -> tuple[dict[str, V], dict[str, bool]]:
        """The writes passed on, and ``False`` for each refused."""
        refused = self._store.refused
        return (
            {k: v for k, v in items.items() if k not in refused},
            {k: False for k in items if k in refused},
        )

    def gets_many(self, keys: Sequence[str]) -> dict[str, Cached]:
        return self._inner.gets_many(keys)

    def scan_many(self, keys: Sequence[str]) -> dict[str, Cached]:
        return self._inner.scan_many(keys)

    def cas_many(
        self,
        items: Mapping[str, Cached],
        expire: int = 0,
        counters: Mapping[str, int] | None = None,
    ) -> dict[str, bool]:
        if self._store.before_cas is not None:
            self._store.before_cas(self._inner)
        passed, refused = self._allowed(items)
        return refused | (self._inner.cas_many(passed, expire, counters) if passed else {})

    def add_many(self, items: Mapping[str, bytes], expire: int = 0) -> dict[str, bool]:
        passed, refused = self._allowed(items)
        return refused | (self._inner.add_many(passed, expire) if passed else {})

    def set_many(self, items: Mapping[str, bytes], expire: int = 0) -> dict[str, bool]:
        passed, refused = self._allowed(items)
        return refused | (self._inner.set_many(passed, expire) if passed else {})

    def append_many(
        self, items: Mapping[str, bytes], counters: Mapping[str, int] | None = None
    ) -> dict[str, bool]:
        passed, refused = self._allowed(items)
        if counters and not passed:
            self._inner.incr_many(counters)
        return refused | (self._inner.append_many(passed, counters) if passed else {})

    def incr_many(self, deltas: Mapping[str, int]) -> None:
        self._inner.incr_many(deltas)

    def delete_many(self, keys: Sequence[str]) -> None:
        self._inner.delete_many(keys)


class MeddlingStore(Forwarding):
    """``inner``, but ``before_cas(conn)`` runs on the real connection before each
    compare-and-set, and every write to a key of ``refused`` is refused."""

    fast_send = None
    native = None

    def __init__(
        self,
        inner: Store,
        *,
        before_cas: Callable[[Connection], None] | None = None,
        refused: Sequence[str] = (),
    ) -> None:
        super().__init__(inner)
        self.before_cas = before_cas
        self.refused = frozenset(refused)

    @contextmanager
    def connection(self) -> Iterator[Connection]:
        with self.inner.connection() as conn:
            yield _MeddledConnection(conn, self)


class Layout:
    """A weak take's layout (``gaesignals.queue.weak_take.Layout``): the keys of ``names``,
    each on ``shards`` queue keys, no marker known, no sweep."""

    def __init__(self, settings: Settings, names: Sequence[str], shards: int = 1) -> None:
        self.keys = {name: signal_keys(name, settings.namespace) for name in names}
        self.shards = {name: shard_queues(k.queue, shards) for name, k in self.keys.items()}
        self.names = {queue: name for name, queues in self.shards.items() for queue in queues}
        self.order = {key: index for index, key in enumerate(self.names)}
        self.markers: dict[str, bytes] = {}
        self.specs = {name: SignalSpec(name) for name in names}
        self.widths = dict.fromkeys(names, shards)
        self.beyond: dict[str, int] = {}
