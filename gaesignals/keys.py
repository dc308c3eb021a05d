"""Signal names and the cache keys they map to.

A key is ``gs:<namespace>:<kind>:{<name>}`` (counters ``gs:<namespace>:n:{<name>}:<counter>``).
The namespace and the kind contain no ``:``, so the parts are unambiguous. The braces are a
Redis Cluster hash tag: every key of one signal (its shards, lock, cursors, counters) lives in
one hash slot, so a store can work on a whole signal in one atomic script. A name that is not
safe in a memcached key (space, control or non-ASCII characters, braces) or would make the key
too long is replaced by its SHA-256 under a different kind (``qh`` instead of ``q``), so a hashed
name can never meet a plain one. Kinds: ``q`` queue (``q1``, ``q2``, ... its other shards),
``l`` lock (``l1``, ...), ``d`` dead letters, ``c`` cursor (``c1``, ...), ``n`` counters, ``w``
spread key.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass
from functools import lru_cache
from typing import NamedTuple

from .exceptions import InvalidSignalName
from .stores import MAX_KEY_LENGTH, is_stranded

#: Longer names are refused; names up to this are hashed into keys when they must be.
MAX_NAME_LENGTH = 4096

#: Per-signal counters kept in the store (best-effort: the cache may evict them too).
#: ``accounted`` counts the frames removed from the queue, however they left it.
COUNTERS = (
    "sent",
    "delivered",
    "failed",
    "retried",
    "dead_lettered",
    "dropped",
    "expired",
    "accounted",
    "lost",
    "coalesced",
    "cancelled",
    "purged",
)
_LONGEST_COUNTER = max(map(len, COUNTERS))
# Printable ASCII without braces: a brace in a name would move the hash tag.
_SAFE_KEY_CHARS = frozenset(chr(c) for c in range(0x21, 0x7F)) - {"{", "}"}
# What the key adds around the name: "gs:" ":" "q" ":" "{" "}" and two shard digits.
_KEY_OVERHEAD = 10


@dataclass(frozen=True, slots=True)
class SignalKeys:
    """The cache keys of one signal: its pending payloads, its reliable-delivery lock and
    progress cursor, its dead letters and its counters.

    ``queue`` doubles as the signal's identity inside frame signatures, so a frame copied to
    another signal's key fails verification.
    """

    queue: str
    lock: str
    dead: str
    cursor: str
    #: Prefix of the signal's counters (:data:`COUNTERS`); see :meth:`counter`.
    counters: str

    def counter(self, kind: str) -> str:
        """The key of one of the signal's counters: ``sent``, ``delivered``, ..."""
        return self.counters + kind


def check_name(name: object) -> str:
    """Return ``name`` if it can name a signal; raise :class:`InvalidSignalName` otherwise."""
    if not isinstance(name, str):
        raise InvalidSignalName(f"a signal name must be a str, not {type(name).__name__}")
    if not name:
        raise InvalidSignalName("a signal name must not be empty")
    if len(name) > MAX_NAME_LENGTH:
        raise InvalidSignalName(
            f"a signal name must be at most {MAX_NAME_LENGTH} characters, got {len(name)}"
        )
    return name


def _digest(name: str) -> str:
    return hashlib.sha256(name.encode("utf-8", "surrogatepass")).hexdigest()


@lru_cache(maxsize=4096)
def signal_keys(name: str, namespace: str) -> SignalKeys:
    """Map a signal name to its keys, injectively (see the module docstring)."""
    check_name(name)
    fits = len(name) + len(namespace) + _KEY_OVERHEAD <= MAX_KEY_LENGTH
    if fits and _SAFE_KEY_CHARS.issuperset(name):
        part, mark = name, ""
    else:
        part, mark = _digest(name), "h"
    base = f"gs:{namespace}:"
    counters = f"{base}n{mark}:{{{part}}}:"
    if len(counters) + _LONGEST_COUNTER > MAX_KEY_LENGTH:
        counters = f"{base}nh:{{{_digest(name)}}}:"
    return SignalKeys(
        queue=f"{base}q{mark}:{{{part}}}",
        lock=f"{base}l{mark}:{{{part}}}",
        dead=f"{base}d{mark}:{{{part}}}",
        cursor=f"{base}c{mark}:{{{part}}}",
        counters=counters,
    )


#: Which shards of a signal: how many (its first ones), or their indices in order (a sweep's:
#: the first ones, then one shard of each rung past them, see :mod:`gaesignals.queue.spread`).
Shards = int | tuple[int, ...]


def _indices(shards: Shards) -> Iterable[int]:
    return range(shards) if isinstance(shards, int) else shards


class Shard(NamedTuple):
    """The keys of one shard of a signal: its queue, its progress cursor and the lock a
    reliable deliverer holds while it works on that shard."""

    queue: str
    cursor: str
    lock: str


@lru_cache(maxsize=4096)
def shard_keys(keys: SignalKeys, shards: Shards) -> tuple[Shard, ...]:
    """The keys of each of a signal's ``shards``.

    Shard 0 has the signal's own ``queue``, ``cursor`` and ``lock`` keys, so a signal with one
    shard is stored exactly as an undeclared one. Shard ``i`` > 0 appends ``i`` to the kind
    (``q3``, ``qh3``, ``c3``, ``l3``): kinds contain no ``:`` and every other kind is letters
    only, so a shard key is never another signal's key, nor another kind of key of any signal.
    """
    _, namespace, kind, part = keys.queue.split(":", 3)
    mark = kind[1:]
    return tuple(
        Shard(queue, keys.cursor, keys.lock)
        if i == 0
        else Shard(queue, f"gs:{namespace}:c{mark}{i}:{part}", f"gs:{namespace}:l{mark}{i}:{part}")
        for i, queue in zip(_indices(shards), shard_queues(keys.queue, shards), strict=True)
    )


@lru_cache(maxsize=4096)
def shard_queues(base: str, shards: Shards) -> tuple[str, ...]:
    """The queue keys of a signal's ``shards``, from its own queue key ``base``, shard 0's
    (see :func:`shard_keys` for the names)."""
    _, namespace, kind, part = base.split(":", 3)
    return tuple(f"gs:{namespace}:q{kind[1:]}{i}:{part}" if i else base for i in _indices(shards))


def shard_index(key: str) -> int:
    """Which shard of its signal a queue key is (0 for the signal's own key)."""
    kind = key.split(":", 3)[2]
    digits = kind.lstrip("qh")
    return int(digits) if digits.isdigit() else 0


@lru_cache(maxsize=4096)
def spread_key(base: str) -> str:
    """The key beside a signal's own queue key that repeats its spread marker for senders
    (:mod:`gaesignals.queue.spread`): kind ``w`` (``wh``) in place of ``q`` (``qh``)."""
    _, namespace, kind, part = base.split(":", 3)
    return f"gs:{namespace}:w{kind[1:]}:{part}"


def base_queue_key(key: str) -> str | None:
    """The signal's own queue key (shard 0's) for any of its shards' queue keys, or None when
    ``key`` is not a queue key."""
    parts = key.split(":", 3)
    if len(parts) != 4 or parts[0] != "gs" or is_stranded(key):
        return None
    kind = parts[2].rstrip("0123456789")
    if kind not in ("q", "qh"):
        return None
    return f"gs:{parts[1]}:{kind}:{parts[3]}"
