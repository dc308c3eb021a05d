"""Dead letters in the store: a signal's payloads reliable delivery gave up on, kept under its
dead-letter key as frames, signed for the signal's queue key like any queued frame.

:func:`put` appends them as a send appends frames. :func:`read` reads them in place.
:func:`requeue` and :func:`purge` first empty the key by compare-and-set (a letter added
meanwhile makes the round start again, so no letter is taken twice or dropped unseen); a
requeue then appends the verified letters to the signal's queue with their attempts reset,
and puts everything back under the dead-letter key if that fails. Which frames verify is
decided here; what to log of the rest, and how to decode a payload, is the caller's.
"""

from __future__ import annotations

from collections import Counter
from typing import NamedTuple

from .. import frames
from ..accounting import flush
from ..config import Settings
from ..exceptions import Contention, GaeSignalsError
from ..keys import SignalKeys, signal_keys
from ..stores import Cached, Connection, Store
from .append import append_frames
from .routing import route

#: Rounds of compare-and-set a requeue or purge makes to empty the dead-letter key.
TAKE_ROUNDS = 32


class Letters(NamedTuple):
    """What a signal's dead-letter key held: its bytes, the frames in them that verify, the
    regions that do not (unreadable, tampered), and the frames this process may not read
    (signed with a key it does not hold, see :mod:`.held`), kept for one that may."""

    value: bytes
    found: list[frames.Frame]
    bad: list[frames.BadRegion]
    held: list[frames.Frame]

    @property
    def whole(self) -> list[frames.Frame]:
        """Every letter kept, readable here or held for another deliverer, in order."""
        if not self.held:
            return self.found
        return sorted(self.found + self.held, key=lambda frame: frame.start)


#: What a signal without dead letters reads as (shared: never to be changed).
NO_LETTERS = Letters(b"", [], [], [])


def _letters(value: bytes, keys: SignalKeys, settings: Settings) -> Letters:
    parsed = frames.parse_queue(value, keys.queue.encode(), settings.secret_keys)
    return Letters(value, parsed.found, parsed.bad, [held.frame for held in parsed.held])


def put(conn: Connection, store: Store, keys: SignalKeys, raw: bytes) -> None:
    """Append the whole frames ``raw`` to the signal's dead letters; raises a
    :class:`~gaesignals.GaeSignalsError` when they could not be stored (nothing was)."""
    append_frames(conn, store, {keys.dead: raw})


def read(settings: Settings, name: str) -> Letters:
    """The dead letters of signal ``name``, oldest first, left where they are."""
    keys = signal_keys(name, settings.namespace)
    with settings.store.connection() as conn:
        item = conn.gets_many([keys.dead]).get(keys.dead)
    return NO_LETTERS if item is None else _letters(item.value, keys, settings)


def purge(settings: Settings, name: str) -> Letters:
    """Remove the dead letters of signal ``name``; returns what they were. Raises
    :class:`~gaesignals.Contention` when the key kept changing."""
    with settings.store.connection() as conn:
        return _take(conn, name, settings)


def requeue(settings: Settings, name: str) -> Letters:
    """Move the dead letters of signal ``name`` that verify, and those held for a deliverer
    with another key, back to its queue (a shard picked as a send would), their attempts
    reset, their ids, send times and signatures kept; returns what the key held (the rest of
    it is dropped). ``accounted`` is taken back by the letters moved: they are pending again,
    not gone. On failure to append, everything is put back under the dead-letter key and the
    error raised."""
    keys = signal_keys(name, settings.namespace)
    with settings.store.connection() as conn:
        letters = _take(conn, name, settings)
        moving = letters.whole
        if not moving:
            return letters
        value = letters.value
        fresh = b"".join(frames.with_attempts(value[f.start : f.end], 0) for f in moving)
        key, queues = route(name, keys, settings)
        store = settings.store
        try:
            append_frames(conn, store, {key: fresh}, {key: queues or (key,)}, settings=settings)
        except GaeSignalsError:
            append_frames(conn, store, {keys.dead: value})
            raise
        if settings.counters:
            accounted = Counter({keys.counter("accounted"): -len(moving)})
            flush(conn, accounted, quietly=True)
        return letters


def _take(conn: Connection, name: str, settings: Settings) -> Letters:
    """Empty the dead-letter key of ``name`` by compare-and-set; what it held."""
    keys = signal_keys(name, settings.namespace)
    for _ in range(TAKE_ROUNDS):
        item = conn.gets_many([keys.dead]).get(keys.dead)
        if item is None or not item.value:
            return NO_LETTERS
        if conn.cas_many({keys.dead: Cached(b"", item.token)})[keys.dead]:
            return _letters(item.value, keys, settings)
        # another failure was dead-lettered meanwhile: read again
    raise Contention(f"the dead letters of {name!r} kept changing; try again", [keys.dead])
