"""Purging a signal: every pending payload of every shard dropped, and counted.

For operators: a CAS reset of each queue key read holding anything (a spread signal's own key
keeps its marker), in a few rounds against senders appending meanwhile. Every payload dropped
is ``accounted`` (it left the queue, so the lost check does not count it) and ``purged``, with
the resets, ahead of them (see ``Connection.cas_many``). Dead letters are not touched.
"""

from __future__ import annotations

from collections.abc import Mapping

from .. import frames
from ..config import Settings
from ..exceptions import Contention
from ..keys import SignalKeys, signal_keys
from ..stores import Cached
from .routing import queues_of

#: Rounds of read + reset before a purge gives up on keys that keep changing.
PURGE_ROUNDS = 8


def purge(settings: Settings, name: str) -> int:
    """Drop every pending payload of signal ``name``; returns how many (the payloads of
    unreadable regions included). Raises :class:`~gaesignals.Contention` when some keys kept
    changing for every round (what was purged so far stays purged and counted)."""
    keys = signal_keys(name, settings.namespace)
    todo = queues_of(name, settings, every=True)
    purged = 0
    with settings.store.connection() as conn:
        for _ in range(PURGE_ROUNDS):
            current = {k: c for k, c in conn.gets_many(todo).items() if c.value}
            counts = {key: _payloads(c.value, keys, settings) for key, c in current.items()}
            kept = {
                key: _marker(c.value) if key == keys.queue else b"" for key, c in current.items()
            }
            resets = {
                key: Cached(kept[key], c.token)
                for key, c in current.items()
                if c.value != kept[key]
            }
            if not resets:
                return purged
            counters = _counters(keys, sum(counts[key] for key in resets), settings)
            won = conn.cas_many(resets, counters=counters)
            lost = [key for key, ok in won.items() if not ok]
            taken_back = sum(counts[key] for key in lost)
            if taken_back and counters:
                conn.incr_many({counter: -taken_back for counter in counters})
            purged += sum(counts[key] for key, ok in won.items() if ok)
            if not lost:
                return purged
            todo = lost
    raise Contention(f"the purge of signal {name!r} kept losing to senders", todo)


def _marker(value: bytes) -> bytes:
    """The spread marker at the head of a signal's own key (kept: other deliverers find every
    shard by it), or b""."""
    if len(value) < frames.HEADER_SIZE or not value[3] & frames.FLAG_SPREAD:
        return b""
    _, _, flags, _, meta, body, _ = frames.HEADER.unpack_from(value)
    tagged = frames.HEADER_SIZE + (frames.KEY_ID_SIZE + frames.TAG_SIZE) * (flags & 1)
    return value[: tagged + meta + body + frames.SEAL_SIZE]


def _payloads(value: bytes, keys: SignalKeys, settings: Settings) -> int:
    """The payloads ``value`` holds: frames read or held, and those of unreadable regions."""
    read = frames.parse_queue(value, keys.queue.encode(), settings.secret_keys)
    return len(read.found) + len(read.held) + frames.dropped(read.bad)


def _counters(keys: SignalKeys, n: int, settings: Settings) -> Mapping[str, int] | None:
    if not settings.counters or not n:
        return None
    return {keys.counter("accounted"): n, keys.counter("purged"): n}
