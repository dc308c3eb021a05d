"""The browser bridge mounted in each framework's example (webapp2, Flask, Django, Starlette),
driven through that framework's own test client: the page embeds a CSRF token for the visitor's
session, the bridge serves the client, answers a call from that session (and refuses the same
token from another session), and a poll of the calling window returns the answer."""

from __future__ import annotations

import re
import uuid
from typing import Any

import pytest
import webtest
from starlette.testclient import TestClient

from example_app.main import create_app as create_webapp2_app
from examples.flask_app import create_app as create_flask_app
from examples.starlette_app import create_app as create_starlette_app
from gaesignals.stores import Store
from tests.django_setup import setup_django

from .example_app_support import _not_on_app_engine  # noqa: F401 (an autouse fixture)

setup_django()

from django.test import Client  # noqa: E402

from examples.django_app.guestbook.signals import register_browser_signals  # noqa: E402

CSRF = re.compile(r'<meta name="?gaesignals-csrf"? content="([^"]+)"')
FORBIDDEN = {"ok": False, "error": "forbidden"}

pytestmark = pytest.mark.gaesignals_stores("memory")


def token_of(page: str) -> str:
    found = CSRF.search(page)
    assert found is not None, page[:300]
    return found[1]


def headers(token: str, window: str, origin: str) -> dict[str, str]:
    return {
        "Content-Type": "application/json",
        "X-GaeSignals-CSRF": token,
        "X-GaeSignals-Window": window,
        "Origin": origin,
    }


def signals_of(poll: dict[str, Any]) -> list[tuple[str, Any]]:
    assert poll["reset"] is False and poll["cursor"]
    return [(message["signal"], message["data"]) for message in poll["messages"]]


def test_webapp2_example(gaesignals_store: Store) -> None:
    """The example app (webapp2): ``ping`` to the window answers ``pong`` in that window."""
    app = webtest.TestApp(create_webapp2_app(poll_seconds=1))
    token = token_of(app.get("/").text)
    assert app.get("/signals/client.js").content_type == "text/javascript"
    window = str(uuid.uuid4())
    body = b'{"data": {"to": "window"}}'
    origin = "http://localhost:80"
    answer = app.post("/signals/call/ping", body, headers=headers(token, window, origin))
    assert answer.json == {"ok": True}
    polled = signals_of(app.get(f"/signals/poll?window={window}").json)
    assert [(name, data["to"]) for name, data in polled] == [("pong", "window")]
    stranger = webtest.TestApp(app.app)  # another browser: another session cookie
    stranger.get("/")
    refused = stranger.post(
        "/signals/call/ping", body, headers=headers(token, window, origin), status=403
    )
    assert refused.json == FORBIDDEN


def test_flask_example(gaesignals_store: Store) -> None:
    """Flask: the bridge in front of the app, the visitor from Flask's signed session."""
    app = create_flask_app({"TESTING": True})
    client = app.test_client()
    token = token_of(client.get("/").text)
    assert client.get("/signals/client.js").status_code == 200
    window = str(uuid.uuid4())
    sent = headers(token, window, "http://localhost")
    answer = client.post("/signals/call/guestbook.count", data=b'{"data": {}}', headers=sent)
    assert answer.json == {"ok": True}
    polled = client.get(f"/signals/poll?window={window}").json
    assert polled is not None
    assert signals_of(polled) == [("guestbook.counted", {"published": 0})]
    stranger = app.test_client()
    stranger.get("/")
    refused = stranger.post("/signals/call/guestbook.count", data=b'{"data": {}}', headers=sent)
    assert refused.status_code == 403 and refused.json == FORBIDDEN


def test_django_example(gaesignals_store: Store) -> None:
    """Django: the bridge as a CSRF-exempt view in ``urls.py``, the visitor from the request."""
    register_browser_signals()  # the test suite clears gaesignals' registry before each test
    client = Client()
    token = token_of(client.get("/").content.decode())
    assert client.get("/signals/client.js").status_code == 200
    window = str(uuid.uuid4())
    sent = headers(token, window, "http://testserver")
    del sent["Content-Type"]
    answer = client.post(
        "/signals/call/guestbook.count",
        data=b'{"data": {}}',
        content_type="application/json",
        headers=sent,
    )
    assert answer.json() == {"ok": True}
    polled = client.get(f"/signals/poll?window={window}").json()
    assert signals_of(polled) == [("guestbook.counted", {"published": 0})]
    refused = client.post(
        "/signals/call/guestbook.count",
        data=b'{"data": {}}',
        content_type="application/json",
        headers={**sent, "X-GaeSignals-CSRF": "0" * 40},
    )
    assert refused.status_code == 403 and refused.json() == FORBIDDEN


def test_starlette_example(gaesignals_store: Store) -> None:
    """Starlette: the ASGI bridge mounted inside the session middleware."""
    with TestClient(create_starlette_app()) as client:
        token = token_of(client.get("/").text)
        assert client.get("/signals/client.js").status_code == 200
        window = str(uuid.uuid4())
        sent = headers(token, window, "http://testserver")
        answer = client.post("/signals/call/guestbook.count", content=b'{"data": {}}', headers=sent)
        assert answer.json() == {"ok": True}
        polled = client.get(f"/signals/poll?window={window}").json()
        assert signals_of(polled) == [("guestbook.counted", {"published": 0})]
    with TestClient(create_starlette_app()) as stranger:
        stranger.get("/")
        refused = stranger.post(
            "/signals/call/guestbook.count", content=b'{"data": {}}', headers=sent
        )
        assert refused.status_code == 403 and refused.json() == FORBIDDEN
