"""A small Flask app: a guestbook whose entries are published by a deferred signal.

Run it on the embedded store from the repository's root::

    flask --app examples.flask_app run --port 8000

Signing only *sends* ``guestbook``; the extension delivers it before the next request (the
redirect that follows), whose page then shows the entry published. The cron blueprint at
``/tasks/deliver-signals`` delivers the same signals for a scheduler (set
``GAESIGNALS_CRON_TOKEN`` to call it with ``Authorization: Bearer <token>``).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from typing import Any

from flask import Flask, current_app, redirect, render_template_string, request
from werkzeug.wrappers import Response

from gaesignals import SignalMapping, send
from gaesignals.contrib.flask import GaeSignals

logger = logging.getLogger("flask_app")

GUESTBOOK = "guestbook"
CRON_PATH = "/tasks/deliver-signals"
MAX_TEXT = 200

PAGE = """<!doctype html><title>Guestbook</title><h1>Guestbook</h1>
<form method=post action="/sign"><input name=name placeholder=name required maxlength=50>
<input name=text placeholder=message required maxlength=200> <button>Sign</button></form>
<p>{{ published|length }} entr{{ "y" if published|length == 1 else "ies" }} published.</p>
<ul>{% for e in published %}<li><b>{{ e.name }}</b>: {{ e.text }}
<i>({{ "%.3f"|format(e.published_at - e.sent_at) }} s after signing)</i></li>{% endfor %}</ul>
"""


def publish(data: Any) -> None:
    """The deferred work: publish an entry. Runs inside the app's context, whether delivered
    before a request, after one, or by the cron blueprint."""
    entry = {**data, "published_at": time.time()}
    current_app.extensions["guestbook"].insert(0, entry)
    logger.info("published %r from %s", entry["text"], entry["name"])


MAPPING = SignalMapping({GUESTBOOK: publish})


def create_app(config: Mapping[str, Any] | None = None) -> Flask:
    """The app; ``config`` overrides the defaults (``GAESIGNALS_*`` keys included)."""
    app = Flask(__name__)
    app.config.update(GAESIGNALS_DELIVER="before", GAESIGNALS_INTERVAL=0)
    app.config.update(config or {})
    app.extensions["guestbook"] = []  # the published entries, newest first (one process)
    signals = GaeSignals(app, MAPPING)
    app.register_blueprint(signals.cron_blueprint(CRON_PATH))

    @app.get("/")
    def index() -> str:
        return render_template_string(PAGE, published=app.extensions["guestbook"])

    @app.post("/sign")
    def sign() -> Response:
        name = request.form.get("name", "").strip()[:50]
        text = request.form.get("text", "").strip()[:MAX_TEXT]
        if name and text:
            send(GUESTBOOK, {"name": name, "text": text, "sent_at": time.time()})
        return redirect("/", code=303)

    return app
