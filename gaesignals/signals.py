"""The writing side: :class:`Signal`, :func:`send` and :func:`send_multi`.

A send frames the payload and appends it to the signal's key: with the store's atomic append
where it has one (one round trip, and an ``add`` when the key is missing), otherwise with a
gets + cas loop (two round trips uncontended) that retries a bounded number of times with
jittered backoff. A send either stores the payload or raises; it never reports success for a
payload that is not in the cache.

A signal declared with ``shards=N`` has N queue keys (:func:`queue_keys`). Each thread sends
such a signal to one shard of its own (a process's threads take consecutive shards from a
random start), so its payloads stay in order there. It moves to a random other shard when its
shard is full, or (on stores without append) when it lost a CAS there to another sender, and
to the next shard once its shard has grown past :data:`SHARD_ROLL_BYTES`. Frames are signed
for the signal, not the shard, so a payload may sit on any shard of its signal and on no other
signal's key.
"""

from __future__ import annotations

import atexit
import hashlib
import itertools
import json
import logging
import os
import pickle
import random
import threading
import time
import weakref
from collections.abc import Iterable, Mapping, Sequence
from contextlib import nullcontext
from dataclasses import dataclass
from functools import lru_cache
from typing import TYPE_CHECKING, Any

from . import frames
from .config import Settings, get_settings
from .exceptions import (
    GaeSignalsError,
    InvalidSignalName,
    PayloadTooLarge,
    QueueFull,
    StoreUnavailable,
    UnserializablePayload,
)
from .stores import MAX_KEY_LENGTH, Connection, Store

if TYPE_CHECKING:
    from .registry import Registry

logger = logging.getLogger("gaesignals")

#: Longer names are refused; names up to this are hashed into keys when they must be.
MAX_NAME_LENGTH = 4096
#: How many gets + cas (or append + add) rounds a send tries before giving up.
SEND_ATTEMPTS = 8
PICKLE_PROTOCOL = 5
#: A thread moves to another shard of a sharded signal once its shard holds this many bytes (on
#: stores with append: once it has appended this many since it picked the shard), so that one
#: sender's backlog spreads over every shard.
SHARD_ROLL_BYTES = 64 * 1024


class Contention(StoreUnavailable):
    """The signal's key changed under every one of the bounded send attempts; nothing was
    written. A subclass of :class:`StoreUnavailable` because the caller's remedy is the same."""


@dataclass(frozen=True, slots=True)
class SignalKeys:
    """The cache keys of one signal: its pending payloads, its reliable-delivery lock and
    progress cursor, and its dead letters.

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


_SAFE_KEY_CHARS = frozenset(chr(c) for c in range(0x21, 0x7F))

#: Per-signal counters kept in the store (best-effort: the cache may evict them too).
#: ``accounted`` counts the frames removed from the queue, however they left it; ``expired``
#: is reserved.
COUNTERS = (
    "sent",
    "delivered",
    "failed",
    "dead_lettered",
    "dropped",
    "expired",
    "accounted",
    "lost",
)
_LONGEST_COUNTER = max(map(len, COUNTERS))


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


@lru_cache(maxsize=4096)
def signal_keys(name: str, namespace: str) -> SignalKeys:
    """Map a signal name to its keys, injectively.

    A key is ``gs:<namespace>:<kind>:<name>``; the namespace and the kind contain no ``:``, so
    the parts are unambiguous. A name that is not safe in a memcached key (space, control or
    non-ASCII characters) or would make the key too long is replaced by its SHA-256 under a
    different kind (``qh`` instead of ``q``), so a hashed name can never meet a plain one.
    """
    check_name(name)
    plain = len(name) + len(namespace) + 8 <= MAX_KEY_LENGTH and _SAFE_KEY_CHARS.issuperset(name)
    if plain:
        part, mark = name, ""
    else:
        part = hashlib.sha256(name.encode("utf-8", "surrogatepass")).hexdigest()
        mark = "h"
    base = f"gs:{namespace}:"
    counters = f"{base}n{mark}:{part}:"
    if len(counters) + _LONGEST_COUNTER > MAX_KEY_LENGTH:
        counters = f"{base}nh:{hashlib.sha256(name.encode('utf-8', 'surrogatepass')).hexdigest()}:"
    return SignalKeys(
        queue=f"{base}q{mark}:{part}",
        lock=f"{base}l{mark}:{part}",
        dead=f"{base}d{mark}:{part}",
        cursor=f"{base}c{mark}:{part}",
        counters=counters,
    )


@lru_cache(maxsize=4096)
def shard_keys(keys: SignalKeys, shards: int) -> tuple[tuple[str, str], ...]:
    """The (queue, progress cursor) keys of each of a signal's ``shards``.

    Shard 0 has the signal's own ``queue`` and ``cursor`` keys, so a signal with one shard is
    stored exactly as an undeclared one. Shard ``i`` > 0 appends ``i`` to the kind (``q3``,
    ``qh3``, ``c3``): kinds contain no ``:`` and every other kind is letters only, so a shard
    key is never another signal's key, nor another kind of key of any signal. The name part is
    what :func:`signal_keys` made; the 8 characters it leaves free fit the two digits.
    """
    _, namespace, kind, part = keys.queue.split(":", 3)
    mark = kind[1:]
    others = [
        (f"gs:{namespace}:q{mark}{i}:{part}", f"gs:{namespace}:c{mark}{i}:{part}")
        for i in range(1, shards)
    ]
    return ((keys.queue, keys.cursor), *others)


@lru_cache(maxsize=4096)
def _queues(keys: SignalKeys, shards: int) -> tuple[str, ...]:
    return tuple(queue for queue, _ in shard_keys(keys, shards))


def queue_keys(name: str, settings: Settings) -> list[str]:
    """Every queue key of ``name``: one per declared shard, the signal's own queue key first."""
    return list(_queues(signal_keys(check_name(name), settings.namespace), _shards(name)))


def base_queue_key(key: str) -> str | None:
    """The signal's own queue key (shard 0's) for any of its shards' queue keys, or None when
    ``key`` is not a queue key."""
    parts = key.split(":", 3)
    if len(parts) != 4 or parts[0] != "gs" or " " in key:
        return None
    kind = parts[2].rstrip("0123456789")
    if kind not in ("q", "qh"):
        return None
    return f"gs:{parts[1]}:{kind}:{parts[3]}"


_registry: Registry | None = None


def _the_registry() -> Registry:
    """The default registry, imported on first use: the registry module imports this one."""
    global _registry
    if _registry is None:
        from .registry import registry

        _registry = registry
    return _registry


def _shards(name: str) -> int:
    return _the_registry().shards(name)


# -- which shard a thread sends to ----------------------------------------------------------------


class _Sticky(threading.local):
    """This thread's shard of each sharded signal (by the signal's own queue key), and how many
    bytes it knows that shard holds."""

    def __init__(self) -> None:
        self.shard: dict[str, int] = {}
        self.filled: dict[str, int] = {}


_sticky = _Sticky()
# Shard choices only need to differ between senders: a private generator, reseeded in a forked
# child (whose sticky shards are forgotten, or every forked worker would share its parent's).
_rng = random.Random()
# A process's threads take consecutive shards from a random start: no two of its first N
# threads share a shard of an N-shard signal, and other processes start elsewhere at random.
_start = _rng.getrandbits(16)
_picks = itertools.count()


def _after_fork() -> None:
    global _sticky, _start, _picks
    _sticky = _Sticky()
    _rng.seed()
    _start = _rng.getrandbits(16)
    _picks = itertools.count()


os.register_at_fork(after_in_child=_after_fork)


def route(name: str, keys: SignalKeys) -> tuple[str, tuple[str, ...]]:
    """The queue key this thread sends ``name`` to, and all its queue keys when it has
    several shards (else an empty tuple)."""
    shards = _shards(name)
    if shards == 1:
        return keys.queue, ()
    queues = _queues(keys, shards)
    return _pick(queues), queues


def _pick(queues: tuple[str, ...]) -> str:
    """This thread's shard among a signal's queue keys, chosen the first time: the process's
    next shard after its random start."""
    index = _sticky.shard.get(queues[0])
    if index is None:
        index = _sticky.shard[queues[0]] = (_start + next(_picks)) % len(queues)
    return queues[index]


def _stick(queues: Sequence[str], key: str) -> None:
    _sticky.shard[queues[0]] = queues.index(key)
    _sticky.filled[queues[0]] = 0


def _crowded(queues: Sequence[str], key: str) -> None:
    """Another sender writes this thread's shard too: send the next payloads to a random other
    one (the current payload is retried where it is, with the value just read)."""
    if _sticky.shard.get(queues[0]) == queues.index(key):
        _stick(queues, _rng.choice([q for q in queues if q != key]))


def _filled(queues: Sequence[str], key: str, size: int, *, added: bool) -> None:
    """Note that ``key`` now holds ``size`` bytes (``added``: ``size`` more bytes); past
    :data:`SHARD_ROLL_BYTES` this thread moves to another shard for its next sends."""
    base = queues[0]
    if _sticky.shard.get(base) != queues.index(key):
        return  # another call of this thread moved meanwhile
    total = _sticky.filled.get(base, 0) + size if added else size
    if total <= SHARD_ROLL_BYTES:
        _sticky.filled[base] = total
    else:
        # The next shard round: one sender's backlog then fills the shards evenly.
        _stick(queues, queues[(queues.index(key) + 1) % len(queues)])


def encode_payload(data: Any, keys: SignalKeys, settings: Settings) -> bytes:
    """Serialize and frame one payload, refusing one that could never fit in the store."""
    try:
        if settings.codec == "json":
            body = json.dumps(data, separators=(",", ":")).encode("utf-8")
        else:
            body = pickle.dumps(data, protocol=PICKLE_PROTOCOL)
    except Exception as error:
        raise UnserializablePayload(
            f"cannot {settings.codec}-encode the payload for {keys.queue!r}: {error}"
        ) from error
    frame = frames.encode(
        body, keys.queue.encode(), settings.secret_keys, json_body=settings.codec == "json"
    )
    if len(frame) > settings.store.max_value_size:
        raise PayloadTooLarge(
            f"payload for {keys.queue!r} is {len(frame)} bytes framed; the store's limit is "
            f"{settings.store.max_value_size}"
        )
    return frame


def append_frames(
    conn: Connection,
    store: Store,
    pending: Mapping[str, bytes],
    shards: Mapping[str, tuple[str, ...]] | None = None,
    counts: Mapping[str, tuple[str, int]] | None = None,
    *,
    bumped: bool = False,
) -> None:
    """Append each value to its key atomically, or raise; the heart of every send.

    Keys are appended to in one batch per round trip. ``QueueFull`` and ``Contention`` name the
    keys that were not written in ``args[1]``; the others were. ``shards`` maps a key of a
    sharded signal to all its queue keys: a value whose shard is full moves to another shard of
    the same signal at once (and this thread stays there), so a signal only raises
    ``QueueFull`` once every shard it tried was full; a thread that lost a CAS to another
    sender moves its next sends to another shard.

    ``counts`` maps a key to its signal's ``sent`` counter key and how many frames its value
    holds: the counter is bumped for the values written (on an appending store in the first
    append's own round trip, taken back for values that then could not be written; otherwise
    once the writes are done). ``bumped``: those bumps already went out (with an append
    that was refused), so they are only taken back, never sent again.
    """
    pending = dict(pending)
    routes = dict(shards or {})
    tried = {key: {key} for key in routes}
    counted = dict(counts or {})
    if store.supports_append:
        bumps: dict[str, int] = {}
        for counter, n in counted.values():
            bumps[counter] = bumps.get(counter, 0) + n
        sent = [bumped]
        try:
            _append(conn, store, pending, routes, tried, counted, bumps, sent)
        except (QueueFull, Contention) as error:
            if not sent[0]:
                raise  # no append went out, so neither did the counters
            back: dict[str, int] = {}
            for key in error.args[1]:
                if key in counted:
                    counter, n = counted[key]
                    back[counter] = back.get(counter, 0) - n
            if back:
                conn.incr_many(back)
            raise
        return
    written: list[str] = []
    try:
        _gets_cas(conn, store, pending, routes, tried, counted, written)
    finally:
        done: dict[str, int] = {}
        for key in written:
            if key in counted:
                counter, n = counted[key]
                done[counter] = done.get(counter, 0) + n
        if done:
            _count_sent(conn, store, done)


# -- sent counts on stores without append ---------------------------------------------------------

#: Seconds a store without atomic append holds ``sent`` counts in the process before writing
#: them in one call (see :func:`_count_sent`).
SENT_FLUSH_SECONDS = 1.0


class _SentTally:
    """``sent`` counts not yet written to one store."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.deltas: dict[str, int] = {}
        self.since = 0.0


_tallies: weakref.WeakKeyDictionary[Store, _SentTally] = weakref.WeakKeyDictionary()
_tallies_lock = threading.Lock()


def _forget_tallies() -> None:
    """In a forked child: the parent's held counts are the parent's to write (written by both,
    ``sent`` would run ahead of what was stored, and lost detection report losses that are not)."""
    global _tallies, _tallies_lock
    _tallies = weakref.WeakKeyDictionary()
    _tallies_lock = threading.Lock()


os.register_at_fork(after_in_child=_forget_tallies)
_monotonic = time.monotonic  # tests replace it to let time pass


def _count_sent(conn: Connection | None, store: Store, deltas: Mapping[str, int]) -> None:
    """Count the payloads a gets + cas send stored.

    On a store with append the ``sent`` bump rides in the append's own round trip; here it
    would be a third call per send (App Engine has no pipelining), so the counts are gathered
    in the process and written at most every :data:`SENT_FLUSH_SECONDS`, by the send that
    finds them due, by :func:`~gaesignals.stats`, by a delivery that checks for lost payloads,
    and at exit. Late only ever makes lost detection under-report, never invent a loss."""
    with _tallies_lock:
        try:
            tally = _tallies.get(store)
            if tally is None:
                tally = _tallies[store] = _SentTally()
        except TypeError:  # a store that cannot be weakly referenced: no gathering
            tally = None
    if tally is None:
        with store.connection() if conn is None else nullcontext(conn) as using:
            using.incr_many(deltas)
        return
    now = _monotonic()
    with tally.lock:
        if not tally.deltas:
            tally.since = now
        for key, n in deltas.items():
            tally.deltas[key] = tally.deltas.get(key, 0) + n
        if now - tally.since < SENT_FLUSH_SECONDS:
            return
    with store.connection() if conn is None else nullcontext(conn) as using:
        flush_sent(using, store)


def flush_sent(conn: Connection, store: Store) -> None:
    """Write the ``sent`` counts this process holds for ``store`` (see :func:`_count_sent`);
    on failure they are kept for the next try, and the failure logged, not raised: the
    payloads they count are stored."""
    try:
        tally = _tallies.get(store)
    except TypeError:
        return
    if tally is None:
        return
    with tally.lock:
        deltas, tally.deltas = tally.deltas, {}
    if not deltas:
        return
    try:
        conn.incr_many(deltas)
    except GaeSignalsError:
        logger.warning("gaesignals: could not write sent counts %s yet", deltas, exc_info=True)
        with tally.lock:
            for key, n in deltas.items():
                tally.deltas[key] = tally.deltas.get(key, 0) + n


@atexit.register
def _flush_at_exit() -> None:
    for store, tally in list(_tallies.items()):
        if tally.deltas:
            try:
                with store.connection() as conn:
                    flush_sent(conn, store)
            except Exception:  # the interpreter is going away: nothing else to do
                logger.warning("gaesignals: sent counts lost at exit", exc_info=True)


def _append(
    conn: Connection,
    store: Store,
    pending: dict[str, bytes],
    routes: dict[str, tuple[str, ...]],
    tried: dict[str, set[str]],
    counted: dict[str, tuple[str, int]],
    bumps: dict[str, int],
    sent: list[bool],
) -> None:
    """Append (with ``add`` for missing keys) until every value is stored; ``sent[0]`` tells
    whether the counters went out (with the first append actually sent)."""
    known = store.sizes  # the sizes an adapter last saw, if it keeps them
    for attempt in range(SEND_ATTEMPTS):
        if known is not None:
            # An append the last seen size says would overflow is not sent: read the key
            # first (which refreshes the size), then move to another shard or raise.
            over = [
                k for k, v in pending.items() if known.get(k, 0) + len(v) > store.max_value_size
            ]
            if over and _make_room(store, pending, conn.gets_many(over), routes, tried, counted):
                continue
        stored = conn.append_many(pending, None if sent[0] else bumps)
        sent[0] = True
        if _settle(pending, stored, routes):
            return
        totals = {key: len(value) for key, value in pending.items()}
        if _settle(pending, conn.add_many(pending), routes, totals):
            return
        # The key exists, yet append refused: too large, or it vanished and came back.
        if _make_room(store, pending, conn.gets_many(list(pending)), routes, tried, counted):
            continue
        time.sleep(random.uniform(0, 0.001 * 2**attempt))
    raise Contention(
        f"gave up appending to {', '.join(sorted(pending))} after {SEND_ATTEMPTS} attempts",
        sorted(pending),
    )


def _gets_cas(
    conn: Connection,
    store: Store,
    pending: dict[str, bytes],
    routes: dict[str, tuple[str, ...]],
    tried: dict[str, set[str]],
    counted: dict[str, tuple[str, int]],
    written: list[str],
) -> None:
    lost: dict[str, int] = {}
    for attempt in range(SEND_ATTEMPTS):
        current = conn.gets_many(list(pending))
        if _make_room(store, pending, current, routes, tried, counted):
            continue  # read the shards moved to
        for key, size in lost.items():
            item = current.get(key)
            if key in pending and item is not None and len(item[0]) > size:
                _crowded(routes[key], key)  # another sender appended: it shares this shard
        grown = {k: (current[k][0] + v, current[k][1]) for k, v in pending.items() if k in current}
        stored = conn.cas_many(grown) if grown else {}
        missing = {k: v for k, v in pending.items() if k not in current}
        if missing:
            stored.update(conn.add_many(missing))
        written.extend(k for k in pending if stored[k])
        totals = {k: len(grown[k][0]) if k in grown else len(v) for k, v in pending.items()}
        if _settle(pending, stored, routes, totals):
            return
        # Retried on the same shard: a CAS lost to a delivery's reset says nothing about
        # other senders; the next read tells whether another sender wrote there.
        lost = {k: len(current[k][0]) if k in current else 0 for k in pending if k in routes}
        time.sleep(random.uniform(0, 0.001 * 2**attempt))
    raise Contention(
        f"gave up appending to {', '.join(sorted(pending))} after {SEND_ATTEMPTS} attempts",
        sorted(pending),
    )


def _settle(
    pending: dict[str, bytes],
    stored: Mapping[str, bool],
    routes: Mapping[str, tuple[str, ...]],
    totals: Mapping[str, int] | None = None,
) -> bool:
    """Drop the stored keys from ``pending``, noting how full each shard written now is
    (``totals``: its whole size; else it grew by the value). True when nothing is left."""
    for key in [k for k in pending if stored.get(k)]:
        value = pending.pop(key)
        queues = routes.get(key)
        if queues is not None:
            if totals is None:
                _filled(queues, key, len(value), added=True)
            else:
                _filled(queues, key, totals[key], added=False)
    return not pending


def _make_room(
    store: Store,
    pending: dict[str, bytes],
    current: Mapping[str, tuple[bytes, object]],
    routes: dict[str, tuple[str, ...]],
    tried: dict[str, set[str]],
    counted: dict[str, tuple[str, int]],
) -> bool:
    """Move values whose shard is full to another shard; True if any moved. Raises
    ``QueueFull`` (naming every unwritten key) when a full key has no untried shard left."""
    full = [
        k
        for k, v in pending.items()
        if k in current and len(current[k][0]) + len(v) > store.max_value_size
    ]
    if not full:
        return False
    largest = max(len(pending[k]) for k in full)
    moved = _reroute(pending, full, routes, tried, counted)
    stuck = [k for k in full if k not in moved]
    if stuck:
        # Name every key still unwritten, not only the full ones: none of them was stored.
        raise QueueFull(
            f"{', '.join(stuck)} already hold(s) too many pending bytes to take "
            f"{largest} more (limit {store.max_value_size}); deliver first",
            sorted(pending),
        )
    return True


def _reroute(
    pending: dict[str, bytes],
    keys: list[str],
    routes: dict[str, tuple[str, ...]],
    tried: dict[str, set[str]],
    counted: dict[str, tuple[str, int]],
) -> set[str]:
    """Move the values of ``keys`` to a random shard of their signal not tried yet in this
    send; returns the keys moved away from. This thread then sends there."""
    moved = set()
    for key in keys:
        queues = routes.get(key)
        if queues is None:
            continue
        options = [q for q in queues if q not in tried[key] and q not in pending]
        if not options:
            continue
        new = _rng.choice(options)
        pending[new] = pending.pop(key)
        routes[new] = routes.pop(key)
        tried[new] = tried.pop(key) | {new}
        if key in counted:
            counted[new] = counted.pop(key)
        _stick(queues, new)
        moved.add(key)
    return moved


def _has_receivers(name: str) -> bool:
    return bool(_the_registry().receivers(name))


class Signal:
    """A named signal. ``Signal('user_54274_password_change').send(data)`` returns at once;
    a later :func:`~gaesignals.deliver` runs the handlers mapped to the name."""

    __slots__ = ("name",)

    def __init__(self, name: str) -> None:
        self.name = check_name(name)

    def __repr__(self) -> str:
        return f"Signal({self.name!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Signal) and other.name == self.name

    def __hash__(self) -> int:
        return hash((Signal, self.name))

    def send(self, data: Any = None) -> None:
        """Store ``data`` for later delivery, or raise.

        Raises :class:`PayloadTooLarge` (nothing written), :class:`QueueFull` (the signal holds
        too many undelivered bytes), :class:`StoreUnavailable` (the cache is down).
        """
        send(self.name, data)


def send(name: str, data: Any = None) -> None:
    """``Signal(name).send(data)``: ``send_multi([(name, data)])`` in fewer steps."""
    settings = get_settings()
    keys = signal_keys(check_name(name), settings.namespace)
    frame = encode_payload(data, keys, settings)
    if settings.eager and _has_receivers(name):
        from .delivery import send_now

        send_now(name, data)
        return
    key, queues = route(name, keys)
    store = settings.store
    counter = keys.counter("sent") if settings.counters else None
    fast = store.fast_send
    # A store's one-send fast path first; whatever it could not do, the general path does (on
    # a gets + cas store that includes telling a CAS lost to another sender of this shard,
    # which moves this thread's next sends, from one lost to a delivery).
    stored = None if fast is None else fast.append_one(key, frame, counter)
    if stored:
        if counter is not None and not store.supports_append:
            _count_sent(None, store, {counter: 1})  # gets + cas: the fast path counted nothing
        if queues:
            _filled(queues, key, len(frame), added=True)
        return
    counts = None if counter is None else {key: (counter, 1)}
    with store.connection() as conn:
        append_frames(
            conn,
            store,
            {key: frame},
            {key: queues} if queues else None,
            counts,
            bumped=stored is False,
        )


def send_multi(
    signals: Mapping[str, Any] | Iterable[str | tuple[str, Any]],
) -> None:
    """Send many signals at once, in the fewest store calls.

    Takes ``{name: data}``, or an iterable of names (data ``None``) and ``(name, data)`` pairs;
    several payloads for one name keep their order. Every payload is encoded and checked
    before anything is written. If a signal cannot take its payloads, the exception
    (:class:`QueueFull`, :class:`Contention`) lists the keys left unwritten in ``args[1]``;
    the other signals' payloads were stored.
    """
    settings = get_settings()
    items: Iterable[str | tuple[str, Any]] = (
        signals.items() if isinstance(signals, Mapping) else signals
    )
    framed: dict[str, list[bytes]] = {}
    routes: dict[str, tuple[str, ...]] = {}
    eager: list[tuple[str, Any]] = []
    sent_of: dict[str, str] = {}
    for item in items:
        name, data = (item, None) if isinstance(item, str) else item
        keys = signal_keys(check_name(name), settings.namespace)
        frame = encode_payload(data, keys, settings)
        if settings.eager and _has_receivers(name):
            eager.append((name, data))
            continue
        key, queues = route(name, keys)
        if queues:
            routes[key] = queues
        sent_of[key] = keys.counter("sent")
        framed.setdefault(key, []).append(frame)
    if framed:
        batch = {key: b"".join(parts) for key, parts in framed.items()}
        store = settings.store
        for key, value in batch.items():
            if len(value) > store.max_value_size:
                raise QueueFull(f"the payloads for {key} together exceed the item limit", [key])
        counts = (
            {key: (sent_of[key], len(parts)) for key, parts in framed.items()}
            if settings.counters
            else None
        )
        with store.connection() as conn:
            append_frames(conn, store, batch, routes, counts)
    if eager:
        from .delivery import send_now

        for name, data in eager:
            send_now(name, data)
