"""``client.js`` in a real browser: Debian's chromium, headless, driven by playwright against
the bridge served on a loopback port. Connect, call, disconnect; one connection whatever the
handlers; reconnecting after server errors with backoff; pausing in a hidden tab and resuming
from its cursor; a reset; server-sent events. No script error in any of them.

Skipped only where chromium is missing and CI is not set; under CI a missing chromium fails.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

import gaesignals
from gaesignals import send_to_browser
from gaesignals.browser import Bridge, BrowserCall
from gaesignals.queue import mailboxes
from gaesignals.stores import Store
from tests.browser_support import serving

from .client_support import Chromium, PageApp, chromium_page, serving_asgi, visitor_from_cookies
from .support import SECRET

pytestmark = pytest.mark.gaesignals_config(secret_key=SECRET)

HIDE = """(hidden) => {
  Object.defineProperty(document, "hidden", { value: hidden, configurable: true });
  Object.defineProperty(document, "visibilityState",
    { value: hidden ? "hidden" : "visible", configurable: true });
  document.dispatchEvent(new Event("visibilitychange"));
}"""


def new_bridge() -> Bridge:
    return Bridge(identify=visitor_from_cookies, poll_seconds=2, poll_interval=0.05)


@pytest.fixture
def browser() -> Iterator[Chromium]:
    with chromium_page() as page:
        yield page


@pytest.fixture
def served(gaesignals_store: Store) -> Iterator[tuple[str, PageApp]]:
    """The test page and the bridge under wsgiref, on a loopback port."""
    app = PageApp(new_bridge())
    with serving(app) as base:
        yield base, app


def open_page(browser: Chromium, base: str, query: str = "user=ann&session=s-ann") -> Any:
    """Load the page and wait until its client has a cursor."""
    browser.page.goto(f"{base}/?{query}")
    assert browser.page.evaluate("() => window.clientReady") is True
    return browser.page


def test_connect_call_and_disconnect(browser: Chromium, served: tuple[str, PageApp]) -> None:
    """A page receives what Python sends it, its call runs a Python handler that answers its
    window, a refused call rejects with its status, and after disconnect() nothing is
    polled until connect() resumes from the cursor."""
    base, _ = served
    calls: list[BrowserCall] = []

    def greet(call: BrowserCall) -> None:
        calls.append(call)
        send_to_browser("news", {"reply": call["data"]}, window=call["window"])

    gaesignals.connect("greet", greet)
    gaesignals.declare("greet", from_browser="authenticated", delayed=False)
    page = open_page(browser, base)
    send_to_browser("news", {"hello": "<b>everyone</b>"}, broadcast=True)
    browser.wait("window.received.length === 1")
    page.evaluate("() => window.signals.call('greet', {n: 1})")
    browser.wait("window.received.length === 2")
    assert page.evaluate("() => window.received") == [
        {"hello": "<b>everyone</b>"},
        {"reply": {"n": 1}},
    ]
    assert calls[0]["user"] == "ann"
    assert calls[0]["window"] == page.evaluate("() => window.signals.windowId")
    refused = page.evaluate(
        "() => window.signals.call('undeclared', 1).then(() => 'ok', (e) => [e.status, e.code])"
    )
    assert refused == [403, "forbidden"]
    page.evaluate("() => window.signals.disconnect()")
    assert page.evaluate("() => window.signals.status().running") is False
    polls = browser.polls()
    send_to_browser("news", "while disconnected", broadcast=True)
    page.evaluate("() => fetch('/signals/client.d.ts').then((r) => r.ok)")
    assert browser.polls() == polls
    page.evaluate("() => window.signals.connect('news', () => {})")
    browser.wait("window.received.length === 3")
    assert page.evaluate("() => window.received[2]") == "while disconnected"
    assert browser.script_errors() == []


def test_one_connection_whatever_the_number_of_handlers(
    browser: Chromium, served: tuple[str, PageApp]
) -> None:
    """Several handlers of several signals share one poll at a time, and each gets its
    signal's messages; an unsubscribed handler gets no more."""
    base, _ = served
    page = open_page(browser, base)
    page.evaluate(
        """() => {
          window.log = [];
          window.offA = window.signals.connect('a', (d) => window.log.push('a1:' + d));
          window.signals.connect('a', (d) => window.log.push('a2:' + d));
          window.signals.connect('b', (d) => window.log.push('b:' + d));
        }"""
    )
    send_to_browser("a", 1, broadcast=True)
    send_to_browser("b", 2, broadcast=True)
    browser.wait("window.log.length === 3")
    page.evaluate("() => window.offA()")
    send_to_browser("a", 3, broadcast=True)
    browser.wait("window.log.length === 4")
    assert page.evaluate("() => window.log") == ["a1:1", "a2:1", "b:2", "a2:3"]
    assert browser.polls() >= 3 and browser.most_open_polls == 1
    assert browser.script_errors() == []


def test_reconnects_after_server_errors_with_backoff(
    browser: Chromium, served: tuple[str, PageApp]
) -> None:
    """Polls that fail are retried after growing, jittered waits; once the server answers
    again the page catches up from its cursor, with nothing lost."""
    base, app = served
    page = open_page(browser, base)
    app.failing.count = 4
    browser.wait("window.signals.status().delays.length >= 1")  # the open poll ended
    send_to_browser("news", "during the outage", broadcast=True)
    browser.wait("window.received.length === 1")
    delays = page.evaluate("() => window.signals.status().delays")
    assert app.failing.failed == 4 and len(delays) == 4
    for failure, delay in enumerate(delays, start=1):
        ceiling = min(400, 50 * 2 ** (failure - 1))
        assert ceiling / 2 <= delay <= ceiling
    assert page.evaluate("() => window.signals.status().failures") == 0
    assert page.evaluate("() => window.received") == ["during the outage"]
    assert browser.script_errors() == []


def test_a_hidden_tab_pauses_and_resumes_from_its_cursor(
    browser: Chromium, served: tuple[str, PageApp]
) -> None:
    """While the page is hidden it holds no poll; shown again, it gets what was sent in the
    meantime (its cursor, not a fresh start)."""
    base, _ = served
    page = open_page(browser, base)
    page.evaluate(f"({HIDE})(true)")
    assert page.evaluate("() => window.signals.status().paused") is True
    polls = browser.polls()
    send_to_browser("news", "sent while hidden", broadcast=True)
    page.evaluate("() => fetch('/signals/client.d.ts').then((r) => r.ok)")
    assert browser.polls() == polls and page.evaluate("() => window.received") == []
    page.evaluate(f"({HIDE})(false)")
    browser.wait("window.received.length === 1")
    assert page.evaluate("() => window.received") == ["sent while hidden"]
    assert browser.script_errors() == []


def test_a_page_whose_messages_were_lost_is_told_to_reset(
    browser: Chromium, served: tuple[str, PageApp], gaesignals_store: Store
) -> None:
    """When the cache loses a mailbox the page had read, its onReset handlers run once, and
    later messages arrive as before."""
    base, _ = served
    page = open_page(browser, base)
    send_to_browser("news", "first", user="ann")
    browser.wait("window.received.length === 1")
    with gaesignals_store.connection() as conn:
        conn.delete_many([mailboxes.mailbox_key("u", "ann", "")])
    send_to_browser("news", "to another window", window="someone-elses")  # wakes the poll
    browser.wait("window.resets === 1")
    send_to_browser("news", "after the reset", broadcast=True)
    browser.wait("window.received.length === 2")
    assert page.evaluate("() => [window.resets, window.received[1]]") == [1, "after the reset"]
    assert browser.script_errors() == []


def test_server_sent_events_deliver_and_resume(browser: Chromium, gaesignals_store: Store) -> None:
    """With ``transport: "sse"`` the page gets messages from an event stream (ASGI, uvicorn),
    including those sent across the stream's end and the browser's reconnection."""
    page_app = PageApp(new_bridge(), transport="sse")
    with serving_asgi(page_app.bridge, page_app) as base:
        page = open_page(browser, base)
        assert page.evaluate("() => window.signals.status().transport") == "sse"
        for n in range(3):
            send_to_browser("news", n, broadcast=True)
        browser.wait("window.received.length === 3")
        with page.expect_request(lambda request: "/signals/events?" in request.url) as again:
            pass  # the 2 s stream ends; the browser's EventSource opens the next one
        assert again.value.all_headers().get("last-event-id")
        send_to_browser("news", 3, broadcast=True)
        browser.wait("window.received.length === 4")
        assert page.evaluate("() => window.received") == [0, 1, 2, 3]
        page.evaluate("() => window.signals.disconnect()")
    assert browser.script_errors() == []


def test_auto_falls_back_to_polling_where_nothing_streams(
    browser: Chromium, gaesignals_store: Store
) -> None:
    """With ``transport: "auto"`` against the WSGI bridge (no event stream), the first stream
    fails and the page polls instead, and gets its messages."""
    app = PageApp(new_bridge(), transport="auto")
    with serving(app) as base:
        page = open_page(browser, base)
        assert page.evaluate("() => window.signals.status().transport") == "poll"
        send_to_browser("news", "polled", broadcast=True)
        browser.wait("window.received.length === 1")
    assert browser.script_errors() == []
