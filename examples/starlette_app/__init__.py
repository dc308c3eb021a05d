"""A small Starlette app: a guestbook whose entries are published by a deferred signal.

Run it on the embedded store from the repository's root::

    uvicorn --factory examples.starlette_app:create_app --port 8000

Signing only *sends* ``guestbook`` (``await asend``, which stores without blocking the loop);
the ASGI middleware delivers it at the start of the next request (the redirect that follows),
whose page then shows the entry published. The handler is a coroutine, awaited on the
server's loop; the store calls run in a worker thread.

The browser bridge is mounted at ``/signals`` (``BridgeASGI``, inside the session middleware,
which tells it who the visitor is): the page's script calls ``guestbook.count`` and hears the
answer in its own window, over server-sent events, which an ASGI server streams.
"""

from __future__ import annotations

import html
import logging
import os
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.sessions import SessionMiddleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import Mount, Route

import gaesignals
from gaesignals import SignalMapping, asend, send_to_browser
from gaesignals.asgi import SignalsMiddleware
from gaesignals.browser import Bridge, BrowserCall, csrf_token
from gaesignals.browser.asgi import BridgeASGI
from gaesignals.browser.frameworks import starlette as signals_starlette

logger = logging.getLogger("starlette_app")

GUESTBOOK = "guestbook"
MAX_NAME = 50
MAX_TEXT = 200
MAX_FORM = 4096  # bytes: a form larger than a name and a message is refused

COUNT = "guestbook.count"
#: A development key for the session cookie; set STARLETTE_SECRET_KEY anywhere that matters.
SECRET_KEY = os.environ.get("STARLETTE_SECRET_KEY", "dev-only-" + "s" * 40)

LIVE = """<p><button id=count>How many, live?</button> <output id=counted></output></p>
<script type=module>
import { call, configure, connect } from "/signals/client.js";
configure({ transport: "sse" });
connect("guestbook.counted", (data) => {
  document.getElementById("counted").textContent = `${data.published} published`;
});
document.getElementById("count").onclick = () => call("guestbook.count", {});
</script>
"""

FORM = """<!doctype html><title>Guestbook</title><h1>Guestbook</h1>
<form method=post action="/sign"><input name=name placeholder=name required maxlength=50>
<input name=text placeholder=message required maxlength=200> <button>Sign</button></form>
"""


@dataclass
class Guestbook:
    """The published entries, newest first (one process)."""

    entries: list[dict[str, Any]] = field(default_factory=list)

    async def publish(self, data: Any) -> None:
        """The deferred work, a coroutine handler: publish an entry."""
        self.entries.insert(0, {**data, "published_at": time.time()})
        logger.info("published %r from %s", data["text"], data["name"])

    def count(self, call: BrowserCall) -> None:
        """A browser's call: answer that window with the number of entries published."""
        published = len(self.entries)
        send_to_browser("guestbook.counted", {"published": published}, window=call["window"])

    def page(self) -> str:
        count = len(self.entries)
        items = "".join(
            f"<li><b>{html.escape(e['name'])}</b>: {html.escape(e['text'])} "
            f"<i>({e['published_at'] - e['sent_at']:.3f} s after signing)</i></li>"
            for e in self.entries
        )
        noun = "entry" if count == 1 else "entries"
        return f"{FORM}<p>{count} {noun} published.</p><ul>{items}</ul>\n"


def create_app(book: Guestbook | None = None, *, interval: float = 0) -> Starlette:
    """The app, publishing into ``book`` (a new one by default); ``interval`` goes to the
    middleware (deliver at most that often, in seconds)."""
    book = Guestbook() if book is None else book

    async def index(request: Request) -> Response:
        csrf = csrf_token(signals_starlette.visitor(request.scope))  # keeps a session id
        meta = f'<meta name="gaesignals-csrf" content="{html.escape(csrf)}">'
        return HTMLResponse(meta + book.page() + LIVE)

    async def sign(request: Request) -> Response:
        body = await request.body()
        if len(body) > MAX_FORM:
            return Response("form too large", status_code=413)
        form = parse_qs(body.decode("utf-8", "replace"))
        name = form.get("name", [""])[0].strip()[:MAX_NAME]
        text = form.get("text", [""])[0].strip()[:MAX_TEXT]
        if name and text:
            await asend(GUESTBOOK, {"name": name, "text": text, "sent_at": time.time()})
        return RedirectResponse("/", status_code=303)

    mapping = SignalMapping({GUESTBOOK: book.publish})
    gaesignals.declare(COUNT, from_browser=True, delayed=False)
    gaesignals.connect(COUNT, book.count)
    bridge = BridgeASGI(Bridge(identify=signals_starlette.identify))
    app = Starlette(
        routes=[
            Route("/", index),
            Route("/sign", sign, methods=["POST"]),
            Mount("/signals", app=bridge),
        ],
        middleware=[
            Middleware(SessionMiddleware, secret_key=SECRET_KEY),
            Middleware(SignalsMiddleware, mapping=mapping, interval=interval),
        ],
    )
    app.state.guestbook = book
    return app
