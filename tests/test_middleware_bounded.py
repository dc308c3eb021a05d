"""Bounded request and scheduled deliveries: a request's delivery (WSGI, ASGI, Flask) takes at
most its limit of each signal (100 by default), the cron endpoint 1,000 by default, and a
backlog far larger than that still drains over requests, each payload once."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from typing import Any

import pytest
import webtest
from flask import Flask

import gaesignals
from gaesignals import SignalsMiddleware, pending, send_multi
from gaesignals import asgi as asgi_middleware
from gaesignals.contrib.flask import GaeSignals
from gaesignals.cron import CRON_LIMIT, CronDeliveryApp
from gaesignals.middleware import REQUEST_LIMIT
from gaesignals.stores import Store
from gaesignals.stores.memory import MemoryStore

from .async_support import Exchange, RecordingApp

TOKEN = "t" * 40
BACKLOG = 100_000


def _app(environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"ok"]


def _request(middleware: SignalsMiddleware) -> int:
    """One request through ``middleware``: how many payloads its delivery delivered."""
    environ: dict[str, Any] = {"REQUEST_METHOD": "GET", "PATH_INFO": "/"}
    middleware(environ, lambda *args: None)
    delivered: int = environ["gaesignals.delivered"]
    return delivered


def test_a_request_delivers_at_most_its_default_limit(store: Store) -> None:
    """Under a 250-payload backlog the WSGI middleware delivers 100, 100, then 50: each
    request's share is bounded by :data:`REQUEST_LIMIT` and nothing is left behind."""
    send_multi([("alpha", i) for i in range(250)])
    got: list[int] = []
    middleware = SignalsMiddleware(_app, {"alpha": got.append})
    assert REQUEST_LIMIT == 100
    assert [_request(middleware) for _ in range(4)] == [100, 100, 50, 0]
    assert got == list(range(250))


def test_a_huge_backlog_drains_over_requests_each_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    """A 100,000-payload backlog on one signal: every request delivers at most 100, and
    1,000 requests deliver all of it, each payload once, in send order. (Lost checks at
    their usual pace: each walks the whole backlog's headers.)"""
    monkeypatch.setenv("GAESIGNALS_LOST_CHECK_INTERVAL", "3600")
    gaesignals.configure(store=MemoryStore(max_value_size=64 << 20))
    for start in range(0, BACKLOG, 10_000):
        send_multi([("bulk", i) for i in range(start, start + 10_000)])
    got: list[int] = []
    middleware = SignalsMiddleware(_app, {"bulk": got.append})
    shares = [_request(middleware) for _ in range(BACKLOG // REQUEST_LIMIT)]
    assert shares == [REQUEST_LIMIT] * (BACKLOG // REQUEST_LIMIT)
    assert _request(middleware) == 0
    assert got == list(range(BACKLOG))
    assert pending("bulk")["bulk"].count == 0


def test_limit_none_lets_a_request_take_a_whole_backlog(store: Store) -> None:
    """``limit=None`` restores a whole-backlog delivery per request."""
    send_multi([("alpha", i) for i in range(250)])
    got: list[int] = []
    assert _request(SignalsMiddleware(_app, {"alpha": got.append}, limit=None)) == 250


def test_a_bad_limit_fails_at_construction(store: Store) -> None:
    """A middleware given a limit that is not a positive int refuses to be built."""
    with pytest.raises(ValueError, match="limit"):
        SignalsMiddleware(_app, {"alpha": print}, limit=0)
    with pytest.raises(ValueError, match="limit"):
        CronDeliveryApp({"alpha": print}, token=TOKEN, limit=-5)


def test_the_asgi_middleware_bounds_each_request(store: Store) -> None:
    """The ASGI twin takes at most its limit per request, 100 by default, and a set one."""
    send_multi([("alpha", i) for i in range(130)])
    got: list[int] = []
    middleware = asgi_middleware.SignalsMiddleware(RecordingApp(), {"alpha": got.append})
    scope = {"type": "http", "method": "GET", "path": "/", "headers": []}
    asyncio.run(middleware(scope, Exchange().receive, Exchange().send))
    assert got == list(range(100))
    small = asgi_middleware.SignalsMiddleware(RecordingApp(), {"alpha": got.append}, limit=7)
    asyncio.run(small(scope, Exchange().receive, Exchange().send))
    assert got == list(range(107))


def test_the_cron_endpoint_delivers_at_most_its_limit_per_call(store: Store) -> None:
    """Each cron call delivers at most :data:`CRON_LIMIT` (1,000) of each signal by default,
    and ``limit`` sets another bound; the answers count what each call delivered."""
    send_multi([("alpha", i) for i in range(1_500)])
    got: list[int] = []
    auth = {"Authorization": f"Bearer {TOKEN}"}
    endpoint = webtest.TestApp(CronDeliveryApp({"alpha": got.append}, token=TOKEN))
    assert CRON_LIMIT == 1_000
    assert endpoint.get("/", headers=auth).json == {"delivered": 1_000}
    small = webtest.TestApp(CronDeliveryApp({"alpha": got.append}, token=TOKEN, limit=200))
    assert small.get("/", headers=auth).json == {"delivered": 200}
    assert endpoint.get("/", headers=auth).json == {"delivered": 300}
    assert got == list(range(1_500))


def test_flask_reads_its_limit_from_the_app_config(store: Store) -> None:
    """``GAESIGNALS_LIMIT`` bounds the Flask extension's per-request delivery."""
    send_multi([("alpha", i) for i in range(30)])
    got: list[int] = []
    app = Flask("bounded")
    app.config["GAESIGNALS_LIMIT"] = 12
    app.add_url_rule("/", "index", lambda: "index")
    GaeSignals(app, {"alpha": got.append})
    client = app.test_client()
    client.get("/")
    assert got == list(range(12))
    client.get("/")
    assert got == list(range(24))
