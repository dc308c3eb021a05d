"""Hot signals spread over more shards by themselves, with no declaration.

A signal starts on one queue key. When it is contended, whoever sees it doubles the signal's
width, up to :data:`~gaesignals.frames.MAX_SPREAD`: on App Engine a sender whose
compare-and-set was lost to another sender; on memcached, where appends never lose, a weak
deliverer whose resets of the key kept losing to the appends. It writes a spread marker
(:func:`~gaesignals.frames.spread_marker`) into the signal's own queue key, shard 0, and only
once that is stored sends to (or reads) the new shards. A signal declared with ``shards`` keeps
exactly those.

The marker is also written to the signal's spread key (:func:`~gaesignals.keys.spread_key`),
after shard 0, for senders: those that did not spread the signal read it when their key has
grown past :func:`crowded_bytes` (memcached tells each append the key's size; a read every
quarter of that while it stays long) or when every shard they know is full (then shard 0 too,
in case the spread key was evicted). It is only ever read where a key is long, so it costs
quiet signals nothing, and since it is written after shard 0, a sender that learns a width
from it can never send where deliverers do not read.

Every delivery reads shard 0 anyway, so each deliverer learns the width there, at no cost to
quiet signals, and reads the new shards at once (the delivery takes again). A delivery's reset
of shard 0 writes the marker back in place of the empty value, so the width outlives the
payloads that carried it; a deliverer that knows a width writes it back even where the cache
lost it.

A width never shrinks: a sender that learned it may send to any of its shards, and a shard no
deliverer reads would strand what it holds. On Redis, appends and takes are atomic scripts that
never lose to each other, so nothing there widens a signal (declared shards still work).
"""

from __future__ import annotations

import threading

from .. import frames
from ..config import Settings
from ..stores import Store

MAX_SPREAD = frames.MAX_SPREAD

_learning = threading.Lock()


def width(settings: Settings, base: str, declared: int) -> int:
    """How many shards the signal whose own queue key is ``base`` has: its declared count or
    the width this process learned, whichever is more."""
    learned = settings.widths.get(base, 0)
    return learned if learned > declared else declared


def learn(settings: Settings, base: str, seen: int) -> bool:
    """Note that ``base``'s signal spreads over ``seen`` shards; True if that is news."""
    widths = settings.widths
    if seen <= widths.get(base, 1):
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


def home_value(settings: Settings, base: str, declared: int) -> bytes:
    """What a delivery leaves in shard 0 in place of what it took: the marker of the width
    this process knows, when that is more than declared; else nothing."""
    learned = settings.widths.get(base, 0)
    return marker(settings, base, learned) if learned > declared else b""


def crowded_bytes(store: Store) -> int:
    """A key past this size means its deliveries are losing to its sends (or are far
    behind): the signal spreads."""
    return store.max_value_size >> 4  # a sixteenth: append_one tests this inline
