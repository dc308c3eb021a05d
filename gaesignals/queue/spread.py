"""Signals spread over more shards by themselves, with no declaration: when hot, and when full.

A signal starts on one queue key. It doubles its width (1, 2, 4, ... shards; the shards a
doubling adds are a *rung*) when it is contended, up to :data:`MAX_CONTENDED`: on App Engine a
sender whose compare-and-set was lost to another sender; on memcached, where appends never lose,
a weak deliverer whose resets of the key kept losing to the appends. And it doubles when it is
full, on every store, up to :data:`MAX_SPREAD`: a sender whose shard is full tries two shards
of the newest rung (older shards filled first), then reads the width from the store, and widens
when nobody did (:func:`~gaesignals.queue.append.widen`). A send finds room in a few round
trips, however wide the signal.

Whoever widens writes a spread marker (:func:`~gaesignals.frames.spread_marker`) into the
signal's own queue key, shard 0, and, past :data:`SWEPT`, into the new rung's first shard (its
*anchor*, :func:`anchors`), and only once those are stored sends to (or reads) the new shards.
A signal declared with ``shards`` keeps exactly those, learns no width from any marker, and
raises ``QueueFull`` when they are full.

The marker is also written to the signal's spread key (:func:`~gaesignals.keys.spread_key`),
after shard 0, for senders: those that did not spread the signal read it when their key has
grown past :func:`crowded_bytes` (memcached tells each append the key's size; a read every
quarter of that while it stays long) or when their shards are full (then shard 0 too, in case
the spread key was evicted). A sender that learns a width there writes the marker into shard 0
again, so deliverers learn what senders learned even where shard 0 lost it.

Every delivery reads shard 0 anyway, so each deliverer learns the width there, at no cost to
quiet signals, and reads the new shards at once (the delivery takes again). A delivery's reset
of shard 0 or of an anchor writes the marker back in place of the empty value, so the width
outlives the payloads that carried it; a deliverer that knows a width writes it back even where
the cache lost it.

The cache may still lose markers while senders hold the width they learned, and without a
secret key anyone may plant one. So a signal's first delivery in a process, and then one per
``lost_check_interval`` (:class:`SweepSchedule`), is a *sweep*: it reads, in the delivery's
usual batched read, every shard below :data:`SWEPT` and every anchor up to ``MAX_SPREAD``
(:func:`swept`: 24 keys), and a shard past the known width that holds anything teaches the
width of its rung (:func:`rung`). Shards below ``SWEPT`` (every shard contention alone makes)
are never stranded: at worst they wait for the next sweep. A shard past it is found while its
signal's shard 0 or its rung's anchor holds the marker, which a process that learned the width
writes back (a deliverer emptying shard 0, a sender that read the spread key). What the cache
can still lose is all of those at once (an eviction of the small keys that hold only a marker,
with the large shards of a rung kept, and no process left that learned the width): that
rung's payloads then wait until a process learns the width again (a sender widening further
writes a wider one), counted ``lost`` meanwhile by the lost check; if none does, until the
cache evicts them too.

A width never shrinks: a sender that learned it may send to any of its shards, and a shard no
deliverer reads would strand what it holds. On Redis, appends and takes are atomic scripts that
never lose to each other, so only size widens a signal there (declared shards still work).
"""

from __future__ import annotations

import threading
import time
import weakref
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from functools import lru_cache

from .. import frames
from ..accounting import QuietUntil
from ..config import Settings
from ..keys import Shards, SignalKeys, shard_index, shard_queues
from ..registration import SignalSpec, registry
from ..stores import Store

MAX_SPREAD = frames.MAX_SPREAD
#: The widest contention alone spreads a signal: more keys would not make its appends meet
#: less. Past it only size widens.
MAX_CONTENDED = 16
#: A sweep reads every shard below this, and past it only each rung's first shard: every shard
#: contention makes, and a bounded number of keys however wide a signal grew.
SWEPT = MAX_CONTENDED

_monotonic = time.monotonic  # tests replace it to let time pass


class Widths(dict[str, int]):
    """How many shards each hot signal (by its own queue key) has spread over, as this process
    has learned it; ``generation`` moves on each change, so what was derived from the widths
    knows when to derive again."""

    generation = 0


class _Book:
    """Each live :class:`~gaesignals.config.Settings`' widths, by identity: learned for the
    store they describe, and forgotten with those settings (learned again from the store)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._widths: dict[int, Widths] = {}

    def of(self, settings: Settings) -> Widths:
        found = self._widths.get(id(settings))
        if found is None:
            with self._lock:
                found = self._widths.get(id(settings))
                if found is None:
                    found = self._widths[id(settings)] = Widths()
                    weakref.finalize(settings, self._widths.pop, id(settings), None)
        return found


_book = _Book()
_learning = threading.Lock()


def widths(settings: Settings) -> Widths:
    """What this process learned of hot signals' spread, for ``settings``' store."""
    return _book.of(settings)


def width(settings: Settings, base: str, declared: int) -> int:
    """How many shards the signal whose own queue key is ``base`` has: its declared count or
    the width this process learned, whichever is more (a declared signal: its count)."""
    learned = _book.of(settings).get(base, 0)
    if learned <= declared or base in registry.fixed_queues(settings.namespace):
        return declared
    return learned


@lru_cache(maxsize=64)
def anchors(shards: int) -> tuple[int, ...]:
    """The shards of a signal with ``shards`` shards that begin a rung past :data:`SWEPT`
    (16, 32, 64, ...): each holds the marker, so that a sweep finds its rung."""
    return tuple(1 << k for k in range(SWEPT.bit_length() - 1, (shards - 1).bit_length()))


def swept(settings: Settings, base: str, declared: int) -> Shards:
    """Which shards a sweep reads: every shard below :data:`SWEPT`, the known ones, and each
    anchor up to :data:`MAX_SPREAD` (a declared signal: its count)."""
    known = width(settings, base, declared)
    if base in registry.fixed_queues(settings.namespace):
        return declared
    first = max(known, SWEPT)
    return tuple(range(first)) + tuple(i for i in anchors(MAX_SPREAD) if i >= first)


def rung(index: int) -> int:
    """The width a payload on shard ``index`` shows: the ladder's (1, 2, 4, ...) first rung
    past it, as every width is reached by doubling."""
    return min(1 << index.bit_length(), MAX_SPREAD)


def learn(settings: Settings, base: str, seen: int) -> bool:
    """Note that ``base``'s signal spreads over ``seen`` shards; True if that is news. A
    declared signal learns nothing: its senders and deliverers keep to its count."""
    widths = _book.of(settings)
    if seen <= widths.get(base, 1) or base in registry.fixed_queues(settings.namespace):
        return False
    with _learning:  # two threads learning at once keep the wider width
        if seen <= widths.get(base, 1):
            return False
        widths[base] = seen
        widths.generation += 1
    return True


def marker(settings: Settings, base: str, shards: int) -> bytes:
    """The spread marker for ``shards``, signed as this process signs frames."""
    secret = settings.secret_keys[0] if settings.secret_keys else None
    return frames.spread_marker(shards, base.encode(), secret)


def kept_marker(settings: Settings, base: str, declared: int, key: str | None = None) -> bytes:
    """What a delivery leaves in shard 0 (or in ``key``, another of the signal's queue keys)
    in place of what it took: the marker of the width this process knows, when that is more
    than declared and the key is shard 0 or an anchor within it; else nothing."""
    known = width(settings, base, declared)
    if known <= declared or (key is not None and key != base and not _anchored(key, known)):
        return b""
    return marker(settings, base, known)


def _anchored(key: str, shards: int) -> bool:
    index = shard_index(key)
    return SWEPT <= index < shards and not index & (index - 1)


def kept_markers(settings: Settings, base: str, declared: int) -> dict[str, bytes]:
    """Each queue key that holds the signal's marker once emptied (shard 0 and the anchors
    of the width this process knows), and the marker; empty for a signal not spread."""
    known = width(settings, base, declared)
    if known <= declared:
        return {}
    kept = marker(settings, base, known)
    return dict.fromkeys(shard_queues(base, (0, *anchors(known))), kept)


def crowded_bytes(store: Store) -> int:
    """A key past this size means its deliveries are losing to its sends (or are far
    behind): the signal spreads."""
    return store.max_value_size >> 4  # a sixteenth: append_one tests this inline


class SweepSchedule:
    """When each signal (by its own queue key) is next due for a sweep in this process: on its
    first delivery, then at most once per ``lost_check_interval``. One per process, kept per
    signal rather than per mapping, as a mapping is often built anew for each delivery; new
    settings (another store) start afresh."""

    #: Signals whose last sweep is remembered; past it all are forgotten (each is then swept
    #: once more than it needed to be).
    KEPT = 65536

    def __init__(self) -> None:
        self.last: dict[str, float] = {}
        self.settings: Settings | None = None

    def due(
        self, settings: Settings, bases: Collection[str], quiet: QuietUntil | None = None
    ) -> frozenset[str]:
        """The signals of ``bases`` this delivery sweeps, each then not due for an interval;
        ``quiet`` remembers, for one set of ``bases``, until when none of them is due, so most
        deliveries look at no signal."""
        interval = settings.lost_check_interval
        if interval <= 0:
            return frozenset(bases)
        now = _monotonic()
        if quiet is not None and quiet.settings is settings and now < quiet.until:
            return frozenset()
        if self.settings is not settings:
            self.last, self.settings = {}, settings
        last = self.last
        due = frozenset(b for b in bases if now - last.get(b, -interval) >= interval)
        if due:
            if len(last) > self.KEPT:
                last.clear()
            last.update(dict.fromkeys(due, now))
        if quiet is not None:
            quiet.settings = settings
            quiet.until = min((last.get(b, now) for b in bases), default=now) + interval
        return due


sweeps = SweepSchedule()


@dataclass(frozen=True, slots=True)
class Reach:
    """What one delivery reads of its signals (by name): how many shards each is known to
    have, which it reads (in a sweep, :func:`swept`), and the queue keys read past the known
    width, each with the width a payload found there shows."""

    known: dict[str, int]
    read: dict[str, Shards]
    beyond: dict[str, int]


def reach(
    settings: Settings,
    keys: Mapping[str, SignalKeys],
    specs: Mapping[str, SignalSpec],
    sweep: Collection[str] = (),
) -> Reach:
    """What a delivery reads of the signals of ``keys`` (declared as ``specs`` say): of those
    whose own queue key is in ``sweep``, the shards a sweep reads (:func:`swept`)."""
    known = {name: width(settings, k.queue, specs[name].shards) for name, k in keys.items()}
    read: dict[str, Shards] = dict(known)
    if not sweep:
        return Reach(known, read, {})
    past: dict[str, int] = {}
    for name, k in keys.items():
        if k.queue in sweep:
            shards = read[name] = swept(settings, k.queue, specs[name].shards)
            if isinstance(shards, tuple):
                queues = zip(shard_queues(k.queue, shards), shards, strict=True)
                past.update((q, rung(i)) for q, i in queues if i >= known[name])
    return Reach(known, read, past)
