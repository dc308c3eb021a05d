"""webapp2: who the visitor is, asked of the application's own code with a
``webapp2.Request``.

webapp2 has no one way to log in or keep sessions (a cookie, ``webapp2_extras.sessions``, App
Engine's users): the app says how, and the same functions serve its pages::

    from gaesignals.browser import Bridge, csrf_token, mount
    from gaesignals.browser.frameworks import webapp2 as signals_webapp2

    identify = signals_webapp2.identify_by(user=lambda request: request.cookies.get("uid"))
    bridge = Bridge(identify=identify)
    app = mount(bridge, webapp2.WSGIApplication(routes))

    class Page(webapp2.RequestHandler):
        def get(self):
            token = csrf_token(identify(self.request.environ))
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from ..._extras import requires
from ..visitors import Identify, Visitor

with requires("example"):
    import webapp2

Ask = Callable[["webapp2.Request"], "str | None"]


def _session_cookie(request: webapp2.Request) -> str | None:
    found = request.cookies.get("session")
    return found or None


def identify_by(user: Ask, session: Ask = _session_cookie) -> Identify:
    """An ``identify`` asking ``user(request)`` and ``session(request)`` (by default the
    ``session`` cookie, as ``webapp2_extras.sessions`` names it) of the request."""

    def identify_visitor(native: Mapping[str, Any]) -> Visitor:
        request = webapp2.Request(dict(native))
        return Visitor(user(request), session(request))

    return identify_visitor
