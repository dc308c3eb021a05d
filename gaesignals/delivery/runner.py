"""One signal's handlers made ready to run on its payloads; both delivery modes use it.

Decoding and handler failures are logged (logger ``gaesignals``), never raised: a handler
that raises must not break the delivery of the payloads and signals after it. The callers
report what became of each payload (:mod:`.outcomes`).
"""

from __future__ import annotations

import logging
import pickle
import time
import weakref
from collections.abc import Iterable, Sequence
from typing import Any, NamedTuple, cast

from .. import frames, tracing
from ..codec import decode
from ..config import Settings
from ..exceptions import Reject, Retry
from ..keys import signal_keys
from ..mapping import Handler, call_form
from ..queue import held
from ..registration import SignalSpec
from ..stores import Store

logger = logging.getLogger("gaesignals")

#: Seconds between two logs of the frames one queue key holds for another deliverer.
HELD_LOG_INTERVAL = 60.0
#: When (monotonic seconds) each queue key of a store may next be logged for what it holds:
#: kept per store, not per runner, since a mapping made anew for each delivery makes new runners.
_held_told: weakref.WeakKeyDictionary[Store, dict[str, float]] = weakref.WeakKeyDictionary()
#: What :meth:`Runner._decode` returns for a payload it could not decode.
_UNDECODABLE = object()
#: A key's payloads as weak delivery holds them: frames, or bare pickled bodies.
Found = list[frames.Frame] | list[bytes]


def log_bad(name: str, key: str, bad: Iterable[frames.BadRegion]) -> None:
    for region in bad:
        logger.error(
            "dropped %d payload(s) of signal %r as unreadable (%s): %d byte(s) of key %s",
            region.payloads,
            name,
            region.reason,
            region.end - region.start,
            key,
        )


class Read(NamedTuple):
    """A queue value as delivery reads it: the frames to deliver, the unreadable regions (held
    frames past their bound among them), the widest spread marker's width, and the frames
    held for a deliverer that can read them (see :mod:`..queue.held`), which stay queued."""

    found: list[frames.Frame]
    bad: list[frames.BadRegion]
    marker_width: int
    held: list[frames.Frame]
    #: The verified cancellations it holds (see :mod:`..queue.cancel`).
    cancels: list[frames.Frame]


class Runner:
    """One signal's handlers, made ready once per delivery to run on its payloads: each
    handler's call form resolved, the ``ttl`` cut-off fixed. Both modes use it."""

    __slots__ = (
        "bodies_suffice",
        "calls",
        "cutoff",
        "identity",
        "name",
        "one_handler",
        "settings",
        "signature_name",
        "spec",
        "ttl",
    )

    def __init__(
        self, name: str, handlers: Sequence[Handler], settings: Settings, spec: SignalSpec
    ) -> None:
        self.name = name
        self.settings = settings
        self.identity = signal_keys(name, settings.namespace).queue
        #: What frame signatures name the signal by.
        self.signature_name = self.identity.encode()
        self.calls = [(handler, call_form(handler, name)) for handler in handlers]
        self.spec = spec
        self.ttl = spec.ttl
        #: Whether weak delivery may read bare pickled bodies: no ttl to check a frame's time
        #: against, and a codec that is pickle.
        self.bodies_suffice = spec.ttl is None and settings.codec == "pickle"
        #: Whether there is one handler: :meth:`drain_bodies` can run bare bodies.
        self.one_handler = len(self.calls) == 1
        self.cutoff = -1
        self.restart()

    def restart(self) -> None:
        """Ready for a new delivery: the ``ttl`` cut-off moves with the clock."""
        if self.ttl is not None:
            # Whole seconds on the sender's clock: a payload sent before this second is too old.
            self.cutoff = int(frames.clock()) - self.ttl

    def parse_all(self, value: bytes, key: str = "") -> Read:
        """The verified frames of a value (of queue ``key``), its unreadable regions (logged,
        then dropped), its spread, and the frames it holds for another deliverer (logged,
        within their bound)."""
        settings = self.settings
        secret_keys = settings.secret_keys
        parsed = frames.parse_queue(
            value, self.signature_name, secret_keys, pickled=settings.codec == "pickle"
        )
        bad, kept = parsed.bad, []
        if parsed.held:
            limit = settings.store.max_value_size
            waiting, dropped = held.bound(parsed.held, limit, frames.clock())
            self.tell_held(key, waiting)
            kept = [item.frame for item in waiting]
            if dropped:
                bad = sorted(bad + dropped, key=lambda region: region.start)
        if bad:
            log_bad(self.name, self.identity, bad)
        return Read(parsed.found, bad, parsed.marker_width, kept, parsed.cancels)

    def tell_held(self, key: str, waiting: list[frames.Held]) -> None:
        """Log what ``key`` holds for another deliverer: at most once a minute per key, as a
        delivery may run every request (``health()`` says it at any time)."""
        told = _held_told.setdefault(self.settings.store, {})
        now = time.monotonic()
        if not waiting or now < told.get(key, now - 1):
            return
        told[key] = now + HELD_LOG_INTERVAL
        secret_keys = self.settings.secret_keys
        for sentence in held.advice(self.name, held.tally(waiting), secret_keys):
            logger.warning("%s (key %s)", sentence, key or self.identity)

    def expired(self, frame: frames.Frame) -> bool:
        """Older than the ttl, counted from when it was due (its send, or its not-before)."""
        if frame.meta:
            return max(frames.sent_at(frame.ident), frames.not_before(frame) // 1000) < self.cutoff
        return frames.sent_at(frame.ident) < self.cutoff

    def within_ttl(self, found: Found) -> Found:
        """``found`` without the payloads older than the signal's ttl (the caller reports them
        expired once it drops them). Bare bodies only come without a ttl."""
        if self.ttl is None:
            return found
        return [frame for frame in cast(list[frames.Frame], found) if not self.expired(frame)]

    def attempt(self, frame: frames.Frame) -> Exception | None:
        """:meth:`_attempt`, inside the payload's span when tracing (:mod:`..tracing`)."""
        if not tracing.active():
            return self._attempt(frame)
        with tracing.processing(self.name, frame):
            return self._attempt(frame)

    def _attempt(self, frame: frames.Frame) -> Exception | None:
        """Decode a frame and call every handler, for reliable delivery: None if all of them
        succeeded, else what failed it (each failure logged): the first :class:`Reject`
        raised, else the first :class:`Retry`, else the first error (a payload that cannot
        be decoded fails with its decoding error)."""
        try:
            data = decode(frame, self.settings)
        except Exception as error:
            logger.exception("could not decode a payload of signal %r", self.name)
            tracing.failed(error)
            return error
        failures: list[Exception] = []
        for handler, call in self.calls:
            try:
                call(data)
            except Exception as error:
                failures.append(error)
                tracing.failed(error)
                if isinstance(error, Retry | Reject):
                    logger.warning("handler %r for signal %r asked: %s", handler, self.name, error)
                else:
                    logger.exception("handler %r for signal %r failed", handler, self.name)
        if not failures:
            return None
        for kind in (Reject, Retry):
            for failure in failures:
                if isinstance(failure, kind):
                    return failure
        return failures[0]

    def _decode(self, item: frames.Frame | bytes) -> Any:
        """A frame's (or a bare pickled body's) payload, or :data:`_UNDECODABLE` (logged)."""
        try:
            return pickle.loads(item) if isinstance(item, bytes) else decode(item, self.settings)
        except Exception as error:
            logger.exception("could not decode a payload of signal %r", self.name)
            tracing.failed(error)
            return _UNDECODABLE

    def _handle(self, data: Any) -> bool:
        """Call every handler on ``data``; False if one raised (each failure logged)."""
        ok = True
        for handler, call in self.calls:
            try:
                call(data)
            except Exception as error:
                ok = False
                logger.exception("handler %r for signal %r failed", handler, self.name)
                tracing.failed(error)
        return ok

    def drain(self, due: Found) -> tuple[int, int]:
        """Run the handlers on every payload of ``due`` (already within the ttl; frames, or
        pickled bodies from :func:`frames.pickled_bodies`); returns how many succeeded and how
        many failed, each failure logged."""
        if due and isinstance(due[0], bytes) and self.one_handler:
            return self.drain_bodies(due)
        if tracing.active():
            return self._drain_traced(due)
        delivered = 0
        for item in due:
            data = self._decode(item)
            if data is not _UNDECODABLE:
                delivered += self._handle(data)
        return delivered, len(due) - delivered

    def _drain_traced(self, due: Found) -> tuple[int, int]:
        """:meth:`drain`, each payload inside its span when tracing (:mod:`..tracing`)."""
        delivered = 0
        for item in due:
            with tracing.processing(self.name, item if isinstance(item, frames.Frame) else None):
                data = self._decode(item)
                if data is not _UNDECODABLE:
                    delivered += self._handle(data)
        return delivered, len(due) - delivered

    def drain_bodies(self, bodies: list[bytes]) -> tuple[int, int]:
        """:meth:`drain` of pickled bodies for one handler, weak delivery's common case: the
        same logs, no call per payload around ``pickle.loads`` and the handler."""
        loads = pickle.loads
        ((handler, call),) = self.calls
        delivered = 0
        for body in bodies:
            try:
                data = loads(body)
            except Exception:
                logger.exception("could not decode a payload of signal %r", self.name)
                continue
            try:
                call(data)
            except Exception:
                logger.exception("handler %r for signal %r failed", handler, self.name)
                continue
            delivered += 1
        return delivered, len(bodies) - delivered
