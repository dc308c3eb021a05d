"""What the real-browser test and ``scripts/dashboard_screenshot.py`` share: the dashboard
served by wsgiref in a thread on a free loopback port, Debian's chromium driven by playwright,
and a few signals worth looking at."""

from __future__ import annotations

import contextlib
import os
import shutil
import threading
from collections.abc import Iterator
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

import gaesignals
from gaesignals import SignalMapping, deliver, send
from gaesignals.pytest_plugin import _missing as missing
from tests.dashboard_support import HOSTILE_NAME, HOSTILE_PAYLOAD, dead_letter

#: The flags headless chromium needs here (no sandbox in a container, no background traffic).
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


def chromium() -> str | None:
    """The chromium binary, or None when it is not installed."""
    found = shutil.which("chromium") or (
        "/usr/bin/chromium" if os.path.exists("/usr/bin/chromium") else None
    )
    return found


def need_chromium(found: str | None) -> str:
    """``found``, chromium's path; when it is None, the test skips, or fails under CI (a
    browser test CI skipped would hide that the dashboard was never seen in a browser)."""
    if found is None:
        missing("chromium is not installed (apt-get install chromium)")
    return found


class _Server(ThreadingMixIn, WSGIServer):
    daemon_threads = False  # joined at close: nothing runs on after the test
    block_on_close = True


class _Quiet(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


@contextlib.contextmanager
def serving(app: Any) -> Iterator[str]:
    """``app`` on http://127.0.0.1:<free port> for the length of the block; the base URL."""
    server = make_server("127.0.0.1", 0, app, _Server, _Quiet)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


def populate(*, hostile: bool = True) -> None:
    """Signals in several states: a backlog with a delayed payload, a dead letter whose
    payload holds HTML, a quiet one, and (``hostile``) one whose name is markup."""
    gaesignals.declare("orders.paid", reliable=True)
    gaesignals.declare("emails.welcome", reliable=True, max_attempts=1)
    gaesignals.declare("audit.trail")
    for n in range(12):
        send("orders.paid", {"order": n})
    deliver(SignalMapping({"orders.paid": lambda data: None}), reliable=True)
    for n in range(5):
        send("orders.paid", {"order": 100 + n})
    send("orders.paid", {"order": 999}, delay=3600)
    dead_letter("emails.welcome", HOSTILE_PAYLOAD)
    if hostile:
        gaesignals.declare(HOSTILE_NAME)
        send(HOSTILE_NAME, "<i>payload</i>")


def activity(count: int = 30) -> None:
    """Some sends and deliveries, for the chart's rates."""
    for n in range(count):
        send("audit.trail", n)
    deliver(SignalMapping({"audit.trail": lambda data: None}))
