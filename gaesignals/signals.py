"""The writing side: :class:`Signal`, :func:`send` and :func:`send_multi`.

A send frames the payload and appends it to the signal's key: with the store's atomic append
where it has one (one round trip, and an ``add`` when the key is missing), otherwise with a
gets + cas loop (two round trips uncontended) that retries a bounded number of times with
jittered backoff. A send either stores the payload or raises; it never reports success for a
payload that is not in the cache.
"""

from __future__ import annotations

import hashlib
import json
import pickle
import random
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from . import frames
from .config import Settings, get_settings
from .exceptions import (
    InvalidSignalName,
    PayloadTooLarge,
    QueueFull,
    StoreUnavailable,
    UnserializablePayload,
)
from .stores import MAX_KEY_LENGTH, Connection, Store

#: Longer names are refused; names up to this are hashed into keys when they must be.
MAX_NAME_LENGTH = 4096
#: How many gets + cas (or append + add) rounds a send tries before giving up.
SEND_ATTEMPTS = 8
PICKLE_PROTOCOL = 5


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
    pending: dict[str, bytes],
    counts: Mapping[str, tuple[SignalKeys, int]] | None = None,
) -> None:
    """Append each value to its key atomically, or raise; the heart of every send.

    Keys are appended to in one batch per round trip. ``QueueFull`` and ``Contention`` name the
    keys that were not written in ``args[1]``; the others were. ``counts`` maps a queue key
    to its signal's keys and how many frames its value holds: the ``sent`` counter is bumped
    for the keys written (on an appending store in the append's own round trip, taken back
    for keys that then could not be written; otherwise once the writes are done).
    """
    counts = counts or {}
    if store.supports_append:
        bumps = {keys.counter("sent"): n for keys, n in counts.values()}
        try:
            _append(conn, store, pending, bumps)
        except (QueueFull, Contention) as error:
            unwritten = [counts[k] for k in error.args[1] if k in counts]
            if unwritten:
                conn.incr_many({keys.counter("sent"): -n for keys, n in unwritten})
            raise
        return
    written: list[str] = []
    try:
        _gets_cas(conn, store, pending, written)
    finally:
        done = {counts[k][0].counter("sent"): counts[k][1] for k in written if k in counts}
        if done:
            conn.incr_many(done)


def _append(
    conn: Connection,
    store: Store,
    pending: dict[str, bytes],
    bumps: dict[str, int],
) -> None:
    for attempt in range(SEND_ATTEMPTS):
        stored = conn.append_many(pending, bumps if attempt == 0 else None)
        pending = {k: v for k, v in pending.items() if not stored[k]}
        if not pending:
            return
        stored = conn.add_many(pending)
        pending = {k: v for k, v in pending.items() if not stored[k]}
        if not pending:
            return
        # The key exists, yet append refused: too large, or it vanished and came back.
        current = conn.gets_many(list(pending))
        _check_room(store, pending, current)
        time.sleep(random.uniform(0, 0.001 * 2**attempt))
    raise Contention(
        f"gave up appending to {', '.join(sorted(pending))} after {SEND_ATTEMPTS} attempts",
        sorted(pending),
    )


def _gets_cas(
    conn: Connection,
    store: Store,
    pending: dict[str, bytes],
    written: list[str],
) -> None:
    for attempt in range(SEND_ATTEMPTS):
        current = conn.gets_many(list(pending))
        _check_room(store, pending, current)
        grown = {k: (current[k][0] + v, current[k][1]) for k, v in pending.items() if k in current}
        stored = conn.cas_many(grown) if grown else {}
        missing = {k: v for k, v in pending.items() if k not in current}
        if missing:
            stored.update(conn.add_many(missing))
        written.extend(k for k in pending if stored[k])
        pending = {k: v for k, v in pending.items() if not stored[k]}
        if not pending:
            return
        time.sleep(random.uniform(0, 0.001 * 2**attempt))
    raise Contention(
        f"gave up appending to {', '.join(sorted(pending))} after {SEND_ATTEMPTS} attempts",
        sorted(pending),
    )


def _has_receivers(name: str) -> bool:
    from .registry import registry

    return bool(registry.receivers(name))


def _check_room(
    store: Store, pending: Mapping[str, bytes], current: Mapping[str, tuple[bytes, object]]
) -> None:
    full = [
        k
        for k, v in pending.items()
        if k in current and len(current[k][0]) + len(v) > store.max_value_size
    ]
    if full:
        # Name every key still unwritten, not only the full ones: none of them was stored.
        raise QueueFull(
            f"{', '.join(full)} already hold(s) too many pending bytes to take "
            f"{max(len(pending[k]) for k in full)} more (limit {store.max_value_size}); "
            "deliver first",
            sorted(pending),
        )


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
        send_multi([(self.name, data)])


def send(name: str, data: Any = None) -> None:
    """``Signal(name).send(data)``."""
    send_multi([(name, data)])


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
    eager: list[tuple[str, Any]] = []
    keys_of: dict[str, SignalKeys] = {}
    for item in items:
        name, data = (item, None) if isinstance(item, str) else item
        keys = signal_keys(check_name(name), settings.namespace)
        frame = encode_payload(data, keys, settings)
        if settings.eager and _has_receivers(name):
            eager.append((name, data))
        else:
            keys_of[keys.queue] = keys
            framed.setdefault(keys.queue, []).append(frame)
    if framed:
        batch = {key: b"".join(parts) for key, parts in framed.items()}
        store = settings.store
        for key, value in batch.items():
            if len(value) > store.max_value_size:
                raise QueueFull(f"the payloads for {key} together exceed the item limit", [key])
        counts = (
            {key: (keys_of[key], len(parts)) for key, parts in framed.items()}
            if settings.count_sends
            else None
        )
        with store.connection() as conn:
            append_frames(conn, store, batch, counts)
    if eager:
        from .delivery import send_now

        for name, data in eager:
            send_now(name, data)
