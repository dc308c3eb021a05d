"""What the example's live tests (``test_example_live*``) share: chromium through playwright,
visitors (a browser context each: its own cookies, so its own session) with windows (pages),
the front page's live log read back, and the example served on a port of the test's choosing
(so that a restart comes back where the page left it)."""

from __future__ import annotations

import contextlib
import importlib.util
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any
from wsgiref.simple_server import make_server

from gaesignals.config import get_settings
from gaesignals.pytest_plugin import _missing as missing
from gaesignals.queue.mailboxes import mailbox_key

from .browser_support import CHROMIUM_ARGS, _Quiet, _Server, chromium, need_chromium

#: How long a long-poll waits in these tests: short, so that a server stops within a poll.
POLL_SECONDS = 2.0
#: The console lines a refused call or a stopped server makes chromium print, by design.
EXPECTED_REFUSAL = "the server responded with a status of 403"
EXPECTED_OUTAGE = "net::ERR_CONNECTION_REFUSED"

#: The texts of the live log, oldest first.
LOG = "() => [...document.querySelectorAll('#live-log li')].map(li => li.textContent).reverse()"


@dataclass
class Window:
    """One page load of the front page: a window of the bridge."""

    page: Any
    errors: list[str]

    def log(self) -> list[str]:
        return list(self.page.evaluate(LOG))

    def wait_for_line(self, text: str) -> None:
        """Wait until a line of the live log contains ``text``."""
        self.page.wait_for_function(
            "text => [...document.querySelectorAll('#live-log li')]"
            ".some(li => li.textContent.includes(text))",
            arg=text,
        )

    def lines_with(self, text: str) -> list[str]:
        return [line for line in self.log() if text in line]

    def ping(self, to: str) -> None:
        """Ask the server for a pong to ``to`` (window, session, user or everyone)."""
        self.page.select_option("#ping select", to)
        self.page.click("#ping button")


@dataclass
class Visitor:
    """A browser context (cookies, so a session and a user) and its windows."""

    context: Any
    base: str
    windows: list[Window] = field(default_factory=list)

    def open(self) -> Window:
        """A new window on the front page, once its client is running."""
        page = self.context.new_page()
        errors: list[str] = []
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda error: errors.append(str(error)))
        page.set_default_timeout(20_000)
        page.goto(f"{self.base}/")
        page.wait_for_selector("body[data-live=connected]", state="attached")
        window = Window(page, errors)
        self.windows.append(window)
        return window

    def sign_in(self, user_id: str) -> None:
        """Sign in as ``user_id`` through the front page's form (a fresh page, closed after)."""
        page = self.context.new_page()
        page.goto(f"{self.base}/")
        page.fill("input[name=uid]", user_id)
        page.click("form[action='/user'] button")
        page.wait_for_selector(f"text=you are user {user_id}")
        page.close()


@contextlib.contextmanager
def chromium_browser() -> Iterator[Any]:
    """A headless chromium (skipped where it or playwright is missing, unless under CI)."""
    executable = need_chromium(chromium())
    if importlib.util.find_spec("playwright") is None:
        missing("playwright is not installed (pip install -e . --group test)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as driver:
        browser = driver.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


def visitor(browser: Any, base: str) -> Visitor:
    """A new visitor (a browser context of its own) of the app at ``base``."""
    return Visitor(browser.new_context(viewport={"width": 1000, "height": 800}), base)


def unexpected(errors: list[str], *allowed: str) -> list[str]:
    """The console errors that none of ``allowed`` explains."""
    return [error for error in errors if not any(part in error for part in allowed)]


def evict_mailboxes() -> None:
    """Lose the broadcast ring, as a cache evicting it would (behind the library's back)."""
    settings = get_settings()
    with settings.store.connection() as conn:
        conn.delete_many([mailbox_key("b", "", settings.namespace)])


class Serving:
    """A WSGI app on a fixed loopback port, in a thread, that can stop and start again."""

    def __init__(self, app: Any, port: int = 0) -> None:
        self.app = app
        self.port = port
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        server = make_server("127.0.0.1", self.port, self.app, _Server, _Quiet)
        self.port = server.server_address[1]
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
        self._thread.start()

    def stop(self) -> None:
        """Stop listening, and wait for the requests under way (a long-poll included)."""
        if self._server is None or self._thread is None:
            return
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=POLL_SECONDS + 20)
        self._server = self._thread = None


@contextlib.contextmanager
def serving(app: Any) -> Iterator[Serving]:
    """``app`` served on a free port for the length of the block."""
    served = Serving(app)
    served.start()
    try:
        yield served
    finally:
        served.stop()
