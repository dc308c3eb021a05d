"""The dashboard's construction and authentication through WSGI: what it refuses to start with,
tokens, logins, sessions and their CSRF binding, host auth."""

from __future__ import annotations

import logging
from typing import Any

import pytest
import webtest

import gaesignals
from gaesignals import ConfigurationError, dead_letters
from gaesignals.dashboard import TOKEN_ENV, DashboardApp
from gaesignals.dashboard import auth as dashboard_auth
from gaesignals.stores import Store
from tests.dashboard_support import (
    TOKEN,
    bearer,
    csrf_of,
    dead_letter,
    login,
)

CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)


# -- construction ---------------------------------------------------------------------------------


def test_refuses_to_start_without_any_auth() -> None:
    """No token, no auth callable, no trust in the host: a ConfigurationError, not an open page."""
    with pytest.raises(ConfigurationError, match="token"):
        DashboardApp()


def test_refuses_a_short_token(monkeypatch: pytest.MonkeyPatch) -> None:
    """A token under 32 bytes is refused, given as an argument or in the environment."""
    with pytest.raises(ConfigurationError, match="32 bytes"):
        DashboardApp(token="x" * 31)
    monkeypatch.setenv(TOKEN_ENV, "y" * 31)
    with pytest.raises(ConfigurationError, match="32 bytes"):
        DashboardApp()


def test_reads_the_token_from_the_environment(
    gaesignals_store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """GAESIGNALS_DASHBOARD_TOKEN is the bearer token when none is given."""
    monkeypatch.setenv(TOKEN_ENV, TOKEN)
    app = webtest.TestApp(DashboardApp())
    assert app.get("/api/signals", headers=bearer(), status=200).json["store"]["reachable"]


def test_refuses_bad_arguments() -> None:
    """A str for signals, a bad page size or a non-callable auth are programmer errors."""
    with pytest.raises(TypeError):
        DashboardApp("one", token=TOKEN)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="page_size"):
        DashboardApp(token=TOKEN, page_size=0)
    with pytest.raises(TypeError, match="auth"):
        DashboardApp(auth="yes")  # type: ignore[arg-type]
    with pytest.raises(gaesignals.InvalidSignalName):
        DashboardApp([""], token=TOKEN)


# -- auth -----------------------------------------------------------------------------------------

PAGES = ["/", "/signal?name=a", "/api/signals", "/api/signal?name=a", "/metrics", "/nowhere"]


@pytest.mark.parametrize("path", PAGES)
def test_every_answer_carries_the_security_headers(app: webtest.TestApp, path: str) -> None:
    """no-store, the strict CSP, nosniff and no-referrer on every answer: refused or not."""
    for answer in (
        app.get(path, expect_errors=True),
        app.get(path, headers=bearer(), expect_errors=True),
        app.get("/static/dashboard.js"),
        app.get("/login"),
    ):
        assert answer.headers["Cache-Control"] == "no-store"
        assert answer.headers["Content-Security-Policy"] == CSP
        assert answer.headers["X-Content-Type-Options"] == "nosniff"
        assert answer.headers["Referrer-Policy"] == "no-referrer"


@pytest.mark.parametrize(
    "headers",
    [
        {},
        bearer(TOKEN[:-1]),
        bearer(TOKEN + "x"),
        bearer("x" * len(TOKEN)),
        {"Authorization": f"Basic {TOKEN}"},
        {"Authorization": TOKEN},
        {"Cookie": "gaesignals_session=1.forged"},
    ],
    ids=["none", "prefix", "longer", "wrong", "basic", "no-scheme", "forged-cookie"],
)
@pytest.mark.parametrize("path", PAGES)
def test_wrong_credentials_are_refused(
    app: webtest.TestApp, headers: dict[str, str], path: str
) -> None:
    """The API and /metrics answer 401 with a Bearer challenge; pages send to the login form."""
    answer = app.get(path, headers=headers, expect_errors=True)
    if path.startswith("/api/") or path == "/metrics":
        assert answer.status_int == 401
        assert answer.headers["WWW-Authenticate"] == "Bearer"
        assert answer.json == {"error": "unauthorized"}
    else:
        assert answer.status_int == 303
        assert answer.headers["Location"].endswith("/login")


def test_bearer_token_opens_every_route(app: webtest.TestApp) -> None:
    """With the token in the Authorization header, every read route answers."""
    for path in PAGES[:-1]:
        assert app.get(path, headers=bearer()).status_int == 200
    assert app.get("/nowhere", headers=bearer(), status=404).content_type == "text/html"


def test_login_sets_an_httponly_strict_cookie_holding_no_token(app: webtest.TestApp) -> None:
    """The session cookie is HttpOnly and SameSite=Strict, and holds a MAC, not the token."""
    answer = login(app)
    assert answer.status_int == 303 and answer.headers["Location"] == "/"
    cookies = answer.headers.getall("Set-Cookie")
    session = next(c for c in cookies if c.startswith("gaesignals_session="))
    assert "HttpOnly" in session and "SameSite=Strict" in session and "Path=/" in session
    assert TOKEN not in session
    assert "Signals" in app.get("/", status=200).text


def test_a_wrong_login_is_refused(app: webtest.TestApp, caplog: pytest.LogCaptureFixture) -> None:
    """A wrong token at the login form is a 403 with the form again, and no session."""
    with caplog.at_level(logging.WARNING, logger="gaesignals"):
        answer = app.post(
            "/login", {"csrf": csrf_of(app.get("/login")), "token": "nope" * 10}, status=403
        )
    assert "not the token" in answer.text
    assert not any(c.startswith("gaesignals_session") for c in answer.headers.getall("Set-Cookie"))
    assert "wrong dashboard token" in caplog.text
    app.get("/", status=303)


def test_a_login_without_its_csrf_token_is_refused(app: webtest.TestApp) -> None:
    """The login form, too, must be the dashboard's own."""
    app.get("/login")
    app.post("/login", {"token": TOKEN}, status=403)
    app.get("/", status=303)


def test_a_session_expires(browser: webtest.TestApp, monkeypatch: pytest.MonkeyPatch) -> None:
    """Past SESSION_SECONDS the session cookie no longer lets the browser in."""
    later = dashboard_auth._clock() + dashboard_auth.SESSION_SECONDS + 5
    monkeypatch.setattr(dashboard_auth, "_clock", lambda: later)
    browser.get("/", status=303)


def test_logout_ends_the_session(browser: webtest.TestApp) -> None:
    """Logging out (a POST with the CSRF token) clears the session cookie."""
    page = browser.get("/")
    assert page.html.find("form", action="/logout") is not None
    answer = browser.post("/logout", {"csrf": csrf_of(page)}, status=303)
    assert answer.headers["Location"] == "/login"
    browser.get("/", status=303)


def test_host_auth_callable_decides(
    gaesignals_store: Store, caplog: pytest.LogCaptureFixture
) -> None:
    """``auth(environ)`` lets in whom it approves; False or an error is a 403 (no login form)."""

    def operators(environ: dict[str, Any]) -> bool:
        if environ.get("HTTP_X_BOOM"):
            raise RuntimeError("broken check")
        return environ.get("HTTP_X_OPERATOR") == "yes"

    app = webtest.TestApp(DashboardApp(auth=operators))
    assert app.get("/", headers={"X-Operator": "yes"}).status_int == 200
    assert app.get("/", status=403).text.count("You may not use this dashboard") == 1
    app.get("/login", status=404)
    with caplog.at_level(logging.ERROR, logger="gaesignals"):
        app.get("/", headers={"X-Operator": "yes", "X-Boom": "1"}, status=403)
    assert "auth callable raised" in caplog.text


def test_trusted_host_auth_lets_every_request_in(gaesignals_store: Store) -> None:
    """trust_host_auth=True: the host app guards the URL; every request reaching it is in."""
    app = webtest.TestApp(DashboardApp(trust_host_auth=True))
    assert app.get("/api/signals").json["store"]["reachable"] is True
    assert "Log out" not in app.get("/").text  # no login of its own to end


# -- sessions and CSRF binding --------------------------------------------------------------------


def test_logout_ends_the_session_in_every_process(gaesignals_store: Store) -> None:
    """After logging out, the old session cookie replayed is refused, here and by another
    process's app sharing the store."""
    app, other = DashboardApp(token=TOKEN), DashboardApp(token=TOKEN)
    browser = webtest.TestApp(app)
    login(browser)
    session = browser.cookies["gaesignals_session"]
    replayed = {"Cookie": f"gaesignals_session={session}"}
    assert webtest.TestApp(other).get("/", headers=replayed).status_int == 200
    browser.post("/logout", {"csrf": csrf_of(browser.get("/"))}, status=303)
    for dashboard in (app, other):
        answer = webtest.TestApp(dashboard).get("/", headers=replayed, status=303)
        assert answer.headers["Location"] == "/login"


def test_a_new_token_ends_every_session_even_with_a_secret(gaesignals_store: Store) -> None:
    """With ``secret=`` given, a session made under the old token is refused under the new
    one (the session's MAC key is derived from the token)."""
    secret = "the same secret in every process"
    before = webtest.TestApp(DashboardApp(token=TOKEN, secret=secret))
    login(before)
    session = {"Cookie": f"gaesignals_session={before.cookies['gaesignals_session']}"}
    after = webtest.TestApp(DashboardApp(token="another-token-" * 3, secret=secret))
    after.get("/", headers=session, status=303)
    same = webtest.TestApp(DashboardApp(token=TOKEN, secret=secret))
    assert same.get("/", headers=session).status_int == 200


def test_an_anonymous_login_token_cannot_act(browser: webtest.TestApp) -> None:
    """The CSRF pair anyone gets from an anonymous GET /login, planted in an operator's
    browser (as a sibling host can), is refused by the actions: their token is bound to
    the login session."""
    dead_letter("planted", "kept")
    stranger = webtest.TestApp(browser.app)
    form = stranger.get("/login")
    nonce, token = stranger.cookies["gaesignals_csrf"], csrf_of(form)
    browser.set_cookie("gaesignals_csrf", nonce)
    browser.post("/signal/purge", {"name": "planted", "csrf": token}, status=403)
    assert dead_letters("planted") == ["kept"]


def test_a_csrf_token_is_bound_to_its_session(browser: webtest.TestApp) -> None:
    """A page's CSRF token stops working once its session is gone, and another login's page
    token does not work for this one, even with the same nonce cookie."""
    dead_letter("bound2", "kept")
    other = webtest.TestApp(browser.app)
    other.set_cookie("gaesignals_csrf", browser.cookies["gaesignals_csrf"])
    login(other)
    theirs = csrf_of(other.get("/"))
    browser.post("/signal/purge", {"name": "bound2", "csrf": theirs}, status=403)
    mine = csrf_of(browser.get("/"))
    assert mine != theirs
    browser.post("/logout", {"csrf": mine}, status=303)
    login(browser)
    browser.post("/signal/purge", {"name": "bound2", "csrf": mine}, status=403)
    assert dead_letters("bound2") == ["kept"]


def test_behind_host_auth_an_anonymous_pair_cannot_act(gaesignals_store: Store) -> None:
    """With a token and the host's check both, the login form's anonymous CSRF pair does not
    pass for an operator the host let in; a page shown to that operator does, bound to the
    host's REMOTE_USER."""
    app = webtest.TestApp(
        DashboardApp(token=TOKEN, auth=lambda environ: bool(environ.get("REMOTE_USER")))
    )
    dead_letter("hosted", "kept")
    form = app.get("/login")
    operator = {"REMOTE_USER": "ann"}
    anonymous = {"name": "hosted", "csrf": csrf_of(form)}
    app.post("/signal/purge", anonymous, extra_environ=operator, status=403)
    assert dead_letters("hosted") == ["kept"]
    csrf = csrf_of(app.get("/signal", {"name": "hosted"}, extra_environ=operator))
    mallory = {"REMOTE_USER": "mallory"}
    app.post("/signal/purge", {"name": "hosted", "csrf": csrf}, extra_environ=mallory, status=403)
    app.post("/signal/purge", {"name": "hosted", "csrf": csrf}, extra_environ=operator, status=303)
    assert dead_letters("hosted") == []


def test_sessions_live_in_every_store(store: Store) -> None:
    """A login's session is honoured while its record is in the store and refused once
    logging out deleted it, on every kind of store."""
    app = webtest.TestApp(DashboardApp(token=TOKEN))
    login(app)
    session = {"Cookie": f"gaesignals_session={app.cookies['gaesignals_session']}"}
    assert webtest.TestApp(app.app).get("/api/signals", headers=session).status_int == 200
    app.post("/logout", {"csrf": csrf_of(app.get("/"))}, status=303)
    webtest.TestApp(app.app).get("/api/signals", headers=session, status=401)
