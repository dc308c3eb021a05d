"""Flask: who the visitor is, from Flask's session (a signed cookie).

::

    from gaesignals.browser import Bridge, csrf_token
    from gaesignals.browser.frameworks import flask as signals_flask

    bridge = Bridge(identify=signals_flask.identify(app))
    app.wsgi_app = mount(bridge, app.wsgi_app)            # or any WSGI dispatch

    @app.get("/")
    def page():
        token = csrf_token(signals_flask.visitor())       # keeps a session id in the session

``identify`` opens the session from the request's cookie as Flask would, without a request
context, so the bridge may be mounted in front of the app; the user's id is read from the
session's ``user_key`` (``"user_id"`` by default).
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping
from typing import Any

from ..._extras import requires
from ..visitors import Identify, Visitor
from . import SESSION_FIELD

with requires("flask"):
    from flask import Flask, session


def visitor(user_key: str = "user_id") -> Visitor:
    """The visitor of the current request (call it in a view): a session id is made and kept
    in the session if it has none, so the page's response saves it."""
    found = session.get(SESSION_FIELD)
    if not isinstance(found, str):
        found = session[SESSION_FIELD] = secrets.token_urlsafe(24)
    user = session.get(user_key)
    return Visitor(None if user is None else str(user), found)


def identify(app: Flask, user_key: str = "user_id") -> Identify:
    """The bridge's ``identify`` for ``app``: its session, opened from the request's cookie."""

    def identify_visitor(native: Mapping[str, Any]) -> Visitor:
        request = app.request_class(dict(native))
        opened = app.session_interface.open_session(app, request)
        if opened is None:
            return Visitor()
        found = opened.get(SESSION_FIELD)
        user = opened.get(user_key)
        return Visitor(
            None if user is None else str(user), found if isinstance(found, str) else None
        )

    return identify_visitor
