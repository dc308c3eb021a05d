"""Where pending payloads live: one small Protocol and its adapters.

Delivery needs only a handful of batched calls, so that is all a store offers. Every call works
on many keys at once and costs one round trip per server however many keys it names. A
:class:`Connection` is pinned for a unit of work: a CAS token read through it is only honoured by
the same connection, which is how a token read before a memcached restart can never match an
item written after it (the old socket is dead, so the token is refused instead of compared).

Adapters: :class:`~gaesignals.stores.memory.MemoryStore` (in-process, the development default),
:class:`~gaesignals.stores.memcached.MemcachedStore` (pymemcache ``Client``, ``PooledClient`` or
``HashClient``), :class:`~gaesignals.stores.redis.RedisStore` (redis-py ``Redis`` or
``RedisCluster``: Redis, Valkey) and :class:`~gaesignals.stores.appengine.AppEngineStore` (App
Engine's bundled memcache). The adapters for real caches import their client libraries only
when constructed.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, NamedTuple, Protocol, runtime_checkable

if TYPE_CHECKING:
    from ..exceptions import StoreUnavailable

#: memcached's and App Engine's practical ceiling for one value, and ours by default.
DEFAULT_MAX_VALUE_SIZE = 1_000_000
#: memcached refuses longer keys; App Engine would hash them silently, we do it explicitly.
MAX_KEY_LENGTH = 250
#: A counter's longest value: 20 digits hold any 64-bit count, memcached's and Redis's own bound.
MAX_COUNTER_DIGITS = 20


def masked_url(url: str) -> str:
    """``url`` with its password (and any password-like query option) shown as ``***``: store
    URLs are echoed in error messages and reprs, which end up in logs."""
    url = re.sub(r"(?<=://)([^/@:]*):[^/@]*@", r"\1:***@", url)
    return re.sub(r"(?i)([?&](?:password|pass|secret|token)=)[^&#]*", r"\1***", url)


def counter_value(raw: bytes) -> int | None:
    """The count a counter's bytes hold, or None for bytes that are not a counter.

    Anyone who can write to the cache can plant anything in a counter key; bounding the length
    before ``int()`` keeps a planted value of thousands of digits from raising (``int()`` refuses
    more than 4,300) or costing more than its bytes.
    """
    text = raw.rstrip(b" ")
    if 0 < len(text) <= MAX_COUNTER_DIGITS and text.isdigit():
        return int(text)
    return None


class Cached(NamedTuple):
    """A value as read from the store, with the CAS token that lets :meth:`Connection.cas_many`
    replace it only if nobody changed it since (the token is opaque and valid on the
    connection that read it)."""

    value: bytes
    token: object


def stranded_key(key: str, where: str) -> str:
    """The name :meth:`Connection.scan_many` gives a copy of ``key`` stranded on server
    ``where`` (a cluster's server other than the key's home): ``cas_many`` and ``gets_many``
    take it back to reach that copy."""
    return f"{key} {where}"


def home_key(name: str) -> str:
    """The key a name from :meth:`Connection.scan_many` is a copy of: ``name`` itself for a
    key read at its home, the key of a stranded copy (see :func:`stranded_key`)."""
    return name.partition(" ")[0]


def stranded_at(name: str) -> str:
    """The server a stranded copy's name (:func:`stranded_key`) is on; "" for a key at home."""
    return name.partition(" ")[2]


def is_stranded(name: str) -> bool:
    """Whether ``name`` is a stranded copy's (:func:`stranded_key`), not a key at its home."""
    return " " in name


class Connection(Protocol):
    """The calls delivery makes, each batched over many keys."""

    def gets_many(self, keys: Sequence[str]) -> dict[str, Cached]:
        """Read the keys that exist, each with an opaque CAS token valid on this connection."""
        ...

    def scan_many(self, keys: Sequence[str]) -> dict[str, Cached]:
        """Like ``gets_many``; on a cluster, also the non-empty copies stranded on servers other
        than a key's home, under names made by :func:`stranded_key` to pass back to
        ``cas_many``."""
        ...

    def cas_many(
        self,
        items: Mapping[str, Cached],
        expire: int = 0,
        counters: Mapping[str, int] | None = None,
    ) -> dict[str, bool]:
        """Replace each value only if it is unchanged since its token was read; True if stored.
        Each item is read by unpacking, so a plain ``(value, token)`` pair works as well.

        ``counters`` (keys other than ``items``') are bumped as by :meth:`incr_many` *before*
        the writes, whatever their outcome: in the same round trip where the store can keep
        that order (one server), else in a round trip of their own first."""
        ...

    def add_many(self, items: Mapping[str, bytes], expire: int = 0) -> dict[str, bool]:
        """Create each key only if it does not exist; True if created."""
        ...

    def set_many(self, items: Mapping[str, bytes], expire: int = 0) -> dict[str, bool]:
        """Write each key unconditionally; True if stored."""
        ...

    def append_many(
        self, items: Mapping[str, bytes], counters: Mapping[str, int] | None = None
    ) -> dict[str, bool]:
        """Atomically append to each key; False if it would pass ``max_value_size`` (then
        nothing of it is stored). A missing key is either created with the value (True) or
        refused (False, nothing stored; the caller then adds it), as the store prefers.
        ``counters`` (keys other than ``items``') are changed as by :meth:`incr_many`, in the
        same round trip where the store can, after the appends, whatever their outcome. Only
        called when the store's ``supports_append`` is true."""
        ...

    def incr_many(self, deltas: Mapping[str, int]) -> None:
        """Add each delta to the counter at its key, atomically; a negative delta subtracts,
        stopping at 0. A missing key is created holding ``max(delta, 0)`` (no expiry). A
        counter reads back through ``gets_many`` as ASCII decimal digits, maybe followed by
        spaces; a key holding something else is left as it is."""
        ...

    def delete_many(self, keys: Sequence[str]) -> None:
        """Remove the keys, present or not."""
        ...


class FastSend(Protocol):
    """A store's one-send fast path: one payload's append (and ``counter`` bump) without a
    connection's batching. The send entry point tries it first."""

    def append_one(self, key: str, value: bytes, counter: str | None) -> bool | None:
        """None when it sent nothing (the general path then runs), else whether it stored;
        False means the append was refused but ``counter`` was bumped."""
        ...


class TakeGroup(NamedTuple):
    """One signal's part of a native weak take: its queue keys (on a cluster they share a
    hash slot), the counters to bump by the frames taken, and counter keys to read first."""

    queues: tuple[str, ...]
    #: ``(accounted, delivered)`` counter keys, each bumped by the frames taken; None: no counting.
    counters: tuple[str, str] | None = None
    #: Keys read, atomically with the take and before it (a lost check's counters).
    read: tuple[str, ...] = ()
    #: What the first queue holds once emptied: a spread signal's marker (see
    #: :mod:`gaesignals.queue.spread`), or nothing. A queue holding only that is left alone.
    marker: bytes = b""
    #: At most this many payload frames are taken, the oldest of each queue (-1: all).
    limit: int = -1
    #: The queue taken first (an index into ``queues``); the others follow round in order.
    first: int = 0


class Taken(NamedTuple):
    """What a native weak take removed and read."""

    #: Each queue key that held bytes, and the bytes taken from it (the key is now empty).
    values: dict[str, bytes]
    #: Each ``read`` key that exists, and its value.
    read: dict[str, bytes]
    #: Each queue key in ``values`` and the frames the store counted in it (what it bumped
    #: the group's counters by): whole frames walked by their headers from the start.
    counted: dict[str, int]
    #: On a cluster, why the groups missing from the answer were not taken (a node failed);
    #: the caller runs what was taken, then raises it.
    failure: StoreUnavailable | None = None
    #: Each queue key in ``values`` whose walk of whole frames stopped before its end, and how
    #: far into it (bytes) the walk got: frames not due yet past that (after garbage) were not
    #: kept. A key not named here was walked to its end.
    walked: dict[str, int] | None = None
    #: Each queue key whose take stopped at the group's ``limit``, and where (a byte offset):
    #: what follows stays queued. Its value in ``values`` is what was taken, or, for a group
    #: with ``read`` keys (a lost check counts what is queued), all the key held.
    cut: dict[str, int] | None = None


class NativeQueue(Protocol):
    """Queue operations a store does natively, in place of their generic versions over the
    memcache primitives (compare-and-set emulated on a store without one costs more)."""

    def take_many(self, groups: Sequence[TakeGroup], now: int = 0) -> Taken:
        """A weak take of every group in one round trip: per group, atomically, read its
        ``read`` keys, then read and empty each of its queues (the first to its ``marker``)
        but for the frames not due at ``now`` (Unix ms), bumping its counters by the payload
        frames taken; with a ``limit``, taking at most that many payload frames, from the
        ``first`` queue on, and leaving the rest in place. Raises
        :class:`~gaesignals.StoreUnavailable` when nothing answered (a timed-out take may
        still have been applied)."""
        ...

    def acknowledge(self, key: str, taken: bytes, keep: bytes) -> bool:
        """If ``key`` still begins with ``taken``, replace that head by ``keep`` and keep what
        senders appended after it (a missing key is created holding ``keep``); False, with
        nothing written, when the head is no longer ``taken``."""
        ...


@runtime_checkable
class Store(Protocol):
    """A cache that holds pending payloads, and the capabilities it declares."""

    #: The largest value one key may hold, in bytes.
    max_value_size: int
    #: Whether the connection has an atomic ``append_many`` (else sends use gets + cas).
    supports_append: bool
    #: Whether other processes or machines can read and write this cache.
    shared: bool

    @property
    def sizes(self) -> Mapping[str, int] | None:
        """Each key's last seen size, for a store whose append cannot refuse by size on the
        server (memcached appends up to its own -I): sends then read a key first instead of
        appending past ``max_value_size``. None when the store refuses by size itself."""
        ...

    @property
    def fast_send(self) -> FastSend | None:
        """The one-send fast path, or None."""
        ...

    @property
    def native(self) -> NativeQueue | None:
        """Native queue operations, or None (the generic ones over :class:`Connection` run)."""
        ...

    def connection(self) -> AbstractContextManager[Connection]:
        """A connection pinned for one unit of work (a send, a delivery)."""
        ...


__all__ = [
    "DEFAULT_MAX_VALUE_SIZE",
    "MAX_COUNTER_DIGITS",
    "MAX_KEY_LENGTH",
    "Cached",
    "Connection",
    "FastSend",
    "NativeQueue",
    "Store",
    "TakeGroup",
    "Taken",
    "counter_value",
    "home_key",
    "is_stranded",
    "masked_url",
    "stranded_at",
    "stranded_key",
]
