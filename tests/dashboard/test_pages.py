"""The dashboard's pages through WSGI: the list and detail pages, their escaping and paging, odd
input refused with a 400, and the mount point."""

from __future__ import annotations

import io
from typing import Any

import pytest
import webtest

import gaesignals
from gaesignals import dead_letters, send
from gaesignals.dashboard import DashboardApp
from gaesignals.keys import MAX_NAME_LENGTH
from gaesignals.stores import Store
from gaesignals.testing import CountingStore
from tests.dashboard_support import (
    HOSTILE_NAME,
    HOSTILE_PAYLOAD,
    TOKEN,
    bearer,
    csrf_of,
    dead_letter,
)

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
    assert cells[6] == "4" and cells[17] == "free" and cells[18] == "0"  # sent, lock, dead
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
