"""A small Flask app: a guestbook whose entries are published by a deferred signal.

Run it on the embedded store from the repository's root::

    flask --app examples.flask_app run --port 8000

Signing only *sends* ``guestbook``; the extension delivers it before the next request (the
redirect that follows), whose page then shows the entry published. The cron blueprint at
``/tasks/deliver-signals`` delivers the same signals for a scheduler (set
``GAESIGNALS_CRON_TOKEN`` to call it with ``Authorization: Bearer <token>``).

The browser bridge is mounted at ``/signals`` in front of the app (``mount``): the page's
script calls ``guestbook.count`` and hears the answer in its own window; who the visitor is
comes from Flask's session (``gaesignals.browser.frameworks.flask``).
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Mapping
from typing import Any

from flask import Flask, current_app, redirect, render_template_string, request
from werkzeug.wrappers import Response

import gaesignals
from gaesignals import SignalMapping, send, send_to_browser
from gaesignals.browser import Bridge, BrowserCall, csrf_token, mount
from gaesignals.browser.frameworks import flask as signals_flask
from gaesignals.contrib.flask import GaeSignals

logger = logging.getLogger("flask_app")

GUESTBOOK = "guestbook"
CRON_PATH = "/tasks/deliver-signals"
MAX_TEXT = 200

COUNT = "guestbook.count"

PAGE = """<!doctype html><title>Guestbook</title>
<meta name="gaesignals-csrf" content="{{ csrf }}"><h1>Guestbook</h1>
<form method=post action="/sign"><input name=name placeholder=name required maxlength=50>
<input name=text placeholder=message required maxlength=200> <button>Sign</button></form>
<p>{{ published|length }} entr{{ "y" if published|length == 1 else "ies" }} published.</p>
<ul>{% for e in published %}<li><b>{{ e.name }}</b>: {{ e.text }}
<i>({{ "%.3f"|format(e.published_at - e.sent_at) }} s after signing)</i></li>{% endfor %}</ul>
<p><button id=count>How many, live?</button> <output id=counted></output></p>
<script type=module>
import { call, connect } from "/signals/client.js";
connect("guestbook.counted", (data) => {
  document.getElementById("counted").textContent = `${data.published} published`;
});
document.getElementById("count").onclick = () => call("guestbook.count", {});
</script>
"""


def publish(data: Any) -> None:
    """The deferred work: publish an entry. Runs inside the app's context, whether delivered
    before a request, after one, or by the cron blueprint."""
    entry = {**data, "published_at": time.time()}
    current_app.extensions["guestbook"].insert(0, entry)
    logger.info("published %r from %s", entry["text"], entry["name"])


MAPPING = SignalMapping({GUESTBOOK: publish})


def count(call: BrowserCall) -> None:
    """A browser's call: answer that window with the number of entries published."""
    published = len(current_app.extensions["guestbook"])
    send_to_browser("guestbook.counted", {"published": published}, window=call["window"])


def create_app(config: Mapping[str, Any] | None = None) -> Flask:
    """The app; ``config`` overrides the defaults (``GAESIGNALS_*`` keys included)."""
    app = Flask(__name__)
    app.config.update(GAESIGNALS_DELIVER="before", GAESIGNALS_INTERVAL=0)
    app.config["SECRET_KEY"] = os.environ.get("FLASK_SECRET_KEY", "dev-only-" + "f" * 40)
    app.config.update(config or {})
    app.extensions["guestbook"] = []  # the published entries, newest first (one process)
    signals = GaeSignals(app, MAPPING)
    app.register_blueprint(signals.cron_blueprint(CRON_PATH))
    gaesignals.declare(COUNT, from_browser=True, delayed=False)
    gaesignals.connect(COUNT, _in_app_context(app, count))
    app.wsgi_app = mount(Bridge(identify=signals_flask.identify(app)), app.wsgi_app)

    @app.get("/")
    def index() -> str:
        csrf = csrf_token(signals_flask.visitor())  # keeps a session id in Flask's session
        return render_template_string(PAGE, published=app.extensions["guestbook"], csrf=csrf)

    @app.post("/sign")
    def sign() -> Response:
        name = request.form.get("name", "").strip()[:50]
        text = request.form.get("text", "").strip()[:MAX_TEXT]
        if name and text:
            send(GUESTBOOK, {"name": name, "text": text, "sent_at": time.time()})
        return redirect("/", code=303)

    return app


def _in_app_context(app: Flask, handler: Callable[[BrowserCall], None]) -> Callable[..., None]:
    """``handler`` run inside ``app``'s context: the bridge serves its calls in front of Flask."""

    def run(call: BrowserCall) -> None:
        with app.app_context():
            handler(call)

    return run
