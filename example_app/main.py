"""The example's WSGI app: ``gunicorn example_app.main:app`` serves it, locally and on App Engine.

The first-generation runtime called ``appengine_config.webapp_add_wsgi_middleware`` by itself;
the Python 3 runtime does not, so this module does. On App Engine the app is also wrapped with
``wrap_wsgi_app``, which the bundled services (memcache among them) need on Python 3.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from typing import Any

import webapp2

from gaesignals.browser import mount
from gaesignals.config import on_app_engine
from gaesignals.cron import CronDeliveryApp

from . import appengine_config, live
from .handlers import CRON_PATH, ROUTES, Request, not_found
from .signals import CRON_MAPPING

WSGIApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


def create_app(
    *, cron_token: str | None = None, debug: bool = False, poll_seconds: float | None = None
) -> WSGIApp:
    """Build the app; ``cron_token`` (else ``GAESIGNALS_CRON_TOKEN``) lets a caller other than
    App Engine cron trigger the scheduled delivery; ``poll_seconds`` (else
    ``EXAMPLE_POLL_SECONDS``, else 20) is how long a browser's long-poll waits."""
    wsgi = webapp2.WSGIApplication(ROUTES, debug=debug)
    wsgi.request_class = Request
    wsgi.error_handlers[404] = not_found
    app: WSGIApp = wsgi
    app = appengine_config.webapp_add_wsgi_middleware(app)
    cron = CronDeliveryApp(CRON_MAPPING, reliable=True, token=cron_token)
    live.declare_browser_signals()
    if poll_seconds is None:
        poll_seconds = float(os.environ.get("EXAMPLE_POLL_SECONDS", "20"))
    bridge = live.bridge(poll_seconds=poll_seconds)
    # Beside the middleware, not inside it: the bridge's requests (a long-poll above all)
    # never deliver signals.
    app = mount(bridge, _mount(app, {CRON_PATH: cron}))
    if on_app_engine():
        from google.appengine.api import wrap_wsgi_app

        app = wrap_wsgi_app(app)
    return app


def _mount(app: WSGIApp, routes: dict[str, WSGIApp]) -> WSGIApp:
    """Send requests for exactly these paths to their own WSGI apps, the rest to ``app``."""

    def dispatch(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        return routes.get(environ.get("PATH_INFO", ""), app)(environ, start_response)

    return dispatch


app = create_app()
