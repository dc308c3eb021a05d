"""Hot signals spread over more shards by themselves, with no declaration.

A signal starts on one queue key. When it is contended, whoever sees it doubles the signal's
width, up to :data:`~gaesignals.frames.MAX_SPREAD`: on App Engine a sender whose
compare-and-set was lost to another sender; on memcached, where appends never lose, a weak
deliverer whose resets of the key kept losing to the appends. It writes a spread marker
(:func:`~gaesignals.frames.spread_marker`) into the signal's own queue key, shard 0, and only
once that is stored sends to (or reads) the new shards. A signal declared with ``shards`` keeps
exactly those, and learns no width from any marker.

The marker is also written to the signal's spread key (:func:`~gaesignals.keys.spread_key`),
after shard 0, for senders: those that did not spread the signal read it when their key has
grown past :func:`crowded_bytes` (memcached tells each append the key's size; a read every
quarter of that while it stays long) or when every shard they know is full (then shard 0 too,
in case the spread key was evicted). A sender that learns a width there writes the marker into
shard 0 again, so deliverers learn what senders learned even where shard 0 lost it.

Every delivery reads shard 0 anyway, so each deliverer learns the width there, at no cost to
quiet signals, and reads the new shards at once (the delivery takes again). A delivery's reset
of shard 0 writes the marker back in place of the empty value, so the width outlives the
payloads that carried it; a deliverer that knows a width writes it back even where the cache
lost it.

The cache may still lose every marker while senders hold the width they learned, and without a
secret key anyone may plant one. So a signal's first delivery in a process, and then one per
``lost_check_interval`` (:class:`SweepSchedule`), is a *sweep*: it reads every shard any sender
may use (:func:`every_shard`, the whole ladder up to ``MAX_SPREAD``) in the delivery's usual
batched read, and a shard past the known width that holds anything teaches the width of its
rung (:func:`rung`). Nothing is stranded: at worst it waits for the next sweep.

A width never shrinks: a sender that learned it may send to any of its shards, and a shard no
deliverer reads would strand what it holds. On Redis, appends and takes are atomic scripts that
never lose to each other, so nothing there widens a signal (declared shards still work).
"""

from __future__ import annotations

import threading
import time
import weakref
from collections.abc import Collection, Mapping
from dataclasses import dataclass

from .. import frames
from ..accounting import QuietUntil
from ..config import Settings
from ..keys import SignalKeys, shard_queues
from ..registration import SignalSpec, registry
from ..stores import Store

MAX_SPREAD = frames.MAX_SPREAD

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


def every_shard(settings: Settings, base: str, declared: int) -> int:
    """How many shards a sweep reads: every one a sender may use, whatever it learned."""
    if base in registry.fixed_queues(settings.namespace):
        return declared
    return max(declared, MAX_SPREAD)


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


def kept_marker(settings: Settings, base: str, declared: int) -> bytes:
    """What a delivery leaves in shard 0 in place of what it took: the marker of the width
    this process knows, when that is more than declared; else nothing."""
    known = width(settings, base, declared)
    return marker(settings, base, known) if known > declared else b""


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
    have, how many it reads (in a sweep, every one a sender may use), and the queue keys read
    past the known width, each with the width a payload found there shows."""

    known: dict[str, int]
    read: dict[str, int]
    beyond: dict[str, int]


def reach(
    settings: Settings,
    keys: Mapping[str, SignalKeys],
    specs: Mapping[str, SignalSpec],
    sweep: Collection[str] = (),
) -> Reach:
    """What a delivery reads of the signals of ``keys`` (declared as ``specs`` say): of those
    whose own queue key is in ``sweep``, every shard a sender may use."""
    known = {name: width(settings, k.queue, specs[name].shards) for name, k in keys.items()}
    if not sweep:
        return Reach(known, known, {})
    read = dict(known)
    past: dict[str, int] = {}
    for name, k in keys.items():
        if k.queue in sweep:
            read[name] = every_shard(settings, k.queue, specs[name].shards)
            queues = shard_queues(k.queue, read[name])
            past.update((queues[i], rung(i)) for i in range(known[name], read[name]))
    return Reach(known, read, past)
