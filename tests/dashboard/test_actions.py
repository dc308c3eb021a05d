"""The dashboard's actions through WSGI (requeue, purge, deliver now, each behind its CSRF token),
and the dashboard with its store down or failing."""

from __future__ import annotations

import logging
from typing import Any

import pytest
import webtest

import gaesignals
from gaesignals import dead_letters, pending, send
from gaesignals.dashboard import DashboardApp
from gaesignals.stores import Store
from gaesignals.testing import DownStore
from tests.dashboard_support import (
    TOKEN,
    bearer,
    csrf_of,
    dead_letter,
    login,
)

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
    assert (cells[0], cells[10], cells[18]) == ("1", "1", "1")  # pending, dead lettered, dead
    page = app.get("/signal", {"name": "real"})
    assert "{'kept': True}" in page.html.find(id="dead-letters").text
    app.post("/signal/requeue", {"name": "real", "csrf": csrf_of(page)}, status=303)
    assert dead_letters("real") == [] and pending("real")["real"].count == 2
