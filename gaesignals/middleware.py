"""WSGI middleware that delivers signals at the start of every request."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

from .delivery import MappingArg, SignalMapping, check_limit, deliver
from .exceptions import GaeSignalsError

logger = logging.getLogger("gaesignals")

#: How many payloads of each signal a request's delivery takes unless told otherwise: a user's
#: request does not run a backlog; the rest waits for the next request, cron or a worker.
REQUEST_LIMIT = 100

WSGIApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]

#: The environ key under which a request's own delivery leaves how many payloads it delivered,
#: so the cron endpoint the same request reaches reports them with its own.
DELIVERED = "gaesignals.delivered"


#: The paths where browsers wait for messages (a bridge of :mod:`gaesignals.browser` adds its
#: own): a long poll is not a delivery request, its time is for waiting.
_waiting: frozenset[str] = frozenset()


def wait_at(*paths: str) -> None:
    """Mark ``paths`` (whole URL paths) as where requests wait: no delivery on them."""
    global _waiting
    _waiting = _waiting | frozenset(paths)


def waits(path: str) -> bool:
    """Whether a request to ``path`` waits for browser messages (see :func:`wait_at`)."""
    return path in _waiting


def record_delivered(environ: dict[str, Any], count: int) -> None:
    """Add ``count`` to what this request (``environ``) has delivered so far."""
    environ[DELIVERED] = environ.get(DELIVERED, 0) + count


class RequestDeliverer:
    """Deliver ``mapping`` when a request says so, at most every ``interval`` seconds, never
    raising: the policy :class:`SignalsMiddleware` applies, shared by the Flask and Django
    integrations and by :class:`gaesignals.asgi.SignalsMiddleware`.

    ``mapping=None`` delivers the default registry's receivers (:func:`~gaesignals.receiver`)
    as they are at each call; ``reliable=None`` gives each signal its declared mode.
    ``interval`` (seconds) makes each process deliver at most that often, and only one request
    at a time: the other requests pay no cache call at all. ``limit`` bounds how many payloads
    of each signal one delivery takes (:data:`REQUEST_LIMIT` by default; None: all pending).
    ``clock`` is injectable for tests. Handler errors are logged by :func:`deliver`; a store
    outage is logged once per call.
    """

    def __init__(
        self,
        mapping: MappingArg | None = None,
        reliable: bool | None = None,
        *,
        lease: int | None = None,
        max_attempts: int | None = None,
        interval: float = 0,
        clock: Callable[[], float] = time.monotonic,
        limit: int | None = REQUEST_LIMIT,
    ) -> None:
        self.mapping = None if mapping is None else SignalMapping.coerce(mapping)
        self.reliable = reliable
        self.lease = lease
        self.max_attempts = max_attempts
        self.limit = None if limit is None else check_limit(limit)
        self.interval = interval
        self._clock = clock
        self._due = float("-inf")
        self._turn = threading.Lock()

    def deliver_if_due(self) -> int:
        """Deliver now unless ``interval`` says it is too soon or another request is at it;
        how many payloads were delivered (0 also when nothing could be)."""
        if not self.interval:
            return self._deliver()
        if not self._take_turn():
            return 0
        try:
            return self._deliver()
        finally:
            self._turn.release()

    def _take_turn(self) -> bool:
        """Whether this request delivers: ``interval`` says it is time and no other request
        holds the turn. True with the turn held (the caller releases it) and the next due
        time set; checked again once held, so two requests never both deliver."""
        if self.interval and self._clock() < self._due:
            return False
        if not self._turn.acquire(blocking=False):
            return False
        if self.interval:
            if self._clock() < self._due:
                self._turn.release()
                return False
            self._due = self._clock() + self.interval
        return True

    def _deliver(self) -> int:
        try:
            return deliver(
                self.mapping,
                self.reliable,
                lease=self.lease,
                max_attempts=self.max_attempts,
                limit=self.limit,
            )
        except GaeSignalsError as error:
            logger.error("no delivery for this request: %s", error)
        except Exception:
            logger.exception("no delivery for this request")
        return 0


class SignalsMiddleware(RequestDeliverer):
    """Deliver ``mapping`` before the wrapped app sees each request.

    Delivery never breaks a request: handler errors are logged by :func:`deliver`, and a store
    outage is logged once for the request, which then goes on as if nothing were pending.
    The app's response iterable is returned untouched; how many payloads were delivered is
    left in ``environ["gaesignals.delivered"]`` (a cron endpoint behind it counts them).

    ``mapping=None`` delivers the default registry's receivers (:func:`~gaesignals.receiver`)
    as they are at each request; ``reliable=None`` gives each signal its declared mode.
    ``interval`` (seconds) makes each process deliver at most that often, and only one request
    at a time: the other requests pay no cache call at all. ``limit`` bounds how many payloads
    of each signal a request takes (:data:`REQUEST_LIMIT`, 100, by default; None: a whole
    backlog), so a backlog drains over requests, never into one. ``clock`` is injectable for
    tests.
    """

    def __init__(
        self,
        app: WSGIApp,
        mapping: MappingArg | None = None,
        reliable: bool | None = None,
        *,
        lease: int | None = None,
        max_attempts: int | None = None,
        interval: float = 0,
        clock: Callable[[], float] = time.monotonic,
        limit: int | None = REQUEST_LIMIT,
    ) -> None:
        super().__init__(
            mapping,
            reliable,
            lease=lease,
            max_attempts=max_attempts,
            interval=interval,
            clock=clock,
            limit=limit,
        )
        self.app = app

    def __call__(
        self, environ: dict[str, Any], start_response: Callable[..., Any]
    ) -> Iterable[bytes]:
        if not waits(environ.get("SCRIPT_NAME", "") + environ.get("PATH_INFO", "")):
            record_delivered(environ, self.deliver_if_due())
        return self.app(environ, start_response)
