"""A WSGI endpoint that delivers a mapping when a scheduler calls it.

Signals that no page delivers (an audit trail, a nightly digest) still need something to run
their handlers: App Engine cron, or any scheduler that can make an HTTP request, calls this
endpoint. Delivering runs handlers, so it answers only two callers, and 403 with no delivery to
everyone else:

* App Engine cron, which marks its requests ``X-Appengine-Cron: true``. App Engine removes that
  header from requests coming from outside, so it is believed only when running on App Engine;
  anywhere else anyone could set it. App Engine removes only that exact name, though, and some
  WSGI servers give ``X_Appengine_Cron`` (underscores, which App Engine lets through) the same
  environ key: under those the header is never believed (see :func:`folds_underscores`).
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
from .delivery import MappingArg, SignalMapping, check_limit, deliver
from .exceptions import ConfigurationError, StoreUnavailable
from .middleware import DELIVERED

logger = logging.getLogger("gaesignals")

TOKEN_ENV = "GAESIGNALS_CRON_TOKEN"
#: Shorter tokens are refused: they can be guessed.
MIN_TOKEN_BYTES = 32
#: How many payloads of each signal one scheduled delivery takes unless told otherwise: a
#: backlog drains over calls, each call answering before the scheduler's deadline.
CRON_LIMIT = 1000


class CronDeliveryApp:
    """Deliver ``mapping`` on each authorized GET or POST; answer ``{"delivered": n}``, counting
    what a per-request delivery of the same request delivered too (see
    :data:`~gaesignals.middleware.DELIVERED`).

    ``mapping=None`` delivers the default registry's receivers (:func:`~gaesignals.receiver`),
    each signal in its declared mode unless ``reliable`` says otherwise. ``token=None`` reads
    ``GAESIGNALS_CRON_TOKEN``; with no token at all, only App Engine cron gets in.
    ``reliable``, ``lease``, ``max_attempts`` and ``limit`` are passed to :func:`deliver`;
    ``limit`` (how many payloads of each signal one call takes) is :data:`CRON_LIMIT` by
    default, None for a whole backlog.
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
        limit: int | None = CRON_LIMIT,
    ) -> None:
        self.mapping = None if mapping is None else SignalMapping.coerce(mapping)
        self.reliable = reliable
        self.lease = lease
        self.max_attempts = max_attempts
        self.limit = None if limit is None else check_limit(limit)
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
            if not folds_underscores(environ):
                return True
            logger.warning(
                "X-Appengine-Cron is not believed under %s, which cannot tell it from an "
                "X_Appengine_Cron header anyone can send; serve the app with gunicorn 22 or "
                "later, waitress or werkzeug, or give the endpoint a token",
                environ.get("SERVER_SOFTWARE"),
            )
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
                self.mapping,
                self.reliable,
                lease=self.lease,
                max_attempts=self.max_attempts,
                limit=self.limit,
            )
            # What a delivery around this same request (a middleware, a before_request hook)
            # took counts too: it was delivered in this request, and this one found it gone.
            delivered += environ.get(DELIVERED, 0)
        except StoreUnavailable as error:
            logger.error("scheduled delivery failed: %s", error)
            return _json(start_response, "503 Service Unavailable", {"error": "store unavailable"})
        return _json(start_response, "200 OK", {"delivered": delivered})


def folds_underscores(environ: Mapping[str, Any]) -> bool:
    """Whether the server that built ``environ`` gives a header spelled with underscores
    (``X_Appengine_Cron``) the same key as the dashed one (``HTTP_X_APPENGINE_CRON``).

    The environ keeps no raw header names, so the server is known by ``SERVER_SOFTWARE``: the
    standard library's wsgiref (``WSGIServer/...``, Django's runserver too, though it drops
    such headers) and gunicorn before 22 fold them. gunicorn 22 and later, waitress, werkzeug
    and Django's ASGI handler drop or refuse them; other servers are trusted as those are.
    """
    software = str(environ.get("SERVER_SOFTWARE", ""))
    if software.startswith("WSGIServer/"):
        return True
    name, _, version = software.partition("/")
    if name.lower() == "gunicorn":
        major = version.partition(".")[0]
        return not major.isdigit() or int(major) < 22
    return False


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
