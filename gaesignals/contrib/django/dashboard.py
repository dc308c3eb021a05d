"""The dashboard in a Django project: a view that hands requests under a URL prefix to a
:class:`~gaesignals.dashboard.DashboardApp`, and the two URL patterns that route to it::

    from django.contrib.admin.views.decorators import staff_member_required
    from django.urls import include, path

    from gaesignals.contrib.django.dashboard import dashboard_urls
    from gaesignals.dashboard import DashboardApp

    dashboard = DashboardApp(trust_host_auth=True)   # Django's staff check guards it
    urlpatterns = [
        path("ops/signals/", include(dashboard_urls(dashboard, wrap=staff_member_required))),
    ]

The view is exempt from Django's CSRF check: every form the dashboard takes carries its own
CSRF token, checked by the dashboard. It works under WSGI and ASGI alike (``request.META``
holds the CGI-style keys the dashboard reads; the body is handed over as read by Django).
"""

from __future__ import annotations

import io
from collections.abc import Callable
from http.cookies import SimpleCookie
from typing import Any

from django.http import HttpResponse
from django.urls import path
from django.views.decorators.csrf import csrf_exempt

from ...dashboard import DashboardApp

View = Callable[..., HttpResponse]


def dashboard_view(app: DashboardApp) -> View:
    """A Django view serving ``app``; its ``path`` argument is the part after the prefix."""

    @csrf_exempt
    def view(request: Any, path: str = "") -> HttpResponse:
        full: str = request.path  # Django's own script name and the path, decoded
        prefix = full[: len(full) - len(path)] if path else full
        body: bytes = request.body
        environ = dict(request.META)
        environ.update(
            {
                "REQUEST_METHOD": request.method,
                "SCRIPT_NAME": prefix.rstrip("/"),
                "PATH_INFO": "/" + path,
                "CONTENT_LENGTH": str(len(body)),
                "wsgi.input": io.BytesIO(body),
                "wsgi.url_scheme": request.scheme,
            }
        )
        answer: dict[str, Any] = {}

        def start_response(status: str, headers: list[tuple[str, str]]) -> None:
            answer.update(status=int(status.split(" ", 1)[0]), headers=headers)

        content = b"".join(app(environ, start_response))
        response = HttpResponse(content, status=answer["status"])
        for name, value in answer["headers"]:
            if name.lower() == "set-cookie":  # several may come; Django keeps them in cookies
                response.cookies.load(SimpleCookie(value))
            else:
                response[name] = value
        return response

    served: View = view
    return served


def dashboard_urls(app: DashboardApp, *, wrap: Callable[[View], View] | None = None) -> list[Any]:
    """The URL patterns to ``include()`` under the dashboard's prefix; ``wrap`` (such as
    ``staff_member_required``) guards the view with the project's own auth."""
    view = dashboard_view(app)
    if wrap is not None:
        view = wrap(view)
    return [path("", view), path("<path:path>", view)]
