"""What the real-browser tests of ``client.js`` serve and drive: a page that imports the client
and records what it receives, the bridge beside it (WSGI under wsgiref, or ASGI under
uvicorn), a switch that makes the next polls fail, and chromium through playwright."""

from __future__ import annotations

import contextlib
import importlib.util
import socket
import threading
import time
from collections.abc import Callable, Iterator
from http.cookies import SimpleCookie
from typing import Any
from urllib.parse import parse_qs

import uvicorn

from gaesignals.browser import Bridge, Visitor, csrf_token
from gaesignals.browser.asgi import BridgeASGI
from gaesignals.pytest_plugin import _missing as missing
from tests.async_support import WAIT
from tests.browser_support import CHROMIUM_ARGS, chromium, need_chromium

#: The page: the client imported as a module, its receipts kept on ``window``.
PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>client.js under test</title>
<meta name="gaesignals-csrf" content="{csrf}">
<script type="module">
import * as signals from "/signals/client.js";
window.signals = signals;
window.received = [];
window.resets = 0;
signals.configure({{ backoff: {{ base: 50, max: 400 }}, transport: "{transport}" }});
signals.connect("news", (data) => window.received.push(data));
signals.onReset(() => {{ window.resets += 1; }});
window.clientReady = signals.ready().then(() => true);
</script></head><body><p>client.js under test</p></body></html>
"""


def visitor_from_cookies(native: Any) -> Visitor:
    """The test pages' ``identify``: the visitor named by the ``user`` and ``session``
    cookies (WSGI environ or ASGI scope)."""
    if "headers" in native:
        raw = dict(native["headers"]).get(b"cookie", b"").decode("latin-1")
    else:
        raw = str(native.get("HTTP_COOKIE", ""))
    jar: SimpleCookie = SimpleCookie()
    jar.load(raw)
    user, session = jar.get("user"), jar.get("session")
    return Visitor(user.value if user else None, session.value if session else None)


class Failing:
    """Makes the next ``count`` polls answer 500, as a crashing server would."""

    def __init__(self) -> None:
        self.count = 0
        self.failed = 0
        self._lock = threading.Lock()

    def take(self) -> bool:
        with self._lock:
            if self.count <= 0:
                return False
            self.count -= 1
            self.failed += 1
            return True


class PageApp:
    """A WSGI app serving the test page at ``/?user=&session=`` (setting those cookies) and
    the bridge below ``/signals``, whose polls ``failing`` can break."""

    def __init__(self, bridge: Bridge, transport: str = "poll") -> None:
        self.bridge = bridge
        self.transport = transport
        self.failing = Failing()

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        path = environ.get("PATH_INFO", "")
        if path.startswith("/signals/"):
            if path == "/signals/poll" and self.failing.take():
                start_response("500 Internal Server Error", [("Content-Type", "text/plain")])
                return [b"down"]
            return self.bridge(environ, start_response)
        query = {k: v[0] for k, v in parse_qs(environ.get("QUERY_STRING", "")).items()}
        page = PAGE.format(csrf=csrf_token(query.get("session")), transport=self.transport)
        headers = [("Content-Type", "text/html; charset=utf-8")]
        headers += [("Set-Cookie", f"{k}={v}; Path=/") for k, v in query.items() if v]
        start_response("200 OK", headers)
        return [page.encode()]


@contextlib.contextmanager
def serving_asgi(bridge: Bridge, page: PageApp) -> Iterator[str]:
    """``page``'s page and ``bridge`` as :class:`BridgeASGI` (streams of 2 s), served by
    uvicorn on a loopback port; the base URL."""
    asgi_bridge = BridgeASGI(bridge, stream_seconds=2)

    async def app(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and not scope["path"].startswith("/signals/"):
            query = {k: v[0] for k, v in parse_qs(scope["query_string"].decode()).items()}
            body = PAGE.format(
                csrf=csrf_token(query.get("session") or None), transport=page.transport
            ).encode()
            cookies = [(b"set-cookie", f"{k}={v}; Path=/".encode()) for k, v in query.items()]
            headers = [(b"content-type", b"text/html; charset=utf-8"), *cookies]
            await send({"type": "http.response.start", "status": 200, "headers": headers})
            await send({"type": "http.response.body", "body": body})
            return
        await asgi_bridge(scope, receive, send)

    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    config = uvicorn.Config(app, log_config=None, access_log=False, lifespan="off", ws="none")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [listener]})
    thread.start()
    try:
        deadline = time.monotonic() + WAIT
        while not server.started and thread.is_alive() and time.monotonic() < deadline:
            time.sleep(0.01)
        assert server.started, "uvicorn did not start"
        yield f"http://127.0.0.1:{listener.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(WAIT)
        listener.close()


class Chromium:
    """A headless chromium page, and every console error and page error it saw."""

    def __init__(self, page: Any) -> None:
        self.page = page
        self.errors: list[str] = []
        self.requests: list[str] = []
        page.on("console", lambda m: self.errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda error: self.errors.append(str(error)))
        #: Polls open now, and the most ever open at once.
        self.open_polls = 0
        self.most_open_polls = 0
        page.on("request", self._started)
        page.on("requestfinished", self._ended)
        page.on("requestfailed", self._ended)

    def _started(self, request: Any) -> None:
        self.requests.append(request.url)
        if "/signals/poll?" in request.url:
            self.open_polls += 1
            self.most_open_polls = max(self.most_open_polls, self.open_polls)

    def _ended(self, request: Any) -> None:
        if "/signals/poll?" in request.url:
            self.open_polls -= 1

    def polls(self) -> int:
        return sum("/signals/poll?" in url for url in self.requests)

    def script_errors(self) -> list[str]:
        """The errors but the browser's own notes of an HTTP error answer (which the tests
        cause on purpose: a refused call, a failing poll)."""
        return [e for e in self.errors if not e.startswith("Failed to load resource")]

    def wait(self, expression: str) -> Any:
        """Wait (bounded by the page's timeout) until ``expression`` is truthy in the page."""
        return self.page.wait_for_function(expression).json_value()


@contextlib.contextmanager
def chromium_page() -> Iterator[Chromium]:
    """A fresh headless chromium page (skipped without chromium or playwright, failed under
    CI)."""
    executable = need_chromium(chromium())
    if importlib.util.find_spec("playwright") is None:
        missing("playwright is not installed (pip install -e . --group test)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as driver:
        browser = driver.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        try:
            context = browser.new_context()
            page = context.new_page()
            page.set_default_timeout(15_000)
            yield Chromium(page)
            context.close()
        finally:
            browser.close()
