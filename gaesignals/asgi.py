"""ASGI middleware that delivers signals at the start of every HTTP request.

The twin of :class:`gaesignals.SignalsMiddleware` for Starlette, FastAPI, Django's ASGI
handler or any ASGI app. It needs no dependency: the store calls and the plain handlers run in
a worker thread, ``async def`` handlers are awaited on the server's loop, so the loop keeps
serving other requests while a delivery runs.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from .coroutines import in_worker
from .delivery import MappingArg
from .middleware import REQUEST_LIMIT, RequestDeliverer, waits

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


def full_path(scope: Scope) -> str:
    """The request's whole URL path: ``path`` holds ``root_path`` already on some servers."""
    root, path = str(scope.get("root_path", "")), str(scope.get("path", ""))
    return path if path.startswith(root) else root + path


class SignalsMiddleware(RequestDeliverer):
    """Deliver ``mapping`` before the wrapped ASGI app sees each HTTP request.

    The options are the WSGI middleware's: ``mapping=None`` delivers the default registry's
    receivers as they are at each request, ``reliable=None`` gives each signal its declared
    mode, ``lease`` and ``max_attempts`` override the declarations, ``interval`` (seconds)
    makes this middleware deliver at most that often, ``limit`` bounds how many payloads of
    each signal a request takes (:data:`~gaesignals.middleware.REQUEST_LIMIT` by default;
    None: a whole backlog), ``clock`` is injectable for tests.

    At most one delivery runs at a time for each middleware: a request that arrives while one
    runs goes straight to the app, without a cache call. Delivery never breaks a request:
    handler errors are logged by :func:`~gaesignals.deliver`, a store outage is logged once
    for the request. ``lifespan`` and ``websocket`` scopes go to the app untouched.
    """

    def __init__(
        self,
        app: ASGIApp,
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
        #: The delivery running now, if any (kept so that it finishes even if its request
        #: is cancelled, and only then lets the next one start).
        self.running: asyncio.Future[int] | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and not waits(full_path(scope)):
            await self.adeliver_if_due()
        await self.app(scope, receive, send)

    async def adeliver_if_due(self) -> None:
        """Deliver now, in a worker thread, unless ``interval`` says it is too soon or a
        delivery is running already; never raises."""
        if not self._take_turn():  # one delivery at a time, whatever the interval
            return
        self.running = asyncio.ensure_future(in_worker(self._deliver))
        self.running.add_done_callback(self._finished)
        # A cancelled request leaves the delivery running: its thread cannot be stopped.
        await asyncio.shield(self.running)

    def _finished(self, running: asyncio.Future[int]) -> None:
        self.running = None
        self._turn.release()
