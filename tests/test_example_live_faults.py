"""The example's live page when things go wrong, in a real headless chromium on the in-process
store: the cache loses a window's messages (the page is told to reset), the server restarts
while the page polls (it resumes where it was), and a hidden tab stops polling and catches up
when shown again.

Skipped only where chromium is missing and CI is not set; under CI a missing chromium fails.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from example_app.live import PREFIX, PUBLISHED
from example_app.main import create_app
from gaesignals import send_to_browser
from gaesignals.stores import Store

from .example_app_support import _not_on_app_engine  # noqa: F401 (an autouse fixture)
from .live_support import (
    EXPECTED_OUTAGE,
    POLL_SECONDS,
    Serving,
    Visitor,
    Window,
    chromium_browser,
    evict_mailboxes,
    unexpected,
    visitor,
)

pytestmark = pytest.mark.gaesignals_stores("memory")

CLIENT = f"{PREFIX}/client.js"
#: How many polls the page's client has begun (the module is the page's own, one per URL).
POLLS = f"async () => (await import('{CLIENT}')).status().polls"
#: Makes the page believe it is hidden (or visible again), as a tab switched away from.
SET_HIDDEN = """hidden => {
  Object.defineProperty(document, "hidden", {value: hidden, configurable: true});
  Object.defineProperty(document, "visibilityState",
    {value: hidden ? "hidden" : "visible", configurable: true});
  document.dispatchEvent(new Event("visibilitychange"));
}"""


@pytest.fixture
def served(gaesignals_store: Store) -> Iterator[Serving]:
    server = Serving(create_app(poll_seconds=POLL_SECONDS))
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def guest(served: Serving) -> Iterator[Visitor]:
    """A visitor with two windows."""
    with chromium_browser() as browser:
        found = visitor(browser, served.base)
        found.open(), found.open()
        yield found


def hide(window: Window) -> None:
    """Hide the window's tab, and wait until its client has stopped polling."""
    window.page.evaluate(SET_HIDDEN, True)
    window.page.wait_for_function(f"async () => (await import('{CLIENT}')).status().paused")


def greet(text: str) -> None:
    """Publish a greeting to every window, as the guestbook's handler does."""
    send_to_browser(PUBLISHED, {"text": text, "user": "7", "at": 0, "pid": 0}, broadcast=True)


def test_lost_messages_make_the_page_reset(guest: Visitor) -> None:
    """When the cache loses messages a window had not seen yet, the page is told to reset and
    says so (what came with the reset is for the page to reload), then hears new ones."""
    window, other = guest.windows
    greet("before")
    window.wait_for_line("signed the guestbook: before")
    hide(window)  # not polling while the messages are lost
    greet("lost")
    evict_mailboxes()
    greet("after")
    window.page.evaluate(SET_HIDDEN, False)
    window.wait_for_line("Some live messages were lost; reload the page")
    greet("later")
    window.wait_for_line("signed the guestbook: later")
    assert window.lines_with("signed the guestbook: lost") == []
    other.wait_for_line("signed the guestbook: later")
    assert window.errors == [] and other.errors == []


def test_a_server_restart_mid_poll_resumes_where_it_was(guest: Visitor, served: Serving) -> None:
    """The server stops while both windows poll, a greeting is sent while it is down, and it
    starts again on the same port: both windows reconnect, by themselves, and show it once."""
    first = guest.windows[0]
    polls = []
    first.page.on("request", lambda r: polls.append(r.url) if "/poll" in r.url else None)
    first.page.wait_for_function("() => true")  # the handler is attached
    served.stop()
    greet("while down")
    served.start()
    for window in guest.windows:
        window.wait_for_line("signed the guestbook: while down")
    greet("after the restart")
    for window in guest.windows:
        window.wait_for_line("signed the guestbook: after the restart")
        assert len(window.lines_with("while down")) == 1
        assert unexpected(window.errors, EXPECTED_OUTAGE) == []
    assert any(url.startswith(f"{served.base}{PREFIX}/poll") for url in polls)


def test_a_hidden_tab_stops_polling_and_catches_up(guest: Visitor) -> None:
    """A hidden window stops its poll and makes no request while the other one polls on (two
    of its long-polls begin meanwhile); shown again, it shows what it missed."""
    hidden, shown = guest.windows
    requests: list[str] = []
    hide(hidden)
    hidden.page.on("request", lambda request: requests.append(request.url))
    polls_before = hidden.page.evaluate(POLLS)
    greet("while hidden")
    shown.wait_for_line("signed the guestbook: while hidden")
    mark = shown.page.evaluate(POLLS)
    shown.page.wait_for_function(
        f"async mark => (await import('{CLIENT}')).status().polls >= mark + 2",
        arg=mark,
        timeout=int(POLL_SECONDS * 4 * 1000),
    )
    assert requests == [] and hidden.page.evaluate(POLLS) == polls_before
    assert hidden.lines_with("while hidden") == []
    hidden.page.evaluate(SET_HIDDEN, False)
    hidden.wait_for_line("signed the guestbook: while hidden")
    assert hidden.errors == [] and shown.errors == []
