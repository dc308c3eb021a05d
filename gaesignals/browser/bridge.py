"""The bridge's one implementation, and its WSGI face.

:class:`Bridge` routes a request below its prefix: ``client.js`` and ``client.d.ts``, a call
(``POST /call/<name>``) and a long poll (``GET /poll``). Its ASGI face,
:class:`gaesignals.browser.asgi.BridgeASGI`, answers the same way and streams ``/events``.

A long poll holds its request at most ``poll_seconds`` (below App Engine's 60 s deadline),
reads the cache once per ``poll_interval`` and answers as soon as a read finds a message: a post
from this process wakes it at once. Each waiting browser holds one thread of a WSGI server.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from functools import cache
from importlib.resources import files
from typing import Any
from urllib.parse import parse_qsl

from .. import middleware
from ..config import get_settings
from .calls import CallRules, answer_call
from .http import (
    BAD_REQUEST,
    FAILED,
    METHOD_NOT_ALLOWED,
    NOT_FOUND,
    Answer,
    Incoming,
    Refusal,
    json_answer,
    route_below,
)
from .messages import Batch, Inbox, check_window, wakeups
from .visitors import Identify, anonymous

logger = logging.getLogger("gaesignals")

#: The files the bridge serves, and their types.
STATIC = {
    "/client.js": "text/javascript; charset=utf-8",
    "/client.d.ts": "application/typescript; charset=utf-8",
}
#: The largest call body read, whatever a signal declares (``max_call_bytes``).
MAX_BODY = 64 * 1024

Sleep = Callable[[float, int], None]


@cache
def static_file(route: str) -> bytes:
    return (files(__package__) / "static" / route.lstrip("/")).read_bytes()


class Bridge:
    """Signals between the browser and this app, as a WSGI app to mount at ``prefix``.

    ``identify`` (environ or scope -> :class:`~gaesignals.browser.Visitor`) says who is
    calling (:mod:`gaesignals.browser.frameworks` adapts Django, Flask, webapp2, Starlette);
    ``allowed_origins`` adds origins (``"https://example.com"``) to the app's own host;
    ``calls_per_minute`` limits each session's calls; ``poll_seconds`` bounds a long poll,
    ``poll_interval`` its cache reads (gaesignals' settings are read at each request). ``clock``
    (Unix seconds) and ``sleep(seconds, generation)`` are seams for tests.
    """

    def __init__(
        self,
        *,
        prefix: str = "/signals",
        identify: Identify = anonymous,
        allowed_origins: Iterable[str] = (),
        calls_per_minute: int = 120,
        poll_seconds: float = 20.0,
        poll_interval: float = 1.0,
        clock: Callable[[], float] = time.time,
        sleep: Sleep = wakeups.wait,
    ) -> None:
        if not prefix.startswith("/") or prefix.endswith("/"):
            raise ValueError(f"prefix must start with / and not end with one, got {prefix!r}")
        if not 0 < poll_interval <= poll_seconds <= 55:
            raise ValueError("poll_interval and poll_seconds must be 0 < interval <= seconds <= 55")
        if not isinstance(calls_per_minute, int) or calls_per_minute < 1:
            raise ValueError(f"calls_per_minute must be a positive int, got {calls_per_minute!r}")
        if isinstance(allowed_origins, str):
            raise TypeError("allowed_origins is a list of origins, not one string")
        self.prefix = prefix
        self.rules = CallRules(identify, frozenset(allowed_origins), calls_per_minute, clock)
        self.poll_seconds = poll_seconds
        self.poll_interval = poll_interval
        self.clock = clock
        self.sleep = sleep
        middleware.wait_at(prefix + "/poll", prefix + "/events")

    # -- the one implementation -------------------------------------------------------------

    def answer(self, incoming: Incoming) -> Answer | None:
        """The answer to any request but a poll's (None: it is a poll, see :meth:`inbox`)."""
        if incoming.route in STATIC:
            if incoming.method not in ("GET", "HEAD"):
                return METHOD_NOT_ALLOWED
            headers = [
                ("Content-Type", STATIC[incoming.route]),
                ("Cache-Control", "no-cache"),
                ("X-Content-Type-Options", "nosniff"),
            ]
            return Answer("200 OK", headers, static_file(incoming.route))
        if incoming.route.startswith("/call/"):
            name = incoming.route.removeprefix("/call/")
            return answer_call(self.rules, incoming, name, get_settings())
        if incoming.route == "/poll":
            return None if incoming.method == "GET" else METHOD_NOT_ALLOWED
        return NOT_FOUND

    def inbox(self, incoming: Incoming) -> Inbox:
        """The mailboxes a poll (or a stream) reads, from its window and cursor; raises
        :class:`~gaesignals.browser.http.Refusal` for a request without a window id."""
        window = check_window(incoming.query.get("window"))
        if window is None:
            raise Refusal(BAD_REQUEST, "no window id")
        visitor = self.rules.identify(incoming.native)
        # An EventSource reconnects to its first URL, sending its last event's id beside it.
        cursor = incoming.headers.get("last-event-id") or incoming.query.get("cursor", "")
        return Inbox.of(visitor, window, cursor, get_settings())

    def poll(self, inbox: Inbox) -> Batch:
        """Read ``inbox`` until a read finds messages (or a reset), or ``poll_seconds`` pass;
        a new page's first poll answers at once, with the cursor it resumes from."""
        deadline = self.clock() + self.poll_seconds
        while True:
            seen = wakeups.generation
            batch = inbox.read(get_settings())
            left = deadline - self.clock()
            if batch.messages or batch.reset or inbox.fresh or left <= 0:
                return batch
            self.sleep(min(self.poll_interval, left), seen)

    # -- WSGI --------------------------------------------------------------------------------

    def __call__(
        self, environ: dict[str, Any], start_response: Callable[..., Any]
    ) -> Iterable[bytes]:
        answer = self._answer_wsgi(environ)
        start_response(answer.status, answer.headers)
        return [] if environ.get("REQUEST_METHOD") == "HEAD" else [answer.body]

    def _answer_wsgi(self, environ: dict[str, Any]) -> Answer:
        try:
            incoming = self._incoming(environ)
            if incoming is None:
                return NOT_FOUND
            answer = self.answer(incoming)
            if answer is not None:
                return answer
            batch = self.poll(self.inbox(incoming))
            return poll_answer(batch)
        except Refusal as refusal:
            logger.info("browser request refused: %s", refusal)
            return refusal.answer
        except Exception:
            logger.exception("browser request failed")
            return FAILED

    def _incoming(self, environ: dict[str, Any]) -> Incoming | None:
        path = str(environ.get("SCRIPT_NAME", "")) + str(environ.get("PATH_INFO", ""))
        route = route_below(path, self.prefix)
        if route is None:
            return None
        method = str(environ.get("REQUEST_METHOD", "GET")).upper()
        headers = {
            key[5:].replace("_", "-").lower(): str(value)
            for key, value in environ.items()
            if key.startswith("HTTP_")
        }
        if "CONTENT_TYPE" in environ:
            headers["content-type"] = str(environ["CONTENT_TYPE"])
        return Incoming(
            method=method,
            route=route,
            query=dict(parse_qsl(str(environ.get("QUERY_STRING", "")))),
            headers=headers,
            host=headers.get("host", str(environ.get("SERVER_NAME", ""))),
            remote=str(environ.get("REMOTE_ADDR", "")),
            native=environ,
            body=_read_body(environ) if method == "POST" else b"",
        )


def _read_body(environ: dict[str, Any]) -> bytes | None:
    """The request body, None when it is longer than :data:`MAX_BODY` (or says it is)."""
    try:
        length = int(environ.get("CONTENT_LENGTH") or 0)
    except ValueError:
        return None
    if length > MAX_BODY:
        return None
    return bytes(environ["wsgi.input"].read(length)) if length > 0 else b""


def poll_answer(batch: Batch) -> Answer:
    """A poll's answer: the cursor to send next, whether to reset, the messages."""
    return json_answer(
        "200 OK", {"cursor": batch.cursor, "reset": batch.reset, "messages": batch.messages}
    )


WSGIApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


def mount(bridge: Bridge, app: WSGIApp) -> WSGIApp:
    """``app``, with ``bridge`` answering every request below its prefix: how to put the
    bridge beside any WSGI app (webapp2, Flask, bare WSGI)."""

    def dispatch(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        path = str(environ.get("SCRIPT_NAME", "")) + str(environ.get("PATH_INFO", ""))
        chosen = bridge if route_below(path, bridge.prefix) is not None else app
        return chosen(environ, start_response)

    return dispatch
