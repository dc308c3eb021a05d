"""The ASGI middleware: delivery at the start of each HTTP request without blocking the loop,
one at a time, never breaking the request; other scopes passed through untouched. Then the
Starlette example, through Starlette's test client and served by uvicorn on loopback."""

from __future__ import annotations

import asyncio
import logging
import re
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest
import uvicorn
from starlette.testclient import TestClient

import gaesignals
from examples.starlette_app import GUESTBOOK, Guestbook, create_app
from gaesignals import frames, pending, send
from gaesignals.asgi import SignalsMiddleware
from gaesignals.stores import Store
from gaesignals.stores.memory import MemoryStore
from gaesignals.testing import CapturedSignals, CountingStore, DownStore
from tests.dev_server import http_request

from .async_support import WAIT, Exchange, GatedStore, RecordingApp, wait_for

HTTP: dict[str, Any] = {"type": "http", "method": "GET", "path": "/", "headers": []}
REQUEST = {"type": "http.request", "body": b"", "more_body": False}


def request(middleware: SignalsMiddleware, scope: dict[str, Any] | None = None) -> Exchange:
    """One HTTP request through ``middleware``, on a loop of its own; its exchange."""
    exchange = Exchange(REQUEST)
    asyncio.run(middleware(dict(scope or HTTP), exchange.receive, exchange.send))
    return exchange


def test_import_gaesignals_asgi_imports_no_framework() -> None:
    """``import gaesignals`` and ``import gaesignals.asgi`` leave Starlette, uvicorn and httpx
    unimported: the middleware needs no dependency."""
    code = (
        "import sys, gaesignals, gaesignals.asgi; "
        "print(sorted(m for m in ('starlette', 'uvicorn', 'httpx', 'anyio') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_delivers_before_the_app_sees_an_http_request(store: Store) -> None:
    """Handlers, plain and coroutine, have run by the time the app is called, and the app's
    response goes out as it sent it; a second request delivers nothing twice."""
    got: list[Any] = []
    seen: list[list[Any]] = []
    app = RecordingApp(b"hello")

    async def inner(scope: Any, receive: Any, send: Any) -> None:
        seen.append(list(got))
        await app(scope, receive, send)

    async def coroutine_handler(data: Any) -> None:
        got.append(("awaited", data))

    middleware = SignalsMiddleware(inner, {"greet": [got.append, coroutine_handler]})
    send("greet", "hi")
    exchange = request(middleware)
    assert seen == [["hi", ("awaited", "hi")]]
    assert [m["type"] for m in exchange.sent] == ["http.response.start", "http.response.body"]
    assert exchange.sent[1]["body"] == b"hello"
    request(middleware)
    assert got == ["hi", ("awaited", "hi")] and len(app.calls) == 2


@pytest.mark.parametrize("kind", ["lifespan", "websocket"])
def test_other_scopes_go_to_the_app_untouched(kind: str) -> None:
    """A lifespan or websocket scope reaches the app as the same objects, with the same
    messages, and delivers nothing."""
    gaesignals.configure(store=MemoryStore())
    got: list[Any] = []
    app = RecordingApp()
    middleware = SignalsMiddleware(app, {"greet": got.append})
    send("greet", "not for a websocket")
    message = {"type": f"{kind}.startup" if kind == "lifespan" else "websocket.connect"}
    exchange = Exchange(message)
    scope = {"type": kind, "asgi": {"version": "3.0"}}
    asyncio.run(middleware(scope, exchange.receive, exchange.send))
    ((given_scope, given_receive, given_send),) = app.calls
    assert given_scope is scope and scope == {"type": kind, "asgi": {"version": "3.0"}}
    assert given_receive == exchange.receive and given_send == exchange.send
    assert app.received == [message] and got == []
    assert pending("greet")["greet"].count == 1


def test_a_failing_handler_never_breaks_the_response(
    store: Store, caplog: pytest.LogCaptureFixture
) -> None:
    """A raising coroutine handler is logged and the request is served anyway."""

    async def broken(data: Any) -> None:
        raise KeyError("handler bug")

    app = RecordingApp()
    send("oops", 1)
    with caplog.at_level(logging.ERROR, logger="gaesignals"):
        exchange = request(SignalsMiddleware(app, {"oops": broken}))
    assert exchange.sent[0]["status"] == 200 and len(app.calls) == 1
    assert "handler bug" in caplog.text and "'oops'" in caplog.text


def test_a_store_outage_is_logged_and_the_request_served(caplog: pytest.LogCaptureFixture) -> None:
    """With the store down the request is served, and the outage logged once for it."""
    gaesignals.configure(store=DownStore("the cache is down"))
    app = RecordingApp()
    with caplog.at_level(logging.ERROR, logger="gaesignals"):
        exchange = request(SignalsMiddleware(app, {"greet": print}))
    assert exchange.sent[0]["status"] == 200
    assert [r.getMessage() for r in caplog.records] == [
        "gaesignals: no delivery for this request: the cache is down"
    ]


def test_the_loop_serves_other_requests_while_one_delivers() -> None:
    """While a delivery's store call is held, the loop serves another request through the
    same middleware, which neither waits for it nor starts a second delivery; the first
    request goes on once the store answers."""
    gated = GatedStore(MemoryStore())
    gaesignals.configure(store=gated)
    got: list[Any] = []
    app = RecordingApp()
    middleware = SignalsMiddleware(app, {"slow": got.append})
    send("slow", "payload")
    gated.gate()

    async def main() -> None:
        first = Exchange(REQUEST)
        delivering = asyncio.ensure_future(middleware(dict(HTTP), first.receive, first.send))
        assert await wait_for(gated.entered)
        second = Exchange(REQUEST)
        await middleware(dict(HTTP), second.receive, second.send)  # served meanwhile
        assert second.sent[0]["status"] == 200 and len(app.calls) == 1
        assert not delivering.done() and gated.connections == 1 and got == []
        gated.release.set()
        await asyncio.wait_for(delivering, WAIT)
        assert first.sent[0]["status"] == 200 and len(app.calls) == 2

    asyncio.run(main())
    assert got == ["payload"]


def test_a_cancelled_request_leaves_its_delivery_to_finish_alone() -> None:
    """A request cancelled while its delivery waits on the store does not end the delivery:
    no other starts until it has finished, and it still delivers the payload."""
    gated = GatedStore(MemoryStore())
    gaesignals.configure(store=gated)
    got: list[Any] = []
    middleware = SignalsMiddleware(RecordingApp(), {"slow": got.append})
    send("slow", "payload")
    gated.gate()

    async def main() -> None:
        first = Exchange(REQUEST)
        cancelled = asyncio.ensure_future(middleware(dict(HTTP), first.receive, first.send))
        assert await wait_for(gated.entered)
        cancelled.cancel()
        with pytest.raises(asyncio.CancelledError):
            await cancelled
        assert first.sent == [] and middleware.running is not None
        second = Exchange(REQUEST)
        await middleware(dict(HTTP), second.receive, second.send)
        assert gated.connections == 1  # the second request started no delivery
        running = middleware.running
        gated.release.set()
        await asyncio.wait_for(asyncio.shield(running), WAIT)
        assert middleware.running is None

    asyncio.run(main())
    assert got == ["payload"]


def test_interval_limits_deliveries_and_skips_the_cache_between() -> None:
    """With ``interval=N`` the middleware delivers at most once per N seconds of its clock,
    and the requests in between make no cache call."""
    store = CountingStore(MemoryStore())
    gaesignals.configure(store=store)
    now = [100.0]
    got: list[Any] = []
    middleware = SignalsMiddleware(
        RecordingApp(), {"tick": got.append}, interval=5, clock=lambda: now[0]
    )
    send("tick", 1)
    request(middleware)
    assert got == [1]
    send("tick", 2)
    store.calls.clear()
    for _ in range(10):
        now[0] += 0.4
        request(middleware)
    assert got == [1] and store.total == 0
    now[0] += 1.1
    request(middleware)
    assert got == [1, 2]


def test_reliable_mode_retries_a_failed_payload_at_a_later_request(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With ``reliable=True`` a payload whose coroutine handler failed stays pending and is
    delivered by a request after its retry delay, once."""
    now = [1_800_000_000.0]
    monkeypatch.setattr(frames, "clock", lambda: now[0])
    gaesignals.declare("retry", retry_delay=1)
    attempts: list[Any] = []

    async def once_failing(data: Any) -> None:
        attempts.append(data)
        if len(attempts) == 1:
            raise RuntimeError("first time fails")

    middleware = SignalsMiddleware(RecordingApp(), {"retry": once_failing}, reliable=True, lease=5)
    send("retry", "job")
    request(middleware)
    assert attempts == ["job"] and pending("retry")["retry"].waiting == 1
    now[0] += 1.2
    request(middleware)
    request(middleware)
    assert attempts == ["job", "job"] and pending("retry")["retry"].count == 0


# -- the Starlette example ------------------------------------------------------------------


@pytest.fixture
def book(gaesignals_store: Store) -> Guestbook:
    return Guestbook()


def published(book: Guestbook) -> list[str]:
    return [entry["text"] for entry in book.entries]


def test_example_sign_sends_and_the_next_request_publishes(
    book: Guestbook, gaesignals_captured: CapturedSignals
) -> None:
    """The post only sends; the redirected page finds the entry published before it ran."""
    with TestClient(create_app(book)) as client:
        response = client.post(
            "/sign", data={"name": "ann", "text": "hello, starlette"}, follow_redirects=False
        )
        assert response.status_code == 303 and response.headers["location"] == "/"
        assert gaesignals_captured.data(GUESTBOOK)[0]["text"] == "hello, starlette"
        assert published(book) == []
        page = client.get("/")
    assert published(book) == ["hello, starlette"]
    assert "1 entry published." in page.text and "hello, starlette" in page.text


def test_example_entries_are_escaped(book: Guestbook) -> None:
    """Markup in an entry is shown, not run."""
    with TestClient(create_app(book)) as client:
        page = client.post("/sign", data={"name": "<b>x</b>", "text": "<script>1</script>"})
    assert "&lt;script&gt;1&lt;/script&gt;" in page.text and "<script>" not in page.text


def test_example_empty_form_sends_nothing(
    book: Guestbook, gaesignals_captured: CapturedSignals
) -> None:
    """A post without a name or text redirects without sending."""
    with TestClient(create_app(book)) as client:
        assert client.post("/sign", data={"name": " ", "text": "x"}).status_code == 200
    assert gaesignals_captured == []


@pytest.fixture
def served(book: Guestbook) -> Iterator[int]:
    """The example served by uvicorn in a thread, on a free loopback port; stopped after."""
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    config = uvicorn.Config(
        create_app(book), log_config=None, access_log=False, lifespan="on", ws="none"
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [listener]})
    thread.start()
    try:
        deadline = time.monotonic() + WAIT
        while not server.started and thread.is_alive() and time.monotonic() < deadline:
            time.sleep(0.01)
        assert server.started, "uvicorn did not start"
        yield listener.getsockname()[1]
    finally:
        server.should_exit = True
        thread.join(WAIT)
        listener.close()
        assert not thread.is_alive(), "uvicorn did not stop"


def test_example_under_uvicorn_publishes_at_the_next_request(served: int, book: Guestbook) -> None:
    """Served by uvicorn over loopback HTTP, a signing is published by the next request."""
    form = urlencode({"name": "bo", "text": "over http"})
    status, _, headers = http_request(served, "POST", "/sign", form)
    assert status == 303 and headers["location"] == "/"
    assert published(book) == []
    status, page, _ = http_request(served, "GET", "/")
    assert status == 200 and "1 entry published." in page and "over http" in page
    assert published(book) == ["over http"]


def test_the_asgi_page_examples_run() -> None:
    """The Python blocks of ``docs/asgi.md`` run as shown, one after another."""
    page = (Path(__file__).resolve().parent.parent / "docs" / "asgi.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", page, re.S)
    assert len(blocks) >= 5
    exec(compile("\n".join(blocks), "docs/asgi.md", "exec"), {})
