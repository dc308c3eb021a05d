"""Who the visitor is, as each host framework knows them
(:mod:`gaesignals.browser.frameworks`): a page's token and the bridge's ``identify`` agree on
the session, the user reaches the handlers, and another session's cookie is refused."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import flask
import pytest
import webapp2
import webtest
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.sessions import SessionMiddleware
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Mount, Route
from starlette.testclient import TestClient

import gaesignals
from gaesignals.browser import Bridge, BrowserCall, Visitor, csrf_token, mount, session_tag
from gaesignals.browser.asgi import BridgeASGI
from gaesignals.browser.frameworks import REQUEST
from gaesignals.browser.frameworks import flask as signals_flask
from gaesignals.browser.frameworks import starlette as signals_starlette
from gaesignals.browser.frameworks import webapp2 as signals_webapp2
from gaesignals.stores import Store
from tests.django_setup import setup_django

from .support import SECRET

setup_django()

from django.http import HttpResponse  # noqa: E402
from django.test import RequestFactory, override_settings  # noqa: E402

from gaesignals.browser.frameworks import django as signals_django  # noqa: E402
from gaesignals.contrib.django.middleware import (  # noqa: E402
    SignalsMiddleware as DjangoSignalsMiddleware,
)

pytestmark = pytest.mark.gaesignals_config(secret_key=SECRET)

BODY = b'{"data": "hi"}'


@pytest.fixture
def received(gaesignals_store: Store) -> list[BrowserCall]:
    """What the handlers of ``greet`` (callable by authenticated visitors, run at once) got."""
    got: list[BrowserCall] = []
    gaesignals.connect("greet", got.append)
    gaesignals.declare("greet", from_browser="authenticated", delayed=False)
    return got


def call_headers(token: str, host: str = "localhost") -> dict[str, str]:
    return {
        "Content-Type": "application/json",
        "Origin": f"http://{host}",
        "X-GaeSignals-CSRF": token,
        "X-GaeSignals-Window": "window-f1",
    }


def test_django_view_hands_the_request_to_identify(received: list[BrowserCall]) -> None:
    """Served by the Django view, a call's visitor is ``request.user``'s key and
    ``request.session``'s key; a poll answers through the same view."""
    bridge = Bridge(identify=signals_django.identify)
    view = signals_django.view(bridge)
    user = SimpleNamespace(pk=42, is_authenticated=True)
    session = SimpleNamespace(session_key="django-session-key")
    request = RequestFactory().post(
        "/signals/call/greet",
        BODY,
        content_type="application/json",
        headers={k: v for k, v in call_headers("", "testserver").items() if k != "Content-Type"},
    )
    request.user, request.session = user, session
    token = csrf_token(signals_django.visitor(request))
    request.META["HTTP_X_GAESIGNALS_CSRF"] = token
    response = view(request)
    assert response.status_code == 200 and response["Content-Type"] == "application/json"
    assert received == [
        {
            "data": "hi",
            "window": "window-f1",
            "session": session_tag("django-session-key"),
            "user": "42",
        }
    ]
    polled = RequestFactory().get("/signals/poll", {"window": "window-f1"})
    polled.user, polled.session = user, session
    assert view(polled).status_code == 200
    assert signals_django.identify({}) == Visitor()
    assert signals_django.identify({REQUEST: request}) == Visitor("42", "django-session-key")


def test_flask_session_opened_from_the_cookie(received: list[BrowserCall]) -> None:
    """The page's ``visitor()`` keeps a session id in Flask's session; the bridge mounted in
    front of the app reads it and the user from the cookie; without the cookie the page's
    token is refused."""
    app = flask.Flask("browser-test")
    app.secret_key = SECRET

    @app.get("/")
    def page() -> str:
        flask.session["user_id"] = 7
        return csrf_token(signals_flask.visitor())

    app.wsgi_app = mount(  # type: ignore[method-assign]
        Bridge(identify=signals_flask.identify(app)), app.wsgi_app
    )
    client = app.test_client()
    token = client.get("/").get_data(as_text=True)
    answer = client.post("/signals/call/greet", data=BODY, headers=call_headers(token))
    assert answer.status_code == 200, answer.get_data()
    assert received[0]["user"] == "7" and received[0]["session"] is not None
    stranger = app.test_client()
    refused = stranger.post("/signals/call/greet", data=BODY, headers=call_headers(token))
    assert refused.status_code == 403 and len(received) == 1


def test_starlette_session_and_user_from_the_scope(received: list[BrowserCall]) -> None:
    """Mounted inside a Starlette app with SessionMiddleware, the bridge reads the session
    id the page kept and the scope's authenticated user."""

    async def page(request: Request) -> PlainTextResponse:
        request.scope["user"] = SimpleNamespace(is_authenticated=True, identity="ada")
        return PlainTextResponse(csrf_token(signals_starlette.visitor(request.scope)))

    bridge = Bridge(identify=signals_starlette.identify)

    async def authenticated(scope: Any, receive: Any, send: Any) -> None:
        scope["user"] = SimpleNamespace(is_authenticated=True, identity="ada")
        await BridgeASGI(bridge)(scope, receive, send)

    app = Starlette(
        routes=[Route("/", page), Mount("/signals", app=authenticated)],
        middleware=[Middleware(SessionMiddleware, secret_key=SECRET)],
    )
    with TestClient(app, base_url="http://localhost") as client:
        token = client.get("/").text
        answer = client.post("/signals/call/greet", content=BODY, headers=call_headers(token))
        assert answer.status_code == 200, answer.text
        polled = client.get("/signals/poll", params={"window": "window-f1"})
        assert polled.status_code == 200 and "cursor" in polled.json()
    assert received[0]["user"] == "ada" and received[0]["session"] is not None
    assert signals_starlette.identify({}) == Visitor()


def test_webapp2_asks_the_apps_own_functions(received: list[BrowserCall]) -> None:
    """The webapp2 adapter asks the app's functions of a ``webapp2.Request``; the bridge
    mounted beside the app answers below its prefix, the app everything else."""
    identify = signals_webapp2.identify_by(user=lambda request: request.cookies.get("uid"))

    class Page(webapp2.RequestHandler):  # type: ignore[misc]
        def get(self) -> None:
            self.response.write(csrf_token(identify(self.request.environ)))

    app = webtest.TestApp(mount(Bridge(identify=identify), webapp2.WSGIApplication([("/", Page)])))
    app.set_cookie("uid", "u-9")
    app.set_cookie("session", "webapp2-session")
    token = app.get("/").text
    app.post("/signals/call/greet", BODY, headers=call_headers(token, "localhost:80"), status=200)
    assert received == [
        {
            "data": "hi",
            "window": "window-f1",
            "session": session_tag("webapp2-session"),
            "user": "u-9",
        }
    ]


def test_djangos_middleware_never_delivers_on_a_poll(gaesignals_store: Store) -> None:
    """gaesignals' Django middleware passes a bridge's poll to the view without a delivery
    (before or after it), and delivers on other requests."""
    delivered: list[object] = []
    gaesignals.connect("work", delivered.append)
    Bridge(identify=signals_django.identify)
    factory = RequestFactory()
    for when in ("before", "after"):
        with override_settings(GAESIGNALS={"DELIVER": when}):
            middleware = DjangoSignalsMiddleware(lambda request: HttpResponse(b"ok"))
        gaesignals.send("work", when)
        middleware(factory.get("/signals/poll", {"window": "window-f1"})).close()
        assert delivered == [] if when == "before" else delivered == ["before"]
        middleware(factory.get("/elsewhere")).close()
    assert delivered == ["before", "after"]
