"""The scheduled-delivery endpoint as a Django view: :class:`gaesignals.cron.CronDeliveryApp`
behind a URL, for App Engine cron or any scheduler::

    from gaesignals.contrib.django.views import deliver_signals
    urlpatterns = [path("tasks/deliver-signals", deliver_signals)]

It delivers the registered receivers, each signal in its declared mode (or
``GAESIGNALS["RELIABLE"]``), to App Engine cron or to ``Authorization: Bearer <token>`` with
``GAESIGNALS["CRON_TOKEN"]`` (else ``GAESIGNALS_CRON_TOKEN`` from the environment), and answers
403 to anyone else, 405 to other methods, 503 when the store is down. Each call takes at most
``GAESIGNALS["CRON_LIMIT"]`` payloads of each signal (:data:`gaesignals.cron.CRON_LIMIT` by
default; None for a whole backlog).
"""

from __future__ import annotations

from typing import Any

from django.http import HttpResponse
from django.views.decorators.csrf import csrf_exempt

from ...cron import CRON_LIMIT, CronDeliveryApp
from .apps import options


@csrf_exempt
def deliver_signals(request: Any) -> HttpResponse:
    found = options()
    endpoint = CronDeliveryApp(
        reliable=found.get("RELIABLE"),
        token=found.get("CRON_TOKEN"),
        lease=found.get("LEASE"),
        max_attempts=found.get("MAX_ATTEMPTS"),
        limit=found.get("CRON_LIMIT", CRON_LIMIT),
    )
    answer: dict[str, Any] = {}

    def start_response(status: str, headers: list[tuple[str, str]]) -> None:
        answer.update(status=int(status.split(" ", 1)[0]), headers=headers)

    # request.META carries the CGI-style keys CronDeliveryApp reads (REQUEST_METHOD,
    # HTTP_AUTHORIZATION, HTTP_X_APPENGINE_CRON, REMOTE_ADDR), under WSGI and ASGI alike.
    body = b"".join(endpoint(request.META, start_response))
    response = HttpResponse(body, status=answer["status"])
    for name, value in answer["headers"]:
        response[name] = value
    return response
