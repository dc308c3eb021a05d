"""The dashboard through WSGI: its routes, its refusals, its escaping and its actions."""

from __future__ import annotations

import io
import logging
from collections.abc import Iterator
from typing import Any

import pytest
import webtest

import gaesignals
from gaesignals import ConfigurationError, dead_letters, pending, send
from gaesignals.dashboard import TOKEN_ENV, DashboardApp
from gaesignals.dashboard import auth as dashboard_auth
from gaesignals.keys import MAX_NAME_LENGTH
from gaesignals.stores import Store
from gaesignals.testing import CountingStore, DownStore
from tests.dashboard_support import (
    HOSTILE_NAME,
    HOSTILE_PAYLOAD,
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


@pytest.fixture(autouse=True)
def _no_token_in_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(TOKEN_ENV, raising=False)


@pytest.fixture
def app(gaesignals_store: Store) -> webtest.TestApp:
    """The dashboard over every registered or declared signal, with the test token."""
    return webtest.TestApp(DashboardApp(token=TOKEN))


@pytest.fixture
def browser(app: webtest.TestApp) -> Iterator[webtest.TestApp]:
    """The dashboard with a logged-in browser session."""
    assert login(app).status_int == 303
    yield app


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


# -- pages ----------------------------------------------------------------------------------------


def test_the_list_shows_each_signals_numbers(browser: webtest.TestApp) -> None:
    """Registered and declared signals are listed with pending, bytes, counters and locks."""
    gaesignals.declare("declared", reliable=True)
    gaesignals.connect("connected", lambda data: None)
    for n in range(3):
        send("declared", n)
    send("declared", 9, delay=60)
    page = browser.get("/")
    assert page.content_type == "text/html"
    row = page.html.find("tr", attrs={"data-signal": "declared"})
    cells = [td.text for td in row.find_all("td")]
    assert cells[0] == "4" and int(cells[1]) > 0  # pending, bytes
    assert (cells[3], cells[4]) == ("3", "1")  # due, delayed
    assert cells[6] == "4" and cells[13] == "free" and cells[14] == "0"  # sent, lock, dead
    assert page.html.find("tr", attrs={"data-signal": "connected"}) is not None
    assert page.html.find(id="chart")["data-api"] == "/api/signals?page=1"
    assert "<script>" not in page.text.split("</head>")[1]  # no inline script anywhere


def test_a_given_list_of_names_is_what_is_shown(gaesignals_store: Store) -> None:
    """With ``signals`` given, exactly those names are listed."""
    gaesignals.declare("hidden")
    app = webtest.TestApp(DashboardApp(["only"], token=TOKEN))
    rows = app.get("/api/signals", headers=bearer()).json["signals"]
    assert [row["name"] for row in rows] == ["only"]


def test_names_and_payloads_are_escaped(browser: webtest.TestApp) -> None:
    """A name and a dead letter holding HTML and script appear escaped, never as markup."""
    gaesignals.declare(HOSTILE_NAME, reliable=True)
    dead_letter(HOSTILE_NAME, HOSTILE_PAYLOAD)
    for page in (
        browser.get("/"),
        browser.get("/signal", {"name": HOSTILE_NAME}),
        browser.get("/", {"q": HOSTILE_NAME}),
    ):
        body = page.text
        assert "<script>alert" not in body and "<img" not in body and "</code><script>" not in body
        assert "&lt;script&gt;alert(&quot;name&quot;)&lt;/script&gt;" in body
        assert len(page.html.find_all("script")) == 1  # the static script alone
    detail = browser.get("/signal", {"name": HOSTILE_NAME}).text
    assert "&lt;img src=x onerror=alert(1)&gt;" in detail
    assert "&lt;b&gt;bold&lt;/b&gt;" in detail  # the last error, escaped too


def test_the_detail_page_shows_dead_letters(browser: webtest.TestApp) -> None:
    """Each dead letter with its attempts, send time, last error and a payload preview."""
    dead_letter("dl", {"order": 7})
    page = browser.get("/signal", {"name": "dl"})
    cells = [td.text for td in page.html.find(id="dead-letters").find("tbody").find_all("td")]
    assert cells[0] == "1" and cells[1].endswith("UTC")
    assert "Reject" in cells[2] and cells[3] == "{'order': 7}"
    assert "neither registered nor declared" in page.text


def test_a_long_payload_preview_is_cut(browser: webtest.TestApp) -> None:
    """Previews stop at PREVIEW_CHARS characters."""
    dead_letter("long", "x" * 5000)
    code = browser.get("/signal", {"name": "long"}).html.find(id="dead-letters").find("code")
    assert len(code.text) == 301 and code.text.endswith("…")


@pytest.mark.parametrize(
    "path",
    [
        "/signal",
        "/signal?name=",
        "/signal?name=" + "x" * (MAX_NAME_LENGTH + 1),
        "/?q=" + "x" * 5000,
    ],
    ids=["missing", "empty", "too-long", "too-long-query"],
)
def test_invalid_names_are_400(browser: webtest.TestApp, path: str) -> None:
    """A missing, empty or too long name is a 400 page."""
    answer = browser.get(path, status=400)
    assert "signal name" in answer.text


def test_an_unknown_name_is_an_empty_row(browser: webtest.TestApp) -> None:
    """A name typed into the search box is shown, with zeros, even when nothing knows it."""
    gaesignals.declare("known")
    page = browser.get("/", {"q": "nobody-has-this"})
    names = [row["data-signal"] for row in page.html.find_all("tr", attrs={"data-signal": True})]
    assert names == ["nobody-has-this"]
    assert browser.get("/", {"q": "KNO"}).html.find("tr", attrs={"data-signal": "known"})


def test_unknown_routes_and_methods(browser: webtest.TestApp) -> None:
    """Unknown paths are 404 pages; a wrong method 405 with Allow; bad pages 400."""
    assert "No such page" in browser.get("/signals/x", status=404).text
    assert browser.post("/", status=405).headers["Allow"] == "GET, HEAD"
    assert browser.get("/signal/requeue", status=405).headers["Allow"] == "POST"
    browser.get("/static/other.js", status=404)
    browser.get("/", {"page": "zero"}, status=400)
    browser.get("/", {"page": "-1"}, status=400)
    assert browser.head("/").body == b""


def test_many_signals_are_paged_and_read_in_one_batch(gaesignals_store: Store) -> None:
    """With 1,234 signals the list shows a page of 50 at a time, each page read in two
    round trips (queues; counters, locks and dead letters)."""
    counting = CountingStore(gaesignals_store)
    gaesignals.configure(store=counting)
    names = [f"signal-{n:04d}" for n in range(1234)]
    app = webtest.TestApp(DashboardApp(names, token=TOKEN))
    counting.calls.clear()
    page = app.get("/", {"page": 25}, headers=bearer())
    assert dict(counting.calls) == {"scan_many": 1, "gets_many": 1}
    rows = page.html.find_all("tr", attrs={"data-signal": True})
    assert [row["data-signal"] for row in rows] == names[1200:]
    assert "page 25 of 25, 1234 signal(s)" in page.text
    assert page.html.find("a", rel="prev")["href"] == "/?page=24"
    assert page.html.find("a", rel="next") is None
    last = app.get("/", {"page": 99}, headers=bearer())  # past the end: the last page
    assert "page 25 of 25" in last.text


# -- actions --------------------------------------------------------------------------------------


def test_requeue_moves_the_dead_letters_back(browser: webtest.TestApp) -> None:
    """Requeue (a POST with the CSRF token) puts the dead letters back in the queue."""
    dead_letter("rq", "again")
    page = browser.get("/signal", {"name": "rq"})
    answer = browser.post("/signal/requeue", {"name": "rq", "csrf": csrf_of(page)}, status=303)
    assert answer.headers["Location"] == "/signal?name=rq&done=requeue&n=1"
    assert dead_letters("rq") == [] and pending("rq")["rq"].count == 1
    assert "Requeued 1 dead letter(s)." in answer.follow().text


def test_purge_deletes_the_dead_letters(browser: webtest.TestApp) -> None:
    """Purge deletes them."""
    dead_letter("pg", "gone")
    csrf = csrf_of(browser.get("/"))
    browser.post("/signal/purge", {"name": "pg", "csrf": csrf}, status=303)
    assert dead_letters("pg") == [] and pending("pg")["pg"].count == 0


def test_deliver_now_runs_the_mappings_handlers(gaesignals_store: Store) -> None:
    """Deliver now delivers the signal with the dashboard's mapping, or says none is known."""
    got: list[Any] = []
    app = webtest.TestApp(DashboardApp(gaesignals.SignalMapping({"dn": got.append}), token=TOKEN))
    login(app)
    send("dn", 1)
    send("other", 2)
    csrf = csrf_of(app.get("/"))
    answer = app.post("/signal/deliver", {"name": "dn", "csrf": csrf}, status=303).follow()
    assert got == [1] and "Delivered 1 payload(s)." in answer.text
    answer = app.post("/signal/deliver", {"name": "other", "csrf": csrf}, status=303).follow()
    assert "nothing was delivered" in answer.text and pending("other")["other"].count == 1


@pytest.mark.parametrize(
    "csrf", [None, "", "0" * 64, "forged"], ids=["missing", "empty", "zeros", "forged"]
)
@pytest.mark.parametrize("verb", ["requeue", "purge", "deliver"])
def test_forged_or_missing_csrf_changes_nothing(
    browser: webtest.TestApp, csrf: str | None, verb: str
) -> None:
    """Without the page's own CSRF token an action is a 403 and nothing changes."""
    gaesignals.connect("cs", lambda data: None)
    dead_letter("cs", "kept")
    send("cs", "pending")
    form = {"name": "cs"} if csrf is None else {"name": "cs", "csrf": csrf}
    assert "nothing was changed" in browser.post(f"/signal/{verb}", form, status=403).text
    assert dead_letters("cs") == ["kept"] and pending("cs")["cs"].count == 1


def test_another_browsers_csrf_token_is_refused(gaesignals_store: Store) -> None:
    """A CSRF token is bound to its browser's nonce cookie: another browser's is refused."""
    dashboard = DashboardApp(token=TOKEN)
    mine, theirs = webtest.TestApp(dashboard), webtest.TestApp(dashboard)
    login(mine)
    login(theirs)
    dead_letter("bound", "kept")
    stolen = csrf_of(theirs.get("/"))
    mine.post("/signal/purge", {"name": "bound", "csrf": stolen}, status=403)
    assert dead_letters("bound") == ["kept"]


def test_actions_refuse_bad_forms(browser: webtest.TestApp) -> None:
    """An oversized body is 413, a non-form body 415, a bad name 400."""
    csrf = csrf_of(browser.get("/"))
    browser.post("/signal/purge", {"name": "x" * 20_000, "csrf": csrf}, status=413)
    browser.post("/signal/purge", b"{}", content_type="application/json", status=415)
    browser.post("/signal/purge", {"name": "", "csrf": csrf}, status=400)


# -- the store down -------------------------------------------------------------------------------


def test_a_store_that_is_down_is_shown_not_raised(gaesignals_store: Store) -> None:
    """Every page says the store is unavailable; actions are 503; nothing raises."""
    gaesignals.declare("d")
    app = webtest.TestApp(
        DashboardApp(token=TOKEN), extra_environ={"HTTP_AUTHORIZATION": f"Bearer {TOKEN}"}
    )
    gaesignals.configure(store=DownStore("memcached at 127.0.0.1:1 is down"))
    for page in (app.get("/"), app.get("/signal", {"name": "d"})):
        assert page.status_int == 200
        assert "The store is unavailable" in page.html.find(id="store").text
        assert "Traceback" not in page.text
    assert app.get("/api/signals").json["store"] == {
        "reachable": False,
        "error": "StoreUnavailable: memcached at 127.0.0.1:1 is down",
        "latency_ms": None,
    }
    csrf = csrf_of(app.get("/signal", {"name": "d"}))
    for verb in ("requeue", "purge"):
        answer = app.post(f"/signal/{verb}", {"name": "d", "csrf": csrf}, status=503)
        assert "nothing was done" in answer.text


def test_a_store_that_is_down_keeps_no_session(gaesignals_store: Store) -> None:
    """The store keeps the login sessions: while it is down a session is not honoured (it
    might have been logged out) and logging in answers 503 saying why; the token still works."""
    app = webtest.TestApp(DashboardApp(token=TOKEN))
    login(app)
    gaesignals.configure(store=DownStore("memcached at 127.0.0.1:1 is down"))
    assert app.get("/", status=303).headers["Location"] == "/login"
    answer = app.post("/login", {"csrf": csrf_of(app.get("/login")), "token": TOKEN}, status=503)
    assert "The store is unavailable" in answer.text
    assert not any(c.startswith("gaesignals_session=") for c in answer.headers.getall("Set-Cookie"))
    assert app.get("/", headers=bearer()).status_int == 200


def test_an_unforeseen_error_is_a_500_page(
    browser: webtest.TestApp, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A bug inside a page is logged with its traceback; the answer is a plain 500 page."""

    def broken(*args: Any, **kwargs: Any) -> None:
        raise RuntimeError("secret detail")

    monkeypatch.setattr("gaesignals.dashboard.app.pages.signal_list", broken)
    with caplog.at_level(logging.ERROR, logger="gaesignals"):
        answer = browser.get("/", status=500)
    assert "secret detail" not in answer.text and "secret detail" in caplog.text


@pytest.mark.parametrize("store_kind", ["memory", "memcached"])
def test_pages_and_actions_on_a_real_memcached(store: Store) -> None:
    """The list, a signal's page and requeue read and change a real memcached as they do
    the memory store."""
    gaesignals.declare("real", reliable=True)
    dead_letter("real", {"kept": True})
    send("real", 2)
    app = webtest.TestApp(DashboardApp(token=TOKEN))
    login(app)
    row = app.get("/").html.find("tr", attrs={"data-signal": "real"})
    cells = [td.text for td in row.find_all("td")]
    assert (cells[0], cells[9], cells[14]) == ("1", "1", "1")  # pending, dead lettered, dead
    page = app.get("/signal", {"name": "real"})
    assert "{'kept': True}" in page.html.find(id="dead-letters").text
    app.post("/signal/requeue", {"name": "real", "csrf": csrf_of(page)}, status=303)
    assert dead_letters("real") == [] and pending("real")["real"].count == 2


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


# -- odd input ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "query",
    [
        {"done": "purge", "n": "9" * 5000},
        {"done": "purge", "n": "²"},
        {"done": "purge", "n": "-1"},
        {"done": "nothing", "n": "1"},
        {"page": "9" * 5000},
        {"page": "²"},
    ],
    ids=["n-5000-digits", "n-superscript", "n-negative", "done-unknown", "page-5000", "page-sup"],
)
def test_bad_query_values_are_400(browser: webtest.TestApp, query: dict[str, str]) -> None:
    """A count that is not ASCII digits (or is absurdly long) or an unknown action is a 400."""
    path = "/signal" if "done" in query else "/"
    answer = browser.get(path, {"name": "a", **query} if path == "/signal" else query, status=400)
    assert "Traceback" not in answer.text


@pytest.mark.parametrize("length", ["²", "9" * 5000, "x"])
def test_a_bad_content_length_is_400(gaesignals_store: Store, length: str) -> None:
    """A Content-Length that is not a count is a 400, whatever int() would make of it."""
    environ: dict[str, Any] = {
        "REQUEST_METHOD": "POST",
        "PATH_INFO": "/signal/purge",
        "CONTENT_LENGTH": length,
        "CONTENT_TYPE": "application/x-www-form-urlencoded",
        "wsgi.input": io.BytesIO(b"name=a"),
    }
    started: list[str] = []
    body = DashboardApp(trust_host_auth=True)(environ, lambda status, _: started.append(status))
    assert started == ["400 Bad Request"] and b"Bad length" in b"".join(body)


def test_odd_host_values_are_not_errors(gaesignals_store: Store) -> None:
    """A REMOTE_USER with a lone surrogate and cookies of junk get pages, not 500s."""
    app = webtest.TestApp(DashboardApp(trust_host_auth=True, token=TOKEN))
    environ = {"REMOTE_USER": "ann\udc80", "HTTP_COOKIE": "gaesignals_session=1.é.\xff; x=ÿ"}
    assert app.get("/", extra_environ=environ).status_int == 200


def test_a_name_with_a_lone_surrogate_is_shown_exported_and_acted_on(
    browser: webtest.TestApp,
) -> None:
    """A signal named with a lone surrogate (possible from JSON) is listed escaped, exported
    to /metrics escaped, and its page's link and purge reach that very signal."""
    odd = "odd\ud800name"
    gaesignals.declare(odd, reliable=True)
    dead_letter(odd, "kept")
    page = browser.get("/")
    row = page.html.find("tr", attrs={"data-signal": "odd\\ud800name"})
    assert row is not None and row.find("a").text == "odd\\ud800name"
    metrics = browser.get("/metrics").text
    assert 'gaesignals_dead_letters{signal="odd\\\\ud800name"} 1.0' in metrics
    detail = browser.get(row.find("a")["href"])
    assert detail.html.find("h1").text == "odd\\ud800name"
    assert "'kept'" in detail.html.find(id="dead-letters").text
    form = detail.html.find("form", action=lambda action: "/signal/purge" in action)
    browser.post(form["action"], {"csrf": csrf_of(detail)}, status=303)
    assert dead_letters(odd) == []


# -- the mount point ------------------------------------------------------------------------------


def test_a_script_name_of_two_slashes_stays_a_path(gaesignals_store: Store) -> None:
    """SCRIPT_NAME //evil.example gives redirects, links and cookies under the path
    /evil.example, never a URL of another host."""
    app = webtest.TestApp(
        DashboardApp(token=TOKEN), extra_environ={"SCRIPT_NAME": "//evil.example"}
    )
    assert app.get("/", status=303).headers["Location"] == "/evil.example/login"
    form = app.get("/login")
    assert 'action="/evil.example/login"' in form.text and "//evil" not in form.text
    assert "Path=/evil.example;" in form.headers["Set-Cookie"]
    nonce = form.headers["Set-Cookie"].split(";")[0]  # webtest keeps it for its own paths
    fields = {"csrf": csrf_of(form), "token": TOKEN}
    answer = app.post("/login", fields, headers={"Cookie": nonce}, status=303)
    assert answer.headers["Location"] == "/evil.example/"


def test_sessions_live_in_every_store(store: Store) -> None:
    """A login's session is honoured while its record is in the store and refused once
    logging out deleted it, on every kind of store."""
    app = webtest.TestApp(DashboardApp(token=TOKEN))
    login(app)
    session = {"Cookie": f"gaesignals_session={app.cookies['gaesignals_session']}"}
    assert webtest.TestApp(app.app).get("/api/signals", headers=session).status_int == 200
    app.post("/logout", {"csrf": csrf_of(app.get("/"))}, status=303)
    webtest.TestApp(app.app).get("/api/signals", headers=session, status=401)
