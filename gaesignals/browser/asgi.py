"""The bridge's ASGI face: the same answers as its WSGI one, and server-sent events.

:class:`BridgeASGI` wraps a :class:`~gaesignals.browser.Bridge` and answers from it: the store
calls and the handlers run in a worker thread (coroutine handlers on the server's loop), so a
waiting browser holds a coroutine, not a thread. Where the server streams (uvicorn, Cloud Run,
App Engine flexible), ``GET {prefix}/events`` keeps a response open and writes each message as
it is read (see ``docs/browser-protocol.md``); the stream ends after ``stream_seconds``, before
a platform's deadline, and the browser reconnects with its last event id.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import parse_qsl

from ..asgi import Receive, Scope, Send, full_path
from ..config import get_settings
from ..coroutines import in_worker
from .bridge import MAX_BODY, Bridge, poll_answer
from .http import FAILED, METHOD_NOT_ALLOWED, NOT_FOUND, Answer, Incoming, Refusal, route_below
from .messages import Batch, Inbox, wakeups

logger = logging.getLogger("gaesignals")

AsyncSleep = Callable[[float, int], Awaitable[None]]
STREAM_HEADERS = [
    (b"content-type", b"text/event-stream; charset=utf-8"),
    (b"cache-control", b"no-store"),
    (b"x-accel-buffering", b"no"),
    (b"x-content-type-options", b"nosniff"),
]


async def wait_for_post(seconds: float, seen: int) -> None:
    """Sleep up to ``seconds``, less if this process posts a message meanwhile (since
    generation ``seen``)."""
    loop = asyncio.get_running_loop()
    woken: asyncio.Future[None] = loop.create_future()

    def resolve() -> None:
        if not woken.done():
            woken.set_result(None)

    def wake() -> None:
        with contextlib.suppress(RuntimeError):  # a closed loop: nobody waits any more
            loop.call_soon_threadsafe(resolve)

    wakeups.listen(wake)
    try:
        if wakeups.generation == seen:
            await asyncio.wait_for(woken, seconds)
    except TimeoutError:
        pass
    finally:
        wakeups.unlisten(wake)


class BridgeASGI:
    """``bridge`` as an ASGI app: mount it where the bridge's ``prefix`` is the whole path.

    ``stream_seconds`` bounds an event stream, ``keepalive_seconds`` is how long it stays
    silent before a comment line; ``sleep(seconds, generation)`` is a seam for tests."""

    def __init__(
        self,
        bridge: Bridge,
        *,
        stream_seconds: float = 240.0,
        keepalive_seconds: float = 15.0,
        sleep: AsyncSleep = wait_for_post,
    ) -> None:
        self.bridge = bridge
        self.stream_seconds = stream_seconds
        self.keepalive_seconds = keepalive_seconds
        self.sleep = sleep

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await _lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        incoming = await _incoming(scope, receive, self.bridge.prefix)
        if incoming is None:
            await _respond(send, NOT_FOUND)
            return
        try:
            if incoming.route == "/events":
                await self._events(incoming, receive, send)
                return
            answer = await in_worker(self.bridge.answer, incoming)
            if answer is None:
                inbox = await in_worker(self.bridge.inbox, incoming)
                answer = poll_answer(await self.poll(inbox))
        except Refusal as refusal:
            logger.info("browser request refused: %s", refusal)
            answer = refusal.answer
        except Exception:
            logger.exception("browser request failed")
            answer = FAILED
        await _respond(send, answer, head=incoming.method == "HEAD")

    async def poll(self, inbox: Inbox) -> Batch:
        """:meth:`Bridge.poll`, awaiting between reads instead of holding a thread."""
        bridge = self.bridge
        deadline = bridge.clock() + bridge.poll_seconds
        while True:
            seen = wakeups.generation
            batch = await in_worker(inbox.read, get_settings())
            left = deadline - bridge.clock()
            if batch.messages or batch.reset or inbox.fresh or left <= 0:
                return batch
            await self.sleep(min(bridge.poll_interval, left), seen)

    async def _events(self, incoming: Incoming, receive: Receive, send: Send) -> None:
        if incoming.method != "GET":
            await _respond(send, METHOD_NOT_ALLOWED)
            return
        inbox = await in_worker(self.bridge.inbox, incoming)
        await send({"type": "http.response.start", "status": 200, "headers": STREAM_HEADERS})
        gone = asyncio.Event()
        watcher = asyncio.ensure_future(_watch_disconnect(receive, gone))
        try:
            await self._stream(inbox, send, gone)
            if not gone.is_set():
                await send({"type": "http.response.body", "body": b"", "more_body": False})
        except OSError:  # the browser went away mid-write
            pass
        finally:
            watcher.cancel()

    async def _stream(self, inbox: Inbox, send: Send, gone: asyncio.Event) -> None:
        """Read and write until the stream's time is spent or the browser leaves."""
        bridge = self.bridge
        deadline = bridge.clock() + self.stream_seconds
        quiet_since = bridge.clock()
        first = True
        while not gone.is_set() and bridge.clock() < deadline:
            seen = wakeups.generation
            batch = await in_worker(inbox.read, get_settings())
            chunk = event_chunk(batch, first)
            first = False
            if not chunk and bridge.clock() - quiet_since >= self.keepalive_seconds:
                chunk = b": keep-alive\n\n"
            if chunk:
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
                quiet_since = bridge.clock()
            left = deadline - bridge.clock()
            if left > 0 and not gone.is_set():
                await self.sleep(min(bridge.poll_interval, left), seen)


def event_chunk(batch: Batch, first: bool) -> bytes:
    """The events of one read: ``ready`` first on a new stream, ``reset``, each message; the
    last carries the cursor as its id (what the browser sends back as Last-Event-ID)."""
    events: list[tuple[str, str]] = []
    if first:
        events.append(("ready", "{}"))
    if batch.reset:
        events.append(("reset", "{}"))
    events += [("message", json.dumps(m, separators=(",", ":"))) for m in batch.messages]
    if not events:
        return b""
    lines = [f"event: {kind}\ndata: {data}\n\n" for kind, data in events]
    lines[-1] = f"id: {batch.cursor}\n" + lines[-1]
    return "".join(lines).encode("utf-8")


async def _watch_disconnect(receive: Receive, gone: asyncio.Event) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass
    gone.set()


async def _lifespan(receive: Receive, send: Send) -> None:
    """Acknowledge a server's start and stop: the bridge has nothing to set up."""
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return


async def _incoming(scope: Scope, receive: Receive, prefix: str) -> Incoming | None:
    route = route_below(full_path(scope), prefix)
    if route is None:
        return None
    headers: dict[str, str] = {}
    for name, value in scope.get("headers", ()):
        key = name.decode("latin-1").lower()
        text = value.decode("latin-1")
        headers[key] = f"{headers[key]}, {text}" if key in headers else text
    method = str(scope.get("method", "GET")).upper()
    client = scope.get("client") or ("", 0)
    return Incoming(
        method=method,
        route=route,
        query=dict(parse_qsl(bytes(scope.get("query_string", b"")).decode("latin-1"))),
        headers=headers,
        host=headers.get("host", ""),
        remote=str(client[0]),
        native=scope,
        body=await _read_body(receive) if method == "POST" else b"",
    )


async def _read_body(receive: Receive) -> bytes | None:
    """The request body, None past :data:`~gaesignals.browser.bridge.MAX_BODY`."""
    body = bytearray()
    while True:
        message: dict[str, Any] = dict(await receive())
        if message["type"] == "http.disconnect":
            return bytes(body)
        body += message.get("body", b"")
        if len(body) > MAX_BODY:
            return None
        if not message.get("more_body"):
            return bytes(body)


async def _respond(send: Send, answer: Answer, *, head: bool = False) -> None:
    status = int(answer.status.split(" ", 1)[0])
    headers = [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in answer.headers]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": b"" if head else answer.body})
