"""Seeing and short-circuiting sends: :func:`captured_signals` and :func:`eager_signals`.

Both put a tapped store in front of the configured one for the block's length, so they see
sends from any code path and any thread. The tap reads the payloads a send writes to a signal's
queue; a capture records them, an eager block runs their handlers instead of storing them.
A capture also reads the cancellations written beside them, so it tells what a delivery would
run (:meth:`CapturedSignals.pending`) without a cache.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any, NamedTuple, TypeVar

from .. import config, frames
from ..codec import decode
from ..config import Settings, get_settings
from ..keys import base_queue_key, signal_keys
from ..mapping import MappingArg, SignalMapping, call_form
from ..stores import Cached, Connection, NativeQueue, Store
from .doubles import Forwarding

logger = logging.getLogger("gaesignals")

_V = TypeVar("_V")


class Sent(NamedTuple):
    """One payload a send stored (or an eager send delivered): the signal's name and its data.

    A name that cannot appear in a cache key as it is (spaces, non-ASCII, very long) is stored
    under its hash and shows here as that key; :meth:`CapturedSignals.data` still finds it.
    """

    name: str
    data: Any


class _Trace(NamedTuple):
    """Where a captured payload went and what a delivery would make of it: its signal's
    queue key, its frame id, and its coalesce key (None: not coalesced)."""

    key: str
    ident: bytes
    coalesce: bytes | None


class CapturedSignals(list[Sent]):
    """The payloads sent while a :func:`captured_signals` block ran, in send order.

    It is a list of :class:`Sent` ``(name, data)`` pairs, so ``assert sent == [("a", 1)]``
    works; :meth:`data` and :meth:`names` answer the usual questions more briefly, and
    :meth:`pending`, :meth:`coalesced` and :meth:`cancelled` tell what a delivery would make
    of them (coalescing and cancellations applied), with no cache needed.
    """

    def __init__(self, namespace: str) -> None:
        super().__init__()
        self._namespace = namespace
        self._traces: list[_Trace] = []
        self._cancels: set[tuple[str, bytes]] = set()

    def _record(
        self, key: str, name: str, data: Any, ident: bytes = b"", coalesce: bytes | None = None
    ) -> None:
        self._traces.append(_Trace(key, ident, coalesce))
        self.append(Sent(name, data))

    def _cancel(self, key: str, ident: bytes) -> None:
        self._cancels.add((key, ident))

    def data(self, name: str) -> list[Any]:
        """The payloads sent to ``name``, oldest first (hashed names included)."""
        return [self[i].data for i in self._indexes(name)]

    def _indexes(self, name: str) -> list[int]:
        key = signal_keys(name, self._namespace).queue
        return [i for i, trace in enumerate(self._traces) if trace.key == key]

    def _fates(self, name: str) -> tuple[list[int], list[int], list[int]]:
        """The indexes of ``name``'s payloads a delivery would run, those it would count as
        coalesced, and those cancelled: a cancelled payload leaves first, then of each
        coalesce key only the newest left stays."""
        live: list[int] = []
        cancelled: list[int] = []
        for i in self._indexes(name):
            trace = self._traces[i]
            (cancelled if (trace.key, trace.ident) in self._cancels else live).append(i)
        newest = {self._traces[i].coalesce: i for i in live}
        kept = [
            i
            for i in live
            if self._traces[i].coalesce is None or newest[self._traces[i].coalesce] == i
        ]
        coalesced = [i for i in live if i not in set(kept)]
        return kept, coalesced, cancelled

    def pending(self, name: str) -> list[Any]:
        """The payloads of ``name`` a delivery would hand its handlers, oldest first: none
        cancelled, and of the payloads sent with one coalesce key only the newest. (Times are
        not applied: a payload held back by a delay or a debounce is listed.)"""
        return [self[i].data for i in self._fates(name)[0]]

    def coalesced(self, name: str) -> list[Any]:
        """The payloads of ``name`` a newer one with their coalesce key supersedes."""
        return [self[i].data for i in self._fates(name)[1]]

    def cancelled(self, name: str) -> list[Any]:
        """The payloads of ``name`` cancelled after they were sent (in this block)."""
        return [self[i].data for i in self._fates(name)[2]]

    def names(self) -> list[str]:
        """The names signalled, each once, in order of first send."""
        return list(dict.fromkeys(sent.name for sent in self))

    def clear(self) -> None:
        super().clear()
        self._traces.clear()
        self._cancels.clear()


class _Tap:
    """What an intercepting store does with the payloads written to signal queues.

    ``consumes(key)`` says whether a queue's new payloads are kept from the real store (the
    send reports them stored all the same); ``sent(key, chunk)`` is called once per stored or
    consumed chunk of frames, after the write succeeded, so a retried send is seen once.
    Recording taps hear of a chunk before delivering ones (``delivers``), so a capture lists a
    payload before whatever its eager handler sent in turn.
    """

    delivers = False

    def consumes(self, key: str) -> bool:
        raise NotImplementedError

    def sent(self, key: str, chunk: bytes) -> None:
        raise NotImplementedError


def _is_queue_key(key: str) -> bool:
    return base_queue_key(key) is not None  # any shard's


class _TappedConnection:
    """Passes every call through, except new payloads on queue keys, which go to the taps.

    Sends on stores with append use ``append_many`` then ``add_many``; on stores without it,
    ``gets_many`` then ``cas_many`` with the old value plus the new frames. A CAS that extends
    exactly what this connection read is a send; deliveries only ever shrink a queue.
    """

    def __init__(self, inner: Connection, taps: Sequence[_Tap]) -> None:
        self._inner = inner
        self._taps = sorted(taps, key=lambda tap: tap.delivers)
        self._read: dict[str, bytes] = {}
        self._consumed = False

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)  # calls added to the protocol later pass through

    def _remember(self, keys: Sequence[str], found: dict[str, Cached]) -> dict[str, Cached]:
        for key in keys:
            if key in found:
                self._read[key] = found[key].value
            else:
                self._read.pop(key, None)
        return found

    def gets_many(self, keys: Sequence[str]) -> dict[str, Cached]:
        return self._remember(keys, self._inner.gets_many(keys))

    def scan_many(self, keys: Sequence[str]) -> dict[str, Cached]:
        return self._remember(keys, self._inner.scan_many(keys))

    def _write(
        self,
        items: Mapping[str, _V],
        chunk_of: Callable[[str, _V], bytes | None],
        write: Callable[[dict[str, _V]], dict[str, bool]],
    ) -> dict[str, bool]:
        chunks: dict[str, bytes] = {}
        passed: dict[str, _V] = {}
        result: dict[str, bool] = {}
        for key, item in items.items():
            chunk = chunk_of(key, item) if _is_queue_key(key) else None
            if chunk is not None:
                chunks[key] = chunk
                if any(tap.consumes(key) for tap in self._taps):
                    result[key] = True
                    self._consumed = True
                    continue
            passed[key] = item
        if passed:
            result.update(write(passed))
        for key, chunk in chunks.items():
            if result[key]:
                for tap in self._taps:
                    tap.sent(key, chunk)
        return {key: result[key] for key in items}

    def cas_many(
        self,
        items: Mapping[str, Cached],
        expire: int = 0,
        counters: Mapping[str, int] | None = None,
    ) -> dict[str, bool]:
        def chunk_of(key: str, item: Cached) -> bytes | None:
            old = self._read.get(key)
            value, _ = item  # a caller may pass a plain (value, token) pair
            if old is not None and len(value) > len(old) and value.startswith(old):
                return value[len(old) :]
            return None

        return self._write(
            items, chunk_of, lambda passed: self._inner.cas_many(passed, expire, counters)
        )

    def add_many(self, items: Mapping[str, bytes], expire: int = 0) -> dict[str, bool]:
        return self._write(
            items, lambda key, value: value, lambda passed: self._inner.add_many(passed, expire)
        )

    def set_many(self, items: Mapping[str, bytes], expire: int = 0) -> dict[str, bool]:
        return self._inner.set_many(items, expire)  # sends never set; delivery's cursor does

    def append_many(
        self, items: Mapping[str, bytes], counters: Mapping[str, int] | None = None
    ) -> dict[str, bool]:
        def write(passed: dict[str, bytes]) -> dict[str, bool]:
            # Payloads a tap consumed never reach the store, so neither do that call's
            # counters (a send counted but never stored would read as lost).
            whole = len(passed) == len(items)
            return self._inner.append_many(passed, counters if whole else None)

        return self._write(items, lambda key, value: value, write)

    def incr_many(self, deltas: Mapping[str, int]) -> None:
        if not self._consumed:  # a send's counts, after a tap kept its payloads from the store
            self._inner.incr_many(deltas)

    def delete_many(self, keys: Sequence[str]) -> None:
        self._inner.delete_many(keys)


class _TappedStore(Forwarding):
    """A store that shows its taps the payloads sent through it; everything else passes.

    Nested captures and eager blocks share one such store, each adding its tap, so every tap
    sees every send whatever the nesting order. It declares no fast path, so every send goes
    through the tapped connection; the native queue operations (a take, an acknowledgement)
    send nothing, so the inner store's pass through.
    """

    fast_send = None

    def __init__(self, inner: Store) -> None:
        super().__init__(inner)
        self.taps: list[_Tap] = []

    @property
    def native(self) -> NativeQueue | None:
        return self.inner.native

    def __repr__(self) -> str:
        return f"TappedStore({self.inner!r})"

    @contextmanager
    def connection(self) -> Iterator[Connection]:
        with self.inner.connection() as conn:
            yield _TappedConnection(conn, list(self.taps))


def _payloads(key: str, chunk: bytes, settings: Settings) -> list[Any]:
    parsed, _ = frames.parse(chunk, key.encode(), settings.secret_keys)
    return [decode(frame, settings) for frame in parsed]


def _coalesce_key(frame: frames.Frame) -> bytes | None:
    found = frames.coalesce_of(frame)
    return None if found is None else found.key


def _name_of(key: str) -> str:
    """The signal name in a queue key, or the key itself when the name was hashed into it."""
    _, _, kind, rest = key.split(":", 3)
    return rest[1:-1] if kind == "q" else key


@contextmanager
def _tapped(tap: _Tap) -> Iterator[None]:
    """Show ``tap`` every payload sent through the configured store, for the block's length."""
    current = get_settings()
    if isinstance(current.store, _TappedStore):
        current.store.taps.append(tap)
        try:
            yield
        finally:
            current.store.taps.remove(tap)
        return
    store = _TappedStore(current.store)
    store.taps.append(tap)
    tapped = dataclasses.replace(current, store=store)
    with config._lock:
        config._settings = tapped
    try:
        yield
    finally:
        with config._lock:
            if config._settings is tapped:  # unless the block configured something else
                config._settings = current


class _Capture(_Tap):
    def __init__(self, settings: Settings, sent: CapturedSignals, keep: bool) -> None:
        self.settings = settings
        self.captured = sent
        self.keep = keep
        self.lock = threading.Lock()

    def consumes(self, key: str) -> bool:
        return not self.keep

    def sent(self, key: str, chunk: bytes) -> None:
        base = base_queue_key(key) or key  # a shard's payloads are the signal's
        name = _name_of(base)
        settings = self.settings
        read = frames.parse_queue(chunk, base.encode(), settings.secret_keys)
        with self.lock:
            for frame in read.found:
                data = decode(frame, settings)
                self.captured._record(base, name, data, frame.ident, _coalesce_key(frame))
            for mark in read.cancels:
                self.captured._cancel(base, mark.body)


@contextmanager
def captured_signals(*, keep: bool = True) -> Iterator[CapturedSignals]:
    """Record every payload sent inside the block, from any thread, in send order::

        with captured_signals() as sent:
            app.post("/send", {"text": "hi"})
        assert sent.data("guestbook") == ["hi"]

    The payloads still reach the store for a later :func:`~gaesignals.deliver`; with
    ``keep=False`` they are recorded and dropped, so nothing is left pending.
    """
    settings = get_settings()
    sent = CapturedSignals(settings.namespace)
    with _tapped(_Capture(settings, sent, keep)):
        yield sent


class _Eager(_Tap):
    delivers = True

    def __init__(self, settings: Settings, mapping: SignalMapping, raise_errors: bool) -> None:
        self.settings = settings
        self.mapping = mapping
        self.raise_errors = raise_errors
        self.names = {signal_keys(name, settings.namespace).queue: name for name in mapping}
        self.delivered = CapturedSignals(settings.namespace)
        self.lock = threading.Lock()

    def consumes(self, key: str) -> bool:
        return base_queue_key(key) in self.names

    def sent(self, key: str, chunk: bytes) -> None:
        base = base_queue_key(key) or key
        name = self.names.get(base)
        if name is None:
            return
        for data in _payloads(base, chunk, self.settings):
            for handler in self.mapping.handlers(name):
                try:
                    call_form(handler, name)(data)  # a coroutine handler runs to its end
                except Exception:
                    if self.raise_errors:
                        raise
                    logger.exception("handler %r for signal %r failed", handler, name)
            with self.lock:
                self.delivered._record(key, name, data)


@contextmanager
def eager_signals(
    mapping: MappingArg,
    *,
    raise_errors: bool = True,
) -> Iterator[CapturedSignals]:
    """Inside the block, a send to a signal in ``mapping`` runs its handlers at once instead of
    storing the payload: for tests that check what a handler does, not when it runs.

    Signals outside ``mapping`` are stored as usual. A handler's exception propagates out of
    ``send`` unless ``raise_errors=False`` (then it is logged, as :func:`~gaesignals.deliver`
    does). Yields the payloads delivered this way.
    """
    tap = _Eager(get_settings(), SignalMapping.coerce(mapping), raise_errors)
    with _tapped(tap):
        yield tap.delivered
