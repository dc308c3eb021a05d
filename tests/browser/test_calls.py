"""Calls from the browser (:mod:`gaesignals.browser.calls`) through the WSGI bridge: what a
declared signal's handlers receive, deferred or at once, and every refusal, each one of a few
fixed answers that tell the browser nothing more."""

from __future__ import annotations

from typing import Any

import pytest

import gaesignals
from gaesignals import deliver, pending
from gaesignals.browser import Bridge, BrowserCall, Visitor, session_tag

from .support import ORIGIN, SECRET, WINDOW, bridge_app, call

pytestmark = pytest.mark.gaesignals_config(secret_key=SECRET)

FORBIDDEN = {"ok": False, "error": "forbidden"}
BAD = {"ok": False, "error": "bad-request"}


def waiting(name: str) -> int:
    """How many payloads of ``name`` wait for a delivery."""
    return pending(name)[name].count


@pytest.fixture
def received(gaesignals_store: object) -> list[BrowserCall]:
    """What the handlers of signal ``greet`` (declared callable by anyone) received."""
    got: list[BrowserCall] = []
    gaesignals.connect("greet", got.append)
    gaesignals.declare("greet", from_browser=True)
    return got


def test_a_declared_call_is_sent_for_a_later_delivery(received: list[BrowserCall]) -> None:
    """By default a browser call sends its signal: its handlers run at the next delivery,
    given the data, the page's window, the session's tag and the user."""
    app = bridge_app()
    answer = call(app, "greet", {"name": "Ada"}, user="u-1", session="s-1")
    assert answer.status_int == 200 and answer.json == {"ok": True}
    assert received == [] and waiting("greet") == 1
    deliver()
    assert received == [
        {"data": {"name": "Ada"}, "window": WINDOW, "session": session_tag("s-1"), "user": "u-1"}
    ]


def test_a_call_declared_not_delayed_runs_its_handlers_during_the_call(
    received: list[BrowserCall],
) -> None:
    """``delayed=False`` runs the handlers before the call is answered; nothing is left."""
    gaesignals.declare("greet", delayed=False)
    call(bridge_app(), "greet", [1, 2], session=None, status=200)
    assert received == [{"data": [1, 2], "window": WINDOW, "session": None, "user": None}]
    assert waiting("greet") == 0


def test_a_failing_handler_answers_a_bare_failure(
    gaesignals_store: object, caplog: pytest.LogCaptureFixture
) -> None:
    """A handler's error is logged with its traceback; the browser gets 500 "failed" and
    nothing of the error."""

    def broken(call: BrowserCall) -> None:
        raise RuntimeError("secret internals")

    gaesignals.connect("boom", broken)
    gaesignals.declare("boom", from_browser=True, delayed=False)
    answer = call(bridge_app(), "boom", 1, status=500)
    assert answer.json == {"ok": False, "error": "failed"}
    assert b"secret" not in answer.body and "secret internals" in caplog.text


def test_an_undeclared_signal_is_forbidden(received: list[BrowserCall]) -> None:
    """A signal with receivers but not declared ``from_browser`` is refused, as is one
    declared ``from_browser=False``; nothing is sent."""
    gaesignals.connect("internal", received.append)
    app = bridge_app()
    assert call(app, "internal", 1, status=403).json == FORBIDDEN
    gaesignals.declare("greet", from_browser=False)
    assert call(app, "greet", 1, status=403).json == FORBIDDEN
    assert waiting("internal") == 0 and waiting("greet") == 0


def test_authenticated_signals_refuse_anonymous_visitors(received: list[BrowserCall]) -> None:
    """``from_browser="authenticated"`` lets a visitor with a user in, not one without."""
    gaesignals.declare("greet", from_browser="authenticated", delayed=False)
    app = bridge_app()
    assert call(app, "greet", 1, status=403).json == FORBIDDEN
    call(app, "greet", 2, user="u-1", status=200)
    assert [got["data"] for got in received] == [2]


def test_a_callable_decides_from_the_visitor_and_the_data(received: list[BrowserCall]) -> None:
    """A ``from_browser`` callable is given the visitor and the data; False, or an error
    (logged), refuses."""
    asked: list[tuple[Visitor, Any]] = []

    def only_small(visitor: Visitor, data: Any) -> bool:
        asked.append((visitor, data))
        if data == "raise":
            raise RuntimeError("the check broke")
        return isinstance(data, int) and data < 10

    gaesignals.declare("greet", from_browser=only_small, delayed=False)
    app = bridge_app()
    call(app, "greet", 5, user="u-1", status=200)
    assert call(app, "greet", 50, status=403).json == FORBIDDEN
    assert call(app, "greet", "raise", status=403).json == FORBIDDEN
    assert asked[0] == (Visitor("u-1", "session-1"), 5)
    assert [got["data"] for got in received] == [5]


def test_a_bad_or_missing_csrf_token_is_forbidden(received: list[BrowserCall]) -> None:
    """A call without the token, with a wrong one, or with another session's, is refused."""
    app = bridge_app()
    other = gaesignals.browser.csrf_token("session-2")
    for token in ("", "0" * 40, other):
        answer = call(app, "greet", 1, session="session-1", X_GaeSignals_CSRF=token, status=403)
        assert answer.json == FORBIDDEN
    assert waiting("greet") == 0


def test_another_origin_is_forbidden(received: list[BrowserCall]) -> None:
    """A call from another origin, a "null" one or none is refused; an origin the bridge
    was told to allow is let in."""
    app = bridge_app()
    for origin in ("http://evil.example", "null", ""):
        assert call(app, "greet", 1, Origin=origin, status=403).json == FORBIDDEN
    allowing = bridge_app(allowed_origins=["https://app.example"])
    call(allowing, "greet", 1, Origin="https://app.example", status=200)
    assert waiting("greet") == 1


@pytest.mark.parametrize(
    "body, content_type",
    [
        (b"not json", "application/json"),
        (b'{"data": NaN}', "application/json"),
        (b'["data"]', "application/json"),
        (b'{"other": 1}', "application/json"),
        (b"\xff\xfe", "application/json"),
        (b'{"data": 1}', "text/plain"),
        (b'{"data": 1}', "application/x-www-form-urlencoded"),
    ],
    ids=["not-json", "nan", "not-an-object", "no-data", "not-utf8", "text", "form"],
)
def test_a_body_that_is_not_a_json_call_is_a_bad_request(
    received: list[BrowserCall], body: bytes, content_type: str
) -> None:
    """Only a JSON object ``{"data": ...}`` sent as application/json is a call."""
    answer = call(bridge_app(), "greet", body=body, Content_Type=content_type, status=400)
    assert answer.json == BAD and waiting("greet") == 0


def test_a_body_past_the_declared_size_is_a_bad_request(received: list[BrowserCall]) -> None:
    """A body larger than the signal's ``max_call_bytes`` is refused; one within it is not,
    and no body larger than the bridge reads is read at all."""
    gaesignals.declare("greet", max_call_bytes=100)
    app = bridge_app()
    assert call(app, "greet", "x" * 200, status=400).json == BAD
    call(app, "greet", "x" * 50, status=200)
    assert call(app, "greet", "x" * 100_000, status=400).json == BAD
    assert waiting("greet") == 1


def test_a_schema_that_raises_is_a_bad_request(received: list[BrowserCall]) -> None:
    """A declared ``schema`` sees the data first; raising refuses it."""

    def needs_name(data: Any) -> None:
        if not isinstance(data, dict) or "name" not in data:
            raise ValueError("no name")

    gaesignals.declare("greet", schema=needs_name, delayed=False)
    app = bridge_app()
    assert call(app, "greet", {"nom": 1}, status=400).json == BAD
    call(app, "greet", {"name": "Ada"}, status=200)
    assert [got["data"] for got in received] == [{"name": "Ada"}]


def test_calls_past_the_rate_are_limited_per_session(received: list[BrowserCall]) -> None:
    """A session's calls past ``calls_per_minute`` get 429 with Retry-After; another
    session is not limited by it."""
    app = bridge_app(calls_per_minute=3)
    for _ in range(3):
        call(app, "greet", 1, session="busy", status=200)
    limited = call(app, "greet", 1, session="busy", status=429)
    assert limited.json == {"ok": False, "error": "rate-limited"}
    assert limited.headers["Retry-After"] == "60"
    call(app, "greet", 1, session="quiet", status=200)
    assert waiting("greet") == 4


def test_a_call_must_be_a_post(received: list[BrowserCall]) -> None:
    """GET on a call's URL is 405, and runs nothing."""
    answer = bridge_app().get("/signals/call/greet", headers={"Origin": ORIGIN}, status=405)
    assert answer.json["ok"] is False and waiting("greet") == 0


def test_a_bad_signal_name_is_forbidden(gaesignals_store: object) -> None:
    """A name that cannot be a signal's (empty, too long) is refused like an undeclared one."""
    app = bridge_app()
    assert call(app, "x" * 5000, 1, status=403).json == FORBIDDEN
    assert app.post("/signals/call/", status=403).json == FORBIDDEN


def test_options_that_cannot_work_are_refused_up_front() -> None:
    """A bridge or a declaration whose browser options cannot work raises when made."""
    for options in (
        {"prefix": "signals"},
        {"prefix": "/signals/"},
        {"poll_seconds": 60},
        {"poll_interval": 0},
        {"calls_per_minute": 0},
        {"allowed_origins": "https://one.example"},
    ):
        with pytest.raises((ValueError, TypeError)):
            Bridge(**options)
    for declared in (
        {"from_browser": "admin"},
        {"from_browser": 1.5},
        {"delayed": "no"},
        {"schema": "a schema"},
        {"max_call_bytes": 0},
    ):
        with pytest.raises((ValueError, TypeError)):
            gaesignals.declare("greet", **declared)
    assert gaesignals.registry.spec("greet").from_browser is False
