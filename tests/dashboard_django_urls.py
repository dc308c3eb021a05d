"""URLs of the Django dashboard test: the dashboard under ``ops/signals/``, behind a stand-in
for the project's own auth (``X-Operator: yes``), as ``staff_member_required`` would guard it."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from django.http import HttpResponse, HttpResponseForbidden
from django.urls import include, path

from gaesignals.contrib.django.dashboard import dashboard_urls
from gaesignals.dashboard import DashboardApp


def operators_only(view: Callable[..., HttpResponse]) -> Callable[..., HttpResponse]:
    def guarded(request: Any, **kwargs: Any) -> HttpResponse:
        if request.META.get("HTTP_X_OPERATOR") != "yes":
            return HttpResponseForbidden("operators only")
        return view(request, **kwargs)

    return guarded


dashboard = DashboardApp(trust_host_auth=True, secret="a fixed key for the test processes")
#: A prefix latin-1 cannot hold: Django hands the dashboard decoded text, not PEP 3333's.
UNICODE_PREFIX = "ops/сигналы/"
urlpatterns = [
    path("ops/signals/", include(dashboard_urls(dashboard, wrap=operators_only))),
    path(UNICODE_PREFIX, include(dashboard_urls(dashboard, wrap=operators_only))),
]
