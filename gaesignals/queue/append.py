"""The append engine behind every send: frames appended to queue keys, atomically, or raised.

With the store's atomic append where it has one (one round trip, and an ``add`` when the key is
missing), otherwise with a gets + cas loop (two round trips uncontended) that retries a bounded
number of times with jittered backoff. A write either stores its frames or raises; it never
reports success for a payload that is not in the cache. A store's one-send fast path
(:class:`~gaesignals.stores.FastSend`) sits behind :func:`append_one`. A signal's sends that
keep meeting other senders, or that find its shards full, spread it over more shards
(:mod:`.spread`, :func:`widen`); only a declared signal's shards, or the widest spread, are
ever full (``QueueFull``).
"""

from __future__ import annotations

import contextlib
import random
import time
from collections.abc import Mapping
from typing import cast

from ..accounting import count_sent
from ..config import Settings
from ..exceptions import Contention, GaeSignalsError, QueueFull, StoreFull
from ..frames import parse_queue
from ..keys import shard_queues, spread_key
from ..registration import registry
from ..stores import Cached, Connection, Store
from . import spread
from .routing import crowded, filled, rng, stick

#: How many gets + cas (or append + add) rounds a write tries before giving up.
SEND_ATTEMPTS = 8
#: How many shards one value may meet full in one write before the send raises ``QueueFull``
#: (a signal not declared with ``shards``: it widens after meeting two).
MAX_MOVES = 8
#: The most bytes a spread marker takes (signed): a key with less room takes none.
MARKER_ROOM = 64
#: How many more rounds a gets + cas write may take when a CAS was lost only to deliveries'
#: resets: those say nothing of other senders (the key shrank; the next CAS meets a short
#: key), and reliable deliveries, which acknowledge by CAS, make them common on a hot signal.
RESET_RETRIES = 2 * SEND_ATTEMPTS


def append_one(
    settings: Settings, key: str, frame: bytes, queues: tuple[str, ...], counter: str | None
) -> None:
    """Append one frame to ``key`` (one of ``queues``, a sharded signal's queue keys, or the
    signal's only key when ``queues`` is empty) and bump ``counter``: a send's entry point.

    The store's fast path first; whatever it could not do, the general path does (on a gets +
    cas store that includes telling a CAS lost to another sender of this shard, which moves
    this thread's next sends or spreads the signal, from one lost to a delivery)."""
    store = settings.store
    fast = store.fast_send
    try:
        stored = None if fast is None else fast.append_one(key, frame, counter)
    except StoreFull:
        if counter is not None and store.supports_append:  # it went out with the append
            with store.connection() as conn:
                conn.incr_many({counter: -1})
        raise
    if stored:
        if counter is not None and not store.supports_append:
            count_sent(None, store, {counter: 1})  # gets + cas: the fast path counted nothing
        if queues:
            filled(queues, key, len(frame), added=True)
        sizes = store.sizes
        if sizes is not None:
            size = sizes.get(key, 0)
            if size > store.max_value_size >> 4 and _grown_past(size, len(frame), store):
                with store.connection() as conn:
                    look_up_width(conn, settings, queues or (key,))
        return
    counts = None if counter is None else {key: (counter, 1)}
    with store.connection() as conn:
        append_frames(
            conn,
            store,
            {key: frame},
            {key: queues or (key,)},
            counts,
            bumped=stored is False,
            settings=settings,
        )


def _grown_past(size: int, added: int, store: Store) -> bool:
    """Whether an append of ``added`` bytes took a key past :func:`~.spread.crowded_bytes` and
    past a multiple of a quarter of that: a key so long may belong to a signal its deliverers
    spread, so the sender looks (a read of a tiny key, a few times per filling)."""
    step = spread.crowded_bytes(store) >> 2
    return size > 4 * step and size // step > (size - added) // step


def look_up_width(
    conn: Connection, settings: Settings, queues: tuple[str, ...], *, own_key_too: bool = False
) -> tuple[str, ...]:
    """Learn how far a signal has spread from its spread key (a read of one marker, no
    write; ``own_key_too``: and from its own queue key, where the spread key was evicted);
    returns its queue keys now. A thread that learns of new shards sends to one."""
    base = queues[0]
    try:
        _learn_width(conn, settings, base, own_key_too=own_key_too)
    except GaeSignalsError:
        return queues
    wider = _known(settings, queues)
    if len(wider) > len(queues):
        stick(wider, rng.choice(wider[len(queues) :]))
    return wider


def _learn_width(
    conn: Connection, settings: Settings, base: str, *, own_key_too: bool = False
) -> bool:
    """Learn ``base``'s width from its spread key (``own_key_too``: and its own key). A width
    learned from the spread key alone is written into the own key too, where deliverers read
    it: the spread key is only a copy, which the cache may have kept where it lost shard 0,
    or which a writer without the secret key may have planted. Returns whether the own key
    was read full (no marker fits: its deliverers learn the width at their next sweep)."""
    keys = [spread_key(base), base] if own_key_too else [spread_key(base)]
    found = conn.gets_many(keys)
    news = 0
    for key, (value, _) in found.items():
        seen = parse_queue(value, base.encode(), settings.secret_keys).marker_width
        if spread.learn(settings, base, seen) and key != base:
            news = seen
    own = found.get(base)
    full = own is not None and len(own.value) + MARKER_ROOM > settings.store.max_value_size
    if news and spread.width(settings, base, 1) == news and not full:
        with contextlib.suppress(QueueFull):  # a full key: its deliverers sweep it later
            append_frames(conn, settings.store, {base: spread.marker(settings, base, news)})
    return full


def widen(
    conn: Connection,
    settings: Settings,
    queues: tuple[str, ...],
    *,
    limit: int = spread.MAX_CONTENDED,
    own_key_too: bool = False,
) -> tuple[str, ...]:
    """Spread a signal (``queues``: its queue keys as this process knows them) over twice as
    many shards, at most ``limit`` (contention's; a full signal's is :data:`~.spread.MAX_SPREAD`):
    write the marker into its own queue key and the new rung's anchor (for deliverers), then
    into its spread key (for senders), then use the new shards. Returns its queue keys now
    (``queues`` when it could not widen: the marker write failed, or the signal is as wide as
    it gets). A signal already as wide in the store (its spread key; ``own_key_too``: or its
    own key) is learned."""
    base = queues[0]
    if base in registry.fixed_queues(settings.namespace):
        return queues
    try:
        full = _learn_width(conn, settings, base, own_key_too=own_key_too)
        known = max(len(queues), spread.width(settings, base, 1))
        target = min(2 * known, limit)
        if target > known and known == len(queues):
            marker = spread.marker(settings, base, target)
            # Its own key, and the new rung's first shard past the swept ones, where sweeps
            # look for the rung. Either may be full (of payloads that a delivery finds): the
            # deliverers that read no marker then learn the width at their next sweep.
            marked = [] if full else [0]
            if known >= spread.SWEPT:
                marked.append(known)
            for key in shard_queues(base, tuple(marked)):
                with contextlib.suppress(QueueFull):
                    append_frames(conn, settings.store, {key: marker})
            conn.set_many({spread_key(base): marker})
            spread.learn(settings, base, target)
    except GaeSignalsError:
        pass  # not written: stay as wide as the deliverers are known to read
    return _known(settings, queues)


def _known(settings: Settings, queues: tuple[str, ...]) -> tuple[str, ...]:
    """A signal's queue keys as wide as ``queues`` or what this process learned, if wider."""
    return shard_queues(queues[0], max(len(queues), spread.width(settings, queues[0], 1)))


def append_frames(
    conn: Connection,
    store: Store,
    pending: Mapping[str, bytes],
    shards: Mapping[str, tuple[str, ...]] | None = None,
    counts: Mapping[str, tuple[str, int]] | None = None,
    *,
    bumped: bool = False,
    settings: Settings | None = None,
) -> None:
    """Append each value to its key atomically, or raise; the heart of every send.

    Keys are appended to in one batch per round trip. ``QueueFull`` and ``Contention`` name the
    keys that were not written in ``keys``; the others were. ``shards`` maps a key of a
    sharded signal to all its queue keys: a value whose shard is full moves to another shard of
    the same signal at once (and this thread stays there), so a signal only raises
    ``QueueFull`` once every shard it tried was full; a thread that lost a CAS to another
    sender moves its next sends to another shard.

    ``counts`` maps a key to its signal's ``sent`` counter key and how many frames its value
    holds: the counter is bumped for the values written (on an appending store in the first
    append's own round trip, taken back for values that then could not be written; otherwise
    once the writes are done). ``bumped``: those bumps already went out (with an append
    that was refused), so they are only taken back, never sent again. ``settings``: the
    sends' own, given when the keys in ``shards`` are signals' queues that may spread.
    """
    write = _Write(conn, store, pending, shards, counts, settings)
    if store.supports_append:
        write.by_append(bumped)
    else:
        write.by_gets_cas()


def _only_resets(current: Mapping[str, Cached], lost: Mapping[str, int]) -> bool:
    """Whether every key whose CAS was lost holds no more now than when it was read: a
    delivery reset it (a sender would have grown it)."""
    return all(key not in current or len(current[key].value) <= size for key, size in lost.items())


class _Write:
    """One batch of values on their way to their keys, and what moved or was counted."""

    def __init__(
        self,
        conn: Connection,
        store: Store,
        pending: Mapping[str, bytes],
        shards: Mapping[str, tuple[str, ...]] | None,
        counts: Mapping[str, tuple[str, int]] | None,
        settings: Settings | None = None,
    ) -> None:
        self.conn = conn
        self.store = store
        self.settings = settings
        self.pending = dict(pending)
        self.routes = dict(shards or {})
        self.tried = {key: {key} for key in self.routes}
        self.counted = dict(counts or {})
        #: The bytes written to each key so far.
        self.written: dict[str, int] = {}

    def _sums(self, keys: list[str] | None = None, sign: int = 1) -> dict[str, int]:
        """The ``sent`` deltas of ``keys`` (every counted key when None)."""
        sums: dict[str, int] = {}
        for key in self.counted if keys is None else keys:
            if key in self.counted:
                counter, n = self.counted[key]
                sums[counter] = sums.get(counter, 0) + sign * n
        return sums

    def by_append(self, bumped: bool) -> None:
        """Append (with ``add`` for missing keys) until every value is stored; the counters
        ride with the first append actually sent, and are taken back for what then failed."""
        bumps = self._sums()
        sent = bumped
        known = self.store.sizes  # the sizes an adapter last saw, if it keeps them
        try:
            attempt = 0  # moves to another shard are bounded by the shards, not counted
            while attempt < SEND_ATTEMPTS:
                if known is not None and self._over_known(known):
                    continue
                try:
                    stored = self.conn.append_many(self.pending, None if sent else bumps)
                    sent = True
                    if self._settle(stored):
                        return self._spread_full()
                    totals = {key: len(value) for key, value in self.pending.items()}
                    if self._settle(self.conn.add_many(self.pending), totals):
                        return self._spread_full()
                except StoreFull as full:
                    sent = True  # (an append that raised sent its counters)
                    self._settle(full.results)
                    raise StoreFull(str(full), dict.fromkeys(self.pending, False)) from full
                # The key exists, yet append refused: too large, or it vanished and came back.
                current = self.conn.gets_many(list(self.pending))
                if self._make_room(current):
                    continue
                if attempt and current:  # refused twice with room: the cache will not grow it
                    raise QueueFull(
                        f"the cache refused twice to grow {', '.join(sorted(current))} (out of "
                        "memory?)",
                        sorted(self.pending),
                    )
                time.sleep(random.uniform(0, 0.001 * 2**attempt))
                attempt += 1
            raise self._contention()
        except (QueueFull, Contention) as error:
            back = self._sums(list(error.keys), -1) if sent else {}
            if back:
                self.conn.incr_many(back)
            raise

    def _spread_full(self) -> None:
        """Learn the spread of the signals written whose keys have grown long (a store that
        reports sizes: memcached), where deliverers that lose to the appends spread them."""
        sizes, settings = self.store.sizes, self.settings
        if sizes is None or settings is None:
            return
        for key, added in self.written.items():
            queues = self.routes.get(key)
            if queues is not None and _grown_past(sizes.get(key, 0), added, self.store):
                look_up_width(self.conn, settings, queues)

    def _over_known(self, known: Mapping[str, int]) -> bool:
        """An append the last seen size says would overflow is not sent: read the key first
        (which refreshes the size), then move to another shard (True) or raise."""
        limit = self.store.max_value_size
        over = [k for k, v in self.pending.items() if known.get(k, 0) + len(v) > limit]
        return bool(over) and self._make_room(self.conn.gets_many(over))

    def by_gets_cas(self) -> None:
        """Read, then cas (or add) each key until every value is stored; ``sent`` is counted
        for what was written, however the write ends."""
        written: list[str] = []
        try:
            self._gets_cas(written)
        finally:
            done = self._sums(written)
            if done:
                count_sent(self.conn, self.store, done)

    def _gets_cas(self, written: list[str]) -> None:
        conn, pending = self.conn, self.pending
        lost: dict[str, int] = {}
        attempt = 0  # moves to another shard are bounded by the shards, not counted
        resets = 0
        while attempt < SEND_ATTEMPTS:
            current = conn.gets_many(list(pending))
            if self._make_room(current):
                continue  # read the shards moved to
            if self._crowded(current, lost):
                continue  # spread: read the new shards
            if lost and resets < RESET_RETRIES and _only_resets(current, lost):
                attempt -= 1  # the last round lost only to deliveries: it uses no attempt
                resets += 1
            # Plain (value, token) pairs, which cas_many unpacks as it does Cached records: this
            # is every gets + cas send, where building a record per key costs more.
            grown: dict[str, tuple[bytes, object]] = {
                k: (current[k].value + v, current[k].token)
                for k, v in pending.items()
                if k in current
            }
            stored = conn.cas_many(cast(Mapping[str, Cached], grown)) if grown else {}
            missing = {k: v for k, v in pending.items() if k not in current}
            if missing:
                stored.update(conn.add_many(missing))
            written.extend(k for k in pending if stored[k])
            totals = {k: len(grown[k][0]) if k in grown else len(v) for k, v in pending.items()}
            if self._settle(stored, totals):
                return
            # Retried on the same shard: a CAS lost to a delivery's reset says nothing about
            # other senders; the next read tells whether another sender wrote there.
            lost = {
                k: len(current[k].value) if k in current else 0 for k in pending if k in self.routes
            }
            time.sleep(random.uniform(0, 0.001 * 2**attempt))
            attempt += 1
        raise self._contention()

    def _crowded(self, current: Mapping[str, Cached], lost: Mapping[str, int]) -> bool:
        """After a lost CAS, whether another sender wrote the key (it grew): then spread the
        signal and move the value to one of its new shards (True); at full width, to another
        shard not tried yet (True), and once every one was, retry it where it is."""
        moved = False
        for key, size in lost.items():
            item = current.get(key)
            if key not in self.pending or item is None or len(item.value) <= size:
                continue  # a delivery's reset: says nothing about other senders
            queues = self.routes[key]
            wider = queues if self.settings is None else widen(self.conn, self.settings, queues)
            fresh = [q for q in wider[len(queues) :] if q not in self.pending]
            if not fresh:  # as wide as it gets: another shard not tried in this write
                fresh = [q for q in wider if q not in self.tried[key] and q not in self.pending]
            if not fresh:
                crowded(queues, key)
                continue
            new = rng.choice(fresh)
            self._move(key, new, wider)
            stick(wider, new)
            moved = True
        return moved

    def _move(self, key: str, new: str, queues: tuple[str, ...]) -> None:
        """Send ``key``'s value to ``new``, another shard of its signal (of ``queues``)."""
        self.pending[new] = self.pending.pop(key)
        self.routes.pop(key)
        self.routes[new] = queues
        self.tried[new] = self.tried.pop(key) | {new}
        if key in self.counted:
            self.counted[new] = self.counted.pop(key)

    def _contention(self) -> Contention:
        keys = sorted(self.pending)
        return Contention(
            f"gave up writing to {', '.join(keys)} after {SEND_ATTEMPTS} attempts; the "
            "key kept changing",
            keys,
        )

    def _settle(self, stored: Mapping[str, bool], totals: Mapping[str, int] | None = None) -> bool:
        """Drop the stored keys from ``pending``, noting how full each shard written now is
        (``totals``: its whole size; else it grew by the value). True when nothing is left."""
        pending = self.pending
        for key in [k for k in pending if stored.get(k)]:
            value = pending.pop(key)
            self.written[key] = len(value)
            queues = self.routes.get(key)
            if queues is not None:
                if totals is None:
                    filled(queues, key, len(value), added=True)
                else:
                    filled(queues, key, totals[key], added=False)
        return not pending

    def _make_room(self, current: Mapping[str, Cached]) -> bool:
        """Move values whose shard is full to another shard; True if any moved. Raises
        ``QueueFull`` (naming every unwritten key) when a full key has no untried shard left."""
        limit = self.store.max_value_size
        pending = self.pending
        full = [
            k for k, v in pending.items() if k in current and len(current[k].value) + len(v) > limit
        ]
        if not full:
            return False
        largest = max(len(pending[k]) for k in full)
        moved = self._reroute(full)
        stuck = [k for k in full if k not in moved]
        if stuck:
            # Name every key still unwritten, not only the full ones: none of them was stored.
            raise QueueFull(
                f"{', '.join(stuck)} already hold(s) too many pending bytes to take {largest} "
                f"more (limit {limit}); deliver first",
                sorted(pending),
            )
        return True

    def _reroute(self, keys: list[str]) -> set[str]:
        """Move the values of ``keys`` to another shard of their signal (see :meth:`_room`);
        returns the keys moved away from. This thread then sends there."""
        moved = set()
        for key in keys:
            queues = self.routes.get(key)
            if queues is None:
                continue
            new, queues = self._room(key, queues)
            if new is None:
                continue
            self._move(key, new, queues)
            stick(queues, new)
            moved.add(key)
        return moved

    def _room(self, key: str, queues: tuple[str, ...]) -> tuple[str | None, tuple[str, ...]]:
        """Where ``key``'s value goes now that its shard is full, and its signal's queue keys
        now (None: nowhere). A declared signal's shards are tried in turn. Any other signal's
        newest rung is tried twice (older shards filled first), then the width is read from
        the store and, when nobody widened it, doubled: a few round trips, however wide."""
        tried, pending, settings = self.tried[key], self.pending, self.settings

        def untried(options: tuple[str, ...]) -> list[str]:
            return [q for q in options if q not in tried and q not in pending]

        if settings is None or queues[0] in registry.fixed_queues(settings.namespace):
            options = untried(queues)
        elif len(tried) > MAX_MOVES:
            options = []
        else:
            options = untried(queues[len(queues) // 2 :]) if len(tried) <= 2 else []
            if not options:
                queues = widen(
                    self.conn, settings, queues, limit=spread.MAX_SPREAD, own_key_too=True
                )
                options = untried(queues[len(queues) // 2 :])
        return (rng.choice(options) if options else None), queues
