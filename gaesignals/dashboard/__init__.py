"""A dashboard for the signals: a WSGI app to mount in a host app, or to serve alone.

::

    from gaesignals.dashboard import DashboardApp, Mount

    dashboard = DashboardApp(token=os.environ["GAESIGNALS_DASHBOARD_TOKEN"])
    app = Mount(app, "/ops/signals", dashboard)       # any WSGI app: webapp2, Flask, ...

It lists every registered or declared signal (pending count, bytes, oldest age, due and
delayed, the counters, the reliable lock, dead letters, the store's health), shows one signal
with its dead letters, and delivers it now or requeues or purges its dead letters. ``/metrics``
serves the same numbers to Prometheus. See ``docs/dashboard.md``.

Why no web framework: the dashboard is mounted inside apps built on Flask, Django, webapp2 or
none, and ``import gaesignals`` must never import one. A dozen routes of server-rendered HTML
need only the standard library (:mod:`html`, :mod:`urllib.parse`, :mod:`http.cookies`), and one
static script and stylesheet shipped in the package: no front-end build step, no inline script
(the Content-Security-Policy forbids it). ``prometheus_client`` (the ``dashboard`` extra) writes
``/metrics``.

The modules: :mod:`~gaesignals.dashboard.app` (the routes), :mod:`~.wsgi` (requests, answers,
:class:`Mount`), :mod:`~.auth` (tokens, sessions, CSRF), :mod:`~.pages` (the HTML) and
:mod:`~.metrics` (the Prometheus collector).
"""

from __future__ import annotations

from .app import DashboardApp
from .auth import MIN_TOKEN_BYTES, TOKEN_ENV
from .wsgi import Mount

__all__ = ["MIN_TOKEN_BYTES", "TOKEN_ENV", "DashboardApp", "Mount"]
