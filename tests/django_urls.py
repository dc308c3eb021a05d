"""URLs of the Django integration tests: a view that reports what was delivered before it
ran, and the cron view."""

from __future__ import annotations

from typing import Any

from django.http import HttpResponse, JsonResponse
from django.urls import path

from gaesignals.contrib.django.views import deliver_signals

#: Payloads the tests' receivers got, in order; cleared by the tests.
DELIVERED: list[Any] = []


def index(request: Any) -> HttpResponse:
    return JsonResponse({"seen": list(DELIVERED)})


urlpatterns = [
    path("", index),
    path("tasks/deliver-signals", deliver_signals),
]
