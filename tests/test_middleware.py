"""SignalsMiddleware: delivery at the start of each request, never breaking it."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

import pytest

import gaesignals
from gaesignals import SignalsMiddleware, send
from gaesignals.stores import Store
from gaesignals.stores.memory import MemoryStore
from gaesignals.testing import CountingStore, DownStore


class App:
    """A WSGI app that records what it saw and returns a closable iterable."""

    def __init__(self, seen_at_call: list[Any]) -> None:
        self.seen_at_call = seen_at_call
        self.calls = 0
        self.body = ClosingBody([b"hello"])

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        self.calls += 1
        self.seen_at_call.append(list(environ.get("delivered", [])))
        start_response("200 OK", [("Content-Type", "text/plain")])
        return self.body


class ClosingBody(list[bytes]):
    closed = False

    def close(self) -> None:
        self.closed = True


def test_delivers_before_the_app_runs(store: Store) -> None:
    """Handlers have run by the time the app sees the request; its iterable is untouched."""
    delivered: list[Any] = []
    seen: list[Any] = []
    app = App(seen)

    def handler(data: Any) -> None:
        delivered.append(data)

    wrapped = SignalsMiddleware(app, [("greet", handler)])
    send("greet", "hi")
    environ: dict[str, Any] = {"delivered": delivered}
    body = wrapped(environ, lambda *a: None)
    assert body is app.body
    assert seen == [["hi"]]
    wrapped(environ, lambda *a: None)
    assert delivered == ["hi"]  # not twice
    assert app.calls == 2


def test_handler_errors_never_escape(store: Store, caplog: pytest.LogCaptureFixture) -> None:
    """A raising handler is logged and the request is served anyway."""

    def broken(data: Any) -> None:
        raise KeyError("handler bug")

    app = App([])
    wrapped = SignalsMiddleware(app, {"oops": broken})
    send("oops", 1)
    with caplog.at_level(logging.ERROR, logger="gaesignals"):
        assert list(wrapped({}, lambda *a: None)) == [b"hello"]
    assert "handler bug" in caplog.text and "'oops'" in caplog.text


def test_store_outage_is_logged_and_the_request_served(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """With the store down, each request is served as if nothing were pending, and the
    outage is logged once for it."""
    gaesignals.configure(store=DownStore("the cache is down"))
    app = App([])
    wrapped = SignalsMiddleware(app, {"greet": print})
    with caplog.at_level(logging.ERROR, logger="gaesignals"):
        assert wrapped({}, lambda *a: None) is app.body
    assert app.calls == 1
    assert [r.getMessage() for r in caplog.records] == [
        "no delivery for this request: the cache is down"
    ]


def test_reliable_middleware_retries_on_next_request(store: Store) -> None:
    """With reliable=True a failed payload waits for the next request."""
    gaesignals.declare("retry", retry_delay=0)  # a failed payload is retried at once
    attempts: list[Any] = []

    def once_failing(data: Any) -> None:
        attempts.append(data)
        if len(attempts) == 1:
            raise RuntimeError("first time fails")

    wrapped = SignalsMiddleware(App([]), [("retry", once_failing)], reliable=True, lease=5)
    send("retry", "job")
    wrapped({}, lambda *a: None)
    wrapped({}, lambda *a: None)
    wrapped({}, lambda *a: None)
    assert attempts == ["job", "job"]


def test_bad_mapping_fails_at_construction() -> None:
    """A mapping error is a programming error: raised when the middleware is built."""
    with pytest.raises(TypeError):
        SignalsMiddleware(App([]), [("x", 42)])  # type: ignore[list-item]


def test_interval_limits_deliveries_per_process() -> None:
    """With interval=N the middleware delivers at most once per N seconds of its clock, and
    the requests in between make no cache call at all."""
    store = CountingStore(MemoryStore())
    gaesignals.configure(store=store)
    now = [100.0]
    got: list[Any] = []
    wrapped = SignalsMiddleware(App([]), [("tick", got.append)], interval=5, clock=lambda: now[0])
    send("tick", 1)
    store.calls.clear()
    wrapped({}, lambda *a: None)
    # One read, one reset (the counters ride in it), and the first delivery's lost counter.
    assert got == [1] and store.total == 3
    send("tick", 2)
    store.calls.clear()
    for _ in range(10):
        now[0] += 0.4
        wrapped({}, lambda *a: None)
    assert got == [1] and store.total == 0
    now[0] += 1.1
    wrapped({}, lambda *a: None)
    assert got == [1, 2]
