"""The sending side: :class:`Signal`, :func:`send`, :func:`asend` and :func:`send_multi`.

A send frames the payload (:mod:`.codec`) and appends it to the signal's queue key, or to its
thread's shard of a sharded signal (:mod:`.queue`). It either stores the payload or raises; it
never reports success for a payload that is not in the cache. It returns a :class:`Receipt`
naming the payload, to cancel it while it is pending (:mod:`.cancelling`).

A payload of a signal declared ``coalesce=True``, or sent with ``coalesce=KEY``, carries its
coalesce key and its send time in its frame (with the signal's ``debounce``): the take that
delivers keeps only the newest of each key (see :mod:`gaesignals.queue`). That costs no
round trip: the key rides in the frame.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from . import frames, tracing
from .cancelling import CancelResult, cancel
from .codec import encode_payload
from .config import Settings, get_settings
from .coroutines import in_worker
from .eager import has_receivers, send_now
from .exceptions import Contention, InvalidCoalesceKey, QueueFull
from .frames import MAX_SPREAD
from .keys import SignalKeys, check_name, signal_keys
from .queue.append import SEND_ATTEMPTS, append_frames, append_one
from .queue.cancel import payload_id, placed_of
from .queue.cap import check as check_cap
from .queue.routing import route
from .registration import registry
from .stores import Connection
from .timing import meta_for, not_before, now_ms

#: The longest coalesce key, in bytes of UTF-8 (one frame metadata entry).
MAX_COALESCE_KEY = 255


@dataclass(frozen=True, slots=True)
class Receipt:
    """What a send stored: its signal and the payload's id, which :meth:`cancel` (or
    :func:`gaesignals.cancel`, given both) takes to cancel it while it is pending.

    The id is opaque text (keep it in a database row, a response); it names the payload and
    the shard it was sent to, so cancelling reads nothing first. ``ran``: an eager send ran
    the handlers at once, so there is nothing pending to cancel.
    """

    signal: str
    id: str
    ran: bool = False

    def cancel(self) -> CancelResult:
        """Cancel this payload: one round trip (see :func:`gaesignals.cancel`)."""
        if self.ran:
            return CancelResult.DELIVERED
        return cancel(self.signal, self.id)


def check_coalesce_key(key: object) -> bytes:
    """``key`` as the bytes a frame carries; :class:`InvalidCoalesceKey` when it is not a
    ``str`` of at most :data:`MAX_COALESCE_KEY` bytes of UTF-8."""
    if not isinstance(key, str):
        raise InvalidCoalesceKey(f"a coalesce key must be a str, not {type(key).__name__}", key)
    raw = key.encode("utf-8", "surrogatepass")
    if len(raw) > MAX_COALESCE_KEY:
        raise InvalidCoalesceKey(
            f"a coalesce key must be at most {MAX_COALESCE_KEY} bytes of UTF-8, got {len(raw)}",
            key,
        )
    return raw


def coalescing(name: str, coalesce: str | None) -> bytes:
    """The frame metadata that makes a payload of ``name`` coalesce: with ``coalesce`` given,
    under that key; else under the signal's one key if it is declared ``coalesce=True``; b""
    when it does not coalesce. The signal's debounce rides along, so deliverers need not
    know the declaration."""
    spec = registry.spec(name)
    if coalesce is None:
        if not spec.coalesce:
            return b""
        key = b""
    else:
        key = check_coalesce_key(coalesce)
    return frames.coalesce_meta(
        key,
        sent_ms=now_ms(),
        debounce_ms=_ms(spec.debounce),
        debounce_max_ms=_ms(spec.debounce_max),
    )


def _ms(seconds: float | None) -> int:
    return 0 if seconds is None else math.ceil(seconds * 1000)


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

    def send(
        self,
        data: Any = None,
        *,
        delay: float | timedelta | None = None,
        eta: datetime | None = None,
        coalesce: str | None = None,
    ) -> Receipt:
        """Store ``data`` for later delivery, or raise; returns its :class:`Receipt`.

        ``delay`` (seconds or a timedelta) or ``eta`` (an aware datetime) holds the payload
        back from every delivery until then (see :mod:`gaesignals.timing` for the longest).
        ``coalesce`` (a str of at most 255 bytes of UTF-8): of the signal's pending payloads
        sent with this key, a delivery runs only the newest (see :func:`~gaesignals.declare`
        for a signal whose every payload coalesces).
        Raises :class:`InvalidDelay`, :class:`InvalidCoalesceKey` or :class:`PayloadTooLarge`
        (nothing written), :class:`QueueFull` (the signal holds its ``max_pending``, its
        declared shards are full, or the cache is out of memory),
        :class:`StoreUnavailable` (the cache is down).
        """
        return send(self.name, data, delay=delay, eta=eta, coalesce=coalesce)

    async def asend(
        self,
        data: Any = None,
        *,
        delay: float | timedelta | None = None,
        eta: datetime | None = None,
        coalesce: str | None = None,
    ) -> Receipt:
        """:meth:`send`, awaitable: stored from a worker thread, never blocking the running
        loop; the same arguments, result and exceptions."""
        return await in_worker(send, self.name, data, delay=delay, eta=eta, coalesce=coalesce)


def send(
    name: str,
    data: Any = None,
    *,
    delay: float | timedelta | None = None,
    eta: datetime | None = None,
    coalesce: str | None = None,
) -> Receipt:
    """``Signal(name).send(data)``: ``send_multi([(name, data)])`` in fewer steps."""
    settings = get_settings()
    keys = signal_keys(check_name(name), settings.namespace)
    due = not_before(delay, eta) if delay is not None or eta is not None else 0
    meta = meta_for(due) + coalescing(name, coalesce)
    if tracing.active():
        with tracing.publishing(name) as publish:
            return _send(name, data, keys, settings, meta + publish.meta(name), publish)
    return _send(name, data, keys, settings, meta, None)


def _send(
    name: str,
    data: Any,
    keys: SignalKeys,
    settings: Settings,
    meta: bytes,
    publish: tracing.Publish | None,
) -> Receipt:
    frame = encode_payload(name, data, keys, settings, meta)
    if settings.eager and has_receivers(name):
        send_now(name, data)
        return Receipt(name, payload_id(placed_of(frame, keys.queue, ())), ran=True)
    if publish is not None:
        publish.framed(frame)
    key, queues = route(name, keys, settings)
    try:
        cap = registry.max_pending(name)
        if cap is not None:
            with settings.store.connection() as conn:
                check_cap(conn, settings, keys, cap, 1, queues or (key,))
        append_one(
            settings, key, frame, queues, keys.counter("sent") if settings.counters else None
        )
    except (QueueFull, Contention) as error:
        _name_signals(error, dict.fromkeys(queues or (key,), name), settings)
        raise
    if publish is not None:
        publish.stored(name)
    return Receipt(name, payload_id(placed_of(frame, key, queues)))


async def asend(
    name: str,
    data: Any = None,
    *,
    delay: float | timedelta | None = None,
    eta: datetime | None = None,
    coalesce: str | None = None,
) -> Receipt:
    """:func:`send`, awaitable: stored from a worker thread, never blocking the running loop;
    the same arguments, result and exceptions. In eager mode, ``async def`` receivers are
    awaited on the running loop."""
    return await in_worker(send, name, data, delay=delay, eta=eta, coalesce=coalesce)


def send_multi(
    signals: Mapping[str, Any] | Iterable[str | tuple[str, Any]],
    *,
    delay: float | timedelta | None = None,
    eta: datetime | None = None,
    coalesce: str | None = None,
) -> list[Receipt]:
    """Send many signals at once, in the fewest store calls; returns a :class:`Receipt` per
    payload, in the order given.

    Takes ``{name: data}``, or an iterable of names (data ``None``) and ``(name, data)`` pairs;
    several payloads for one name keep their order; ``delay`` or ``eta`` holds every one of
    them back, and ``coalesce`` gives every one that key (see :meth:`Signal.send`). Every
    payload is encoded and checked before anything is written. If a signal cannot take its
    payloads, the exception (:class:`QueueFull`, :class:`Contention`) lists the keys left
    unwritten in ``keys``; the other signals' payloads were stored.
    """
    settings = get_settings()
    meta = meta_for(not_before(delay, eta))
    if coalesce is not None:
        check_coalesce_key(coalesce)  # refused before any payload is framed
    if tracing.active():
        with tracing.publishing() as publish:
            return _send_multi(signals, settings, meta, coalesce, publish)
    return _send_multi(signals, settings, meta, coalesce, None)


async def asend_multi(
    signals: Mapping[str, Any] | Iterable[str | tuple[str, Any]],
    *,
    delay: float | timedelta | None = None,
    eta: datetime | None = None,
    coalesce: str | None = None,
) -> list[Receipt]:
    """:func:`send_multi`, awaitable: stored from a worker thread, never blocking the running
    loop; the same arguments, result and exceptions."""
    return await in_worker(send_multi, signals, delay=delay, eta=eta, coalesce=coalesce)


def _send_multi(
    signals: Mapping[str, Any] | Iterable[str | tuple[str, Any]],
    settings: Settings,
    meta: bytes,
    coalesce: str | None,
    publish: tracing.Publish | None,
) -> list[Receipt]:
    items: Iterable[str | tuple[str, Any]] = (
        signals.items() if isinstance(signals, Mapping) else signals
    )
    framed: dict[str, list[bytes]] = {}
    routes: dict[str, tuple[str, ...]] = {}
    eager: list[tuple[str, Any]] = []
    sent_of: dict[str, str] = {}
    names: dict[str, str] = {}
    receipts: list[Receipt] = []
    capped: dict[str, SignalKeys] = {}
    for item in items:
        name, data = (item, None) if isinstance(item, str) else item
        keys = signal_keys(check_name(name), settings.namespace)
        own = meta + coalescing(name, coalesce)
        if publish is None:
            frame = encode_payload(name, data, keys, settings, own)
        else:
            frame = encode_payload(name, data, keys, settings, own + publish.meta(name))
            publish.framed(frame)
        if settings.eager and has_receivers(name):
            eager.append((name, data))
            receipts.append(Receipt(name, payload_id(placed_of(frame, keys.queue, ())), True))
            continue
        key, queues = route(name, keys, settings)
        receipts.append(Receipt(name, payload_id(placed_of(frame, key, queues))))
        routes[key] = queues or (key,)
        if registry.max_pending(name) is not None:
            capped[name] = keys
        sent_of[key] = keys.counter("sent")
        names[key] = name
        framed.setdefault(key, []).append(frame)
    if framed:
        batch = {key: b"".join(parts) for key, parts in framed.items()}
        store = settings.store
        _check_sizes(batch, names, store.max_value_size)
        counts = (
            {key: (sent_of[key], len(parts)) for key, parts in framed.items()}
            if settings.counters
            else None
        )
        try:
            with store.connection() as conn:
                _check_caps(conn, settings, capped, framed, names)
                append_frames(conn, store, batch, routes, counts, settings=settings)
        except (QueueFull, Contention) as error:
            signal_of = {queue: names[key] for key, queues in routes.items() for queue in queues}
            _name_signals(error, signal_of, settings)
            raise
        if publish is not None:
            for key, parts in framed.items():
                publish.stored(names[key], len(parts))
    if eager:
        for name, data in eager:
            send_now(name, data)
    return receipts


def _check_sizes(batch: Mapping[str, bytes], names: Mapping[str, str], limit: int) -> None:
    """Refuse, before anything is written, a batch whose payloads for one key together pass
    the store's ``limit`` for one value (:class:`QueueFull` naming the key and its signal)."""
    for key, value in batch.items():
        if len(value) > limit:
            full = QueueFull(
                f"the payloads for signal {names[key]!r} together are {len(value)} bytes, "
                f"more than the store's limit of {limit} for one key",
                [key],
            )
            full.signals = (names[key],)
            raise full


def _check_caps(
    conn: Connection,
    settings: Settings,
    capped: Mapping[str, SignalKeys],
    framed: Mapping[str, list[bytes]],
    names: Mapping[str, str],
) -> None:
    """Refuse the whole batch (nothing written yet) if a signal of it declared with
    ``max_pending`` would pass its cap."""
    for name, keys in capped.items():
        adding = sum(len(parts) for key, parts in framed.items() if names[key] == name)
        cap = registry.max_pending(name)
        if cap is not None:
            check_cap(conn, settings, keys, cap, adding, tuple(framed))


def _name_signals(
    error: QueueFull | Contention, signal_of: Mapping[str, str], settings: Settings
) -> None:
    """Say which signals a :class:`QueueFull` or :class:`Contention` of the queue layer is
    about: it knows only keys (``signal_of`` maps each to its signal), and a user knows
    signals. The error stays the same object; its message and ``signals`` are rewritten."""
    error.signals = tuple(dict.fromkeys(signal_of.get(key, key) for key in error.keys))
    named = ", ".join(map(repr, error.signals)) or "the signal"
    if isinstance(error, QueueFull) and error.cap is not None:
        error.args = (
            f"signal {named} holds its max_pending of {error.cap} payloads: deliver it, or "
            "send less, and try again",
        )
    elif isinstance(error, QueueFull):
        error.args = (
            f"signal {named} has no room to take more: its shards are full (a queue key "
            f"holds at most {settings.store.max_value_size} bytes; a signal declared with "
            f"shards keeps those, any other spreads over up to {MAX_SPREAD}), or the cache "
            "is out of memory: deliver it, or send less, and try again",
        )
    else:
        error.args = (
            f"gave up sending to signal {named} after {SEND_ATTEMPTS} attempts: its queue "
            "kept changing under every one; try again",
        )
