"""Starlette (and FastAPI): who the visitor is, from ``scope["session"]`` (Starlette's
``SessionMiddleware``) and ``scope["user"]`` (``AuthenticationMiddleware``).

::

    from gaesignals.browser import Bridge, csrf_token
    from gaesignals.browser.asgi import BridgeASGI
    from gaesignals.browser.frameworks import starlette as signals_starlette

    bridge = Bridge(prefix="/signals", identify=signals_starlette.identify)
    routes = [..., Mount("/signals", app=BridgeASGI(bridge))]   # inside the middleware

    async def page(request):
        token = csrf_token(signals_starlette.visitor(request.scope))

It reads the scope only, so it imports nothing of Starlette.
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping, MutableMapping
from typing import Any

from ..visitors import Visitor
from . import SESSION_FIELD


def _user(scope: Mapping[str, Any]) -> str | None:
    user = scope.get("user")
    if user is None or not getattr(user, "is_authenticated", False):
        return None
    name = getattr(user, "identity", None) or getattr(user, "display_name", None)
    return None if not name else str(name)


def visitor(scope: MutableMapping[str, Any]) -> Visitor:
    """The visitor of a request (its scope, in a view): a session id is made and kept in
    the session if it has none, so the page's response saves it."""
    session = scope.get("session")
    if session is None:
        return Visitor(_user(scope), None)
    found = session.get(SESSION_FIELD)
    if not isinstance(found, str):
        found = session[SESSION_FIELD] = secrets.token_urlsafe(24)
    return Visitor(_user(scope), found)


def identify(native: Mapping[str, Any]) -> Visitor:
    """The bridge's ``identify``: the session id kept by :func:`visitor`, and the user."""
    session = native.get("session") or {}
    found = session.get(SESSION_FIELD)
    return Visitor(_user(native), found if isinstance(found, str) else None)
