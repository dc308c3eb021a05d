"""The sending side: :class:`Signal`, :func:`send`, :func:`asend` and :func:`send_multi`.

A send frames the payload (:mod:`.codec`) and appends it to the signal's queue key, or to its
thread's shard of a sharded signal (:mod:`.queue`). It either stores the payload or raises; it
never reports success for a payload that is not in the cache.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime, timedelta
from typing import Any

from . import tracing
from .codec import encode_payload
from .config import Settings, get_settings
from .coroutines import in_worker
from .eager import has_receivers, send_now
from .exceptions import Contention, QueueFull
from .frames import MAX_SPREAD
from .keys import SignalKeys, check_name, signal_keys
from .queue.append import SEND_ATTEMPTS, append_frames, append_one
from .queue.cap import check as check_cap
from .queue.routing import route
from .registration import registry
from .stores import Connection
from .timing import meta_for, not_before


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
    ) -> None:
        """Store ``data`` for later delivery, or raise.

        ``delay`` (seconds or a timedelta) or ``eta`` (an aware datetime) holds the payload
        back from every delivery until then (see :mod:`gaesignals.timing` for the longest).
        Raises :class:`InvalidDelay` or :class:`PayloadTooLarge` (nothing written),
        :class:`QueueFull` (the signal holds its ``max_pending``, its declared shards are
        full, or the cache is out of memory),
        :class:`StoreUnavailable` (the cache is down).
        """
        send(self.name, data, delay=delay, eta=eta)

    async def asend(
        self,
        data: Any = None,
        *,
        delay: float | timedelta | None = None,
        eta: datetime | None = None,
    ) -> None:
        """:meth:`send`, awaitable: stored from a worker thread, never blocking the running
        loop; the same arguments and exceptions."""
        await in_worker(send, self.name, data, delay=delay, eta=eta)


def send(
    name: str,
    data: Any = None,
    *,
    delay: float | timedelta | None = None,
    eta: datetime | None = None,
) -> None:
    """``Signal(name).send(data)``: ``send_multi([(name, data)])`` in fewer steps."""
    settings = get_settings()
    keys = signal_keys(check_name(name), settings.namespace)
    due = not_before(delay, eta) if delay is not None or eta is not None else 0
    if tracing.active():
        with tracing.publishing(name) as publish:
            _send(name, data, keys, settings, meta_for(due) + publish.meta(name), publish)
        return
    _send(name, data, keys, settings, meta_for(due), None)


def _send(
    name: str,
    data: Any,
    keys: SignalKeys,
    settings: Settings,
    meta: bytes,
    publish: tracing.Publish | None,
) -> None:
    frame = encode_payload(name, data, keys, settings, meta)
    if settings.eager and has_receivers(name):
        send_now(name, data)
        return
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


async def asend(
    name: str,
    data: Any = None,
    *,
    delay: float | timedelta | None = None,
    eta: datetime | None = None,
) -> None:
    """:func:`send`, awaitable: stored from a worker thread, never blocking the running loop;
    the same arguments and exceptions. In eager mode, ``async def`` receivers are awaited on
    the running loop."""
    await in_worker(send, name, data, delay=delay, eta=eta)


def send_multi(
    signals: Mapping[str, Any] | Iterable[str | tuple[str, Any]],
    *,
    delay: float | timedelta | None = None,
    eta: datetime | None = None,
) -> None:
    """Send many signals at once, in the fewest store calls.

    Takes ``{name: data}``, or an iterable of names (data ``None``) and ``(name, data)`` pairs;
    several payloads for one name keep their order; ``delay`` or ``eta`` holds every one of
    them back (see :meth:`Signal.send`). Every payload is encoded and checked before anything
    is written. If a signal cannot take its payloads, the exception
    (:class:`QueueFull`, :class:`Contention`) lists the keys left unwritten in ``keys``;
    the other signals' payloads were stored.
    """
    settings = get_settings()
    meta = meta_for(not_before(delay, eta))
    if tracing.active():
        with tracing.publishing() as publish:
            _send_multi(signals, settings, meta, publish)
        return
    _send_multi(signals, settings, meta, None)


async def asend_multi(
    signals: Mapping[str, Any] | Iterable[str | tuple[str, Any]],
    *,
    delay: float | timedelta | None = None,
    eta: datetime | None = None,
) -> None:
    """:func:`send_multi`, awaitable: stored from a worker thread, never blocking the running
    loop; the same arguments and exceptions."""
    await in_worker(send_multi, signals, delay=delay, eta=eta)


def _send_multi(
    signals: Mapping[str, Any] | Iterable[str | tuple[str, Any]],
    settings: Settings,
    meta: bytes,
    publish: tracing.Publish | None,
) -> None:
    items: Iterable[str | tuple[str, Any]] = (
        signals.items() if isinstance(signals, Mapping) else signals
    )
    framed: dict[str, list[bytes]] = {}
    routes: dict[str, tuple[str, ...]] = {}
    eager: list[tuple[str, Any]] = []
    sent_of: dict[str, str] = {}
    names: dict[str, str] = {}
    capped: dict[str, SignalKeys] = {}
    for item in items:
        name, data = (item, None) if isinstance(item, str) else item
        keys = signal_keys(check_name(name), settings.namespace)
        if publish is None:
            frame = encode_payload(name, data, keys, settings, meta)
        else:
            frame = encode_payload(name, data, keys, settings, meta + publish.meta(name))
            publish.framed(frame)
        if settings.eager and has_receivers(name):
            eager.append((name, data))
            continue
        key, queues = route(name, keys, settings)
        routes[key] = queues or (key,)
        if registry.max_pending(name) is not None:
            capped[name] = keys
        sent_of[key] = keys.counter("sent")
        names[key] = name
        framed.setdefault(key, []).append(frame)
    if framed:
        batch = {key: b"".join(parts) for key, parts in framed.items()}
        store = settings.store
        for key, value in batch.items():
            if len(value) > store.max_value_size:
                full = QueueFull(
                    f"the payloads for signal {names[key]!r} together are {len(value)} bytes, "
                    f"more than the store's limit of {store.max_value_size} for one key",
                    [key],
                )
                full.signals = (names[key],)
                raise full
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
