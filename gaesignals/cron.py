"""A WSGI endpoint that delivers a mapping when a scheduler calls it.

Signals that no page delivers (an audit trail, a nightly digest) still need something to run
their handlers: App Engine cron, or any scheduler that can make an HTTP request, calls this
endpoint. Delivering runs handlers, so it answers only two callers, and 403 with no delivery to
everyone else:

* App Engine cron, which marks its requests ``X-Appengine-Cron: true``. App Engine removes that
  header from requests coming from outside, so it is believed only when running on App Engine;
  anywhere else anyone could set it.
* A caller with ``Authorization: Bearer <token>``, the token given to the app or found in
  ``GAESIGNALS_CRON_TOKEN``, compared in constant time.
"""

from __future__ import annotations

import hmac
import json
import logging
import os
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from .config import on_app_engine
from .delivery import MappingArg, SignalMapping, deliver
from .exceptions import ConfigurationError, StoreUnavailable

logger = logging.getLogger("gaesignals")

TOKEN_ENV = "GAESIGNALS_CRON_TOKEN"
#: Shorter tokens are refused: they can be guessed.
MIN_TOKEN_BYTES = 32


class CronDeliveryApp:
    """Deliver ``mapping`` on each authorized GET or POST; answer ``{"delivered": n}``.

    ``mapping=None`` delivers the default registry's receivers (:func:`~gaesignals.receiver`),
    each signal in its declared mode unless ``reliable`` says otherwise. ``token=None`` reads
    ``GAESIGNALS_CRON_TOKEN``; with no token at all, only App Engine cron gets in.
    ``reliable``, ``lease`` and ``max_attempts`` are passed to :func:`deliver`.
    Answers 403 to anyone else, 405 to other methods, 503 when the store is down.
    """

    def __init__(
        self,
        mapping: MappingArg | None = None,
        *,
        reliable: bool | None = None,
        token: str | None = None,
        lease: int | None = None,
        max_attempts: int | None = None,
    ) -> None:
        self.mapping = None if mapping is None else SignalMapping.coerce(mapping)
        self.reliable = reliable
        self.lease = lease
        self.max_attempts = max_attempts
        if token is None:
            token = os.environ.get(TOKEN_ENV, "").strip() or None
        if token is not None and len(token.encode("utf-8")) < MIN_TOKEN_BYTES:
            raise ConfigurationError(
                f"a cron token must be at least {MIN_TOKEN_BYTES} bytes; "
                'make one with: python -c "import secrets; print(secrets.token_urlsafe(48))"'
            )
        self._token = token.encode("utf-8") if token is not None else None

    def __repr__(self) -> str:
        return f"CronDeliveryApp({self.mapping!r}, reliable={self.reliable})"

    def authorized(self, environ: Mapping[str, Any]) -> bool:
        """Whether the request comes from App Engine cron or carries the token."""
        if environ.get("HTTP_X_APPENGINE_CRON") == "true" and on_app_engine():
            return True
        if self._token is None:
            return False
        scheme, _, credentials = str(environ.get("HTTP_AUTHORIZATION", "")).partition(" ")
        # WSGI gives header values as latin-1 decoded text; this recovers the bytes sent.
        given = credentials.strip().encode("latin-1", "replace")
        return scheme.lower() == "bearer" and hmac.compare_digest(given, self._token)

    def __call__(
        self, environ: dict[str, Any], start_response: Callable[..., Any]
    ) -> Iterable[bytes]:
        if not self.authorized(environ):
            logger.warning("refused a delivery request from %s", environ.get("REMOTE_ADDR", "?"))
            return _json(start_response, "403 Forbidden", {"error": "forbidden"})
        if environ.get("REQUEST_METHOD") not in ("GET", "POST"):
            return _json(
                start_response,
                "405 Method Not Allowed",
                {"error": "use GET or POST"},
                [("Allow", "GET, POST")],
            )
        try:
            delivered = deliver(
                self.mapping, self.reliable, lease=self.lease, max_attempts=self.max_attempts
            )
        except StoreUnavailable as error:
            logger.error("scheduled delivery failed: %s", error)
            return _json(start_response, "503 Service Unavailable", {"error": "store unavailable"})
        return _json(start_response, "200 OK", {"delivered": delivered})


def _json(
    start_response: Callable[..., Any],
    status: str,
    body: dict[str, Any],
    extra: list[tuple[str, str]] | None = None,
) -> list[bytes]:
    data = json.dumps(body).encode("utf-8") + b"\n"
    headers = [
        ("Content-Type", "application/json"),
        ("Content-Length", str(len(data))),
        ("Cache-Control", "no-store"),
    ]
    start_response(status, headers + (extra or []))
    return [data]
