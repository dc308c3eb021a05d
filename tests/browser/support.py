"""Helpers of the browser bridge's suites: visitors named by test headers, the bridge through
webtest, a call with every header a page sends, and clocks and sleeps the tests drive."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Mapping
from typing import Any

import webtest

from gaesignals.browser import Bridge, Visitor, csrf_token

SECRET = "browser-tests-secret-key-0123456789abcdef"
WINDOW = "window-a1"
OTHER_WINDOW = "window-b2"
ORIGIN = "http://localhost:80"


def visitor_from_headers(native: Mapping[str, Any]) -> Visitor:
    """A test ``identify``: the user and session a request names in X-Test-User and
    X-Test-Session (WSGI environ or ASGI scope)."""
    if "headers" in native:
        headers = {k.decode().lower(): v.decode() for k, v in native["headers"]}
        user, session = headers.get("x-test-user"), headers.get("x-test-session")
    else:
        user, session = native.get("HTTP_X_TEST_USER"), native.get("HTTP_X_TEST_SESSION")
    return Visitor(user=user or None, session=session or None)


def who(user: str | None = None, session: str | None = None) -> dict[str, str]:
    """The test headers naming a visitor."""
    headers = {}
    if user:
        headers["X-Test-User"] = user
    if session:
        headers["X-Test-Session"] = session
    return headers


class FakeTime:
    """A clock and a sleep for the long poll: sleeping moves the clock, and runs the
    ``on_sleep`` hook first (what happens elsewhere meanwhile)."""

    def __init__(self) -> None:
        self.now = 1_000_000.0
        self.sleeps: list[float] = []
        self.on_sleep: Callable[[int], None] | None = None

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float, generation: int) -> None:
        self.sleeps.append(seconds)
        if self.on_sleep is not None:
            self.on_sleep(len(self.sleeps))
        self.now += seconds

    async def asleep(self, seconds: float, generation: int) -> None:
        """:meth:`sleep` for the ASGI bridge."""
        self.sleep(seconds, generation)


def bridge_app(time: FakeTime | None = None, **options: Any) -> webtest.TestApp:
    """The bridge as a WSGI app under webtest, its visitors named by the test headers."""
    options.setdefault("identify", visitor_from_headers)
    if time is not None:
        options.update(clock=time.clock, sleep=time.sleep)
    return webtest.TestApp(Bridge(**options))


def call(
    app: webtest.TestApp,
    name: str,
    data: Any = None,
    *,
    user: str | None = None,
    session: str | None = "session-1",
    body: bytes | None = None,
    status: int | str = "*",
    **headers: str,
) -> webtest.TestResponse:
    """POST a call as client.js does; ``headers`` (underscores for dashes) replace its own."""
    sent = {
        "Content-Type": "application/json",
        "Origin": ORIGIN,
        "X-GaeSignals-CSRF": csrf_token(session),
        "X-GaeSignals-Window": WINDOW,
        **who(user, session),
    }
    sent.update({key.replace("_", "-"): value for key, value in headers.items()})
    if body is None:
        body = json.dumps({"data": data}).encode()
    return app.post(f"/signals/call/{name}", body, headers=sent, status=status)


def poll(
    app: webtest.TestApp,
    cursor: str = "",
    *,
    window: str = WINDOW,
    user: str | None = None,
    session: str | None = None,
) -> dict[str, Any]:
    """One long poll's JSON answer."""
    query = {"window": window, "cursor": cursor}
    answer = app.get("/signals/poll", query, headers=who(user, session), status=200)
    found: dict[str, Any] = answer.json
    return found


def signals_of(answer: Mapping[str, Any]) -> list[tuple[str, Any]]:
    return [(message["signal"], message["data"]) for message in answer["messages"]]


class Exchange:
    """One ASGI request: what the app is given to receive (the body, then a disconnect once
    ``disconnect`` is set) and what it sent."""

    def __init__(self, body: bytes = b"") -> None:
        self.body = body
        self.sent: list[dict[str, Any]] = []
        self.disconnect = asyncio.Event()
        self._given = False

    async def receive(self) -> dict[str, Any]:
        if not self._given:
            self._given = True
            return {"type": "http.request", "body": self.body, "more_body": False}
        await self.disconnect.wait()
        return {"type": "http.disconnect"}

    async def send(self, message: dict[str, Any]) -> None:
        self.sent.append(dict(message))

    @property
    def status(self) -> int:
        status: int = self.sent[0]["status"]
        return status

    @property
    def headers(self) -> dict[str, str]:
        return {k.decode(): v.decode() for k, v in self.sent[0]["headers"]}

    @property
    def content(self) -> bytes:
        return b"".join(m.get("body", b"") for m in self.sent[1:])

    def json(self) -> Any:
        return json.loads(self.content)


def asgi_request(
    app: Any,
    path: str,
    *,
    method: str = "GET",
    query: str = "",
    headers: Mapping[str, str] | None = None,
    body: bytes = b"",
    exchange: Exchange | None = None,
) -> Exchange:
    """Run one request through an ASGI ``app`` on a loop of its own (``exchange``, or a new
    one with ``body``); its exchange."""
    exchange = exchange or Exchange(body)
    scope = {
        "type": "http",
        "method": method,
        "path": path,
        "root_path": "",
        "query_string": query.encode(),
        "headers": [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()],
        "client": ("127.0.0.1", 5000),
    }
    asyncio.run(app(scope, exchange.receive, exchange.send))
    return exchange


def events_of(content: bytes) -> list[dict[str, str]]:
    """The server-sent events in a stream's bytes, each as its fields (comments left out)."""
    found = []
    for block in content.decode().split("\n\n"):
        fields = dict(
            line.split(": ", 1) for line in block.splitlines() if line and not line.startswith(":")
        )
        if fields:
            found.append(fields)
    return found
