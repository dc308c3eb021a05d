"""Django middleware that delivers signals around each request, as ``SignalsMiddleware`` does
for WSGI: ``"gaesignals.contrib.django.middleware.SignalsMiddleware"`` in ``MIDDLEWARE``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from django.core.exceptions import MiddlewareNotUsed

from ...middleware import REQUEST_LIMIT, RequestDeliverer, record_delivered, waits
from .apps import options

logger = logging.getLogger("gaesignals")


class SignalsMiddleware:
    """Deliver the registered receivers (``deliver()`` with no mapping) on each request.

    ``GAESIGNALS["DELIVER"]``: ``"before"`` (the default) delivers before the view runs, so
    the view sees what the previous requests sent already handled; ``"after"`` delivers once
    the response has been sent (when Django closes it), so the client never waits for it;
    ``None`` removes the middleware. ``INTERVAL``, ``RELIABLE``, ``LEASE``, ``MAX_ATTEMPTS`` and
    ``LIMIT`` are :class:`gaesignals.SignalsMiddleware`'s arguments (``LIMIT``: payloads of each
    signal a request takes, 100 by default). Delivery never breaks a request:
    handler errors and store outages are logged on the ``gaesignals`` logger, and the response
    is never changed.
    """

    def __init__(self, get_response: Callable[[Any], Any]) -> None:
        found = options()
        self.when = found.get("DELIVER", "before")
        if self.when is None:
            raise MiddlewareNotUsed("GAESIGNALS['DELIVER'] is None")
        self.get_response = get_response
        self.deliverer = RequestDeliverer(
            None,
            found.get("RELIABLE"),
            lease=found.get("LEASE"),
            max_attempts=found.get("MAX_ATTEMPTS"),
            interval=found.get("INTERVAL") or 0,
            limit=found.get("LIMIT", REQUEST_LIMIT),
        )

    def __call__(self, request: Any) -> Any:
        if waits(request.path):  # a browser's long poll (gaesignals.browser) only waits
            return self.get_response(request)
        if self.when == "before":
            # Counted in META, so the cron view this request reaches reports it.
            record_delivered(request.META, self.deliverer.deliver_if_due())
            return self.get_response(request)
        response = self.get_response(request)
        closers = getattr(response, "_resource_closers", None)
        if isinstance(closers, list):
            # Django calls these from response.close(), after the body went out (WSGI and
            # ASGI alike); it swallows their errors, and deliver_if_due raises none anyway.
            closers.append(self.deliverer.deliver_if_due)
        else:  # a response class without closers: deliver now rather than never
            self.deliverer.deliver_if_due()
        return response
