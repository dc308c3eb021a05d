"""Django: the bridge as a view, and who its visitor is from ``request.user`` and
``request.session``.

::

    from gaesignals.browser import Bridge
    from gaesignals.browser.frameworks import django as signals_django

    bridge = Bridge(prefix="/signals", identify=signals_django.identify)
    urlpatterns = [path("signals/<path:rest>", signals_django.view(bridge))]

The view is exempt from Django's CSRF middleware: the bridge checks its own token (a page
embeds ``csrf_token(signals_django.visitor(request))``). A long poll holds the view's thread
for up to ``poll_seconds``: serve Django with enough threads, or under ASGI mount
:class:`~gaesignals.browser.asgi.BridgeASGI` outside Django's sync views.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Mapping
from typing import Any

from ..._extras import requires
from ..bridge import Bridge
from ..visitors import Visitor
from . import REQUEST

with requires("django"):
    from django.http import HttpRequest, HttpResponse
    from django.views.decorators.csrf import csrf_exempt


def visitor(request: HttpRequest) -> Visitor:
    """The visitor of a Django request: the user's primary key when authenticated, and the
    session key (None before the session is saved)."""
    user = getattr(request, "user", None)
    authenticated = user is not None and bool(user.is_authenticated)
    session = getattr(request, "session", None)
    key = None if session is None else session.session_key
    return Visitor(str(user.pk) if authenticated and user is not None else None, key)


def identify(native: Mapping[str, Any]) -> Visitor:
    """The ``identify`` of a bridge served by :func:`view`: the visitor of the request it
    handed over (anonymous when there is none)."""
    request = native.get(REQUEST)
    return visitor(request) if isinstance(request, HttpRequest) else Visitor()


def view(bridge: Bridge) -> Callable[..., HttpResponse]:
    """A Django view serving ``bridge`` (route ``<prefix>/<path:rest>`` to it)."""

    def serve(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        body = request.body if request.method == "POST" else b""
        environ = dict(request.META)
        environ.update(
            {
                "SCRIPT_NAME": "",
                "PATH_INFO": request.path,
                "CONTENT_LENGTH": str(len(body)),
                "wsgi.input": io.BytesIO(body),
                REQUEST: request,
            }
        )
        started: list[Any] = []
        chunks = bridge(environ, lambda status, headers: started.extend((status, headers)))
        response = HttpResponse(b"".join(chunks), status=int(started[0].split(" ", 1)[0]))
        for name, value in started[1]:
            response[name] = value
        return response

    exempt: Callable[..., HttpResponse] = csrf_exempt(serve)
    return exempt
