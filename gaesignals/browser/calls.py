"""A signal called from a browser: every check in order, then its handlers, deferred or run.

The checks, cheapest and least revealing first: the Origin, the CSRF token, the declaration
(``from_browser``), the session's rate, the body (JSON, within the size), the schema, then a
``from_browser`` callable with the data. The handlers then get a
:class:`~gaesignals.browser.BrowserCall`: sent as an ordinary signal for a later delivery
(``delayed=True``, the default), or run during the call (``delayed=False``), inside a span
whose parent is the browser's ``traceparent`` when it sent one.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any

from .. import tracing
from ..config import Settings
from ..eager import send_now
from ..exceptions import InvalidSignalName
from ..keys import check_name
from ..queue import quota
from ..registration import SignalSpec, registry
from ..sending import send
from .http import (
    BAD_REQUEST,
    FAILED,
    FORBIDDEN,
    METHOD_NOT_ALLOWED,
    OK,
    Answer,
    Incoming,
    Refusal,
    origin_allowed,
    rate_limited,
)
from .messages import check_window
from .visitors import CSRF_HEADER, BrowserCall, Identify, Visitor, csrf_valid, session_tag

logger = logging.getLogger("gaesignals")

WINDOW_HEADER = "x-gaesignals-window"
#: The period of the per-session call limit, in seconds.
RATE_PERIOD = 60


@dataclass(frozen=True)
class CallRules:
    """The bridge's options that calls obey (see :class:`~gaesignals.browser.Bridge`)."""

    identify: Identify
    allowed_origins: frozenset[str]
    calls_per_minute: int
    clock: Callable[[], float]


def answer_call(rules: CallRules, incoming: Incoming, name: str, settings: Settings) -> Answer:
    """The answer to a browser's call of signal ``name``; handlers' errors are logged."""
    try:
        return _call(rules, incoming, name, settings)
    except Refusal as refusal:
        logger.info("browser call of %r refused: %s", name, refusal)
        return refusal.answer
    except Exception:
        logger.exception("browser call of %r failed", name)
        return FAILED


def _call(rules: CallRules, incoming: Incoming, name: str, settings: Settings) -> Answer:
    if incoming.method != "POST":
        raise Refusal(METHOD_NOT_ALLOWED, "not a POST")
    if not origin_allowed(incoming, rules.allowed_origins):
        raise Refusal(FORBIDDEN, f"origin {incoming.headers.get('origin')!r} not allowed")
    visitor = rules.identify(incoming.native)
    if not csrf_valid(incoming.headers.get(CSRF_HEADER, ""), visitor, settings):
        raise Refusal(FORBIDDEN, "bad CSRF token")
    spec = _declared(name, visitor)
    _spend(rules, incoming, visitor, settings)
    data = _data(incoming, spec)
    if callable(spec.from_browser) and not _permitted(spec.from_browser, visitor, data):
        raise Refusal(FORBIDDEN, "not permitted by from_browser")
    payload: BrowserCall = {
        "data": data,
        "window": check_window(incoming.headers.get(WINDOW_HEADER)),
        "session": None if visitor.session is None else session_tag(visitor.session),
        "user": visitor.user,
    }
    with browser_trace(incoming.headers):
        if spec.delayed:
            send(name, payload)
        else:
            _run_now(name, payload)
    return OK


def _declared(name: str, visitor: Visitor) -> SignalSpec:
    """The spec of ``name`` if the visitor may call it at all (a callable decides later)."""
    try:
        spec = registry.spec(check_name(name))
    except InvalidSignalName:
        raise Refusal(FORBIDDEN, "not a signal name") from None
    allowed = spec.from_browser
    if allowed is False:
        raise Refusal(FORBIDDEN, "not declared from_browser")
    if allowed == "authenticated" and not visitor.authenticated:
        raise Refusal(FORBIDDEN, "not authenticated")
    return spec


def _spend(rules: CallRules, incoming: Incoming, visitor: Visitor, settings: Settings) -> None:
    """Count the call against its session's rate (a visitor without one: its address's)."""
    who = session_tag(visitor.session) if visitor.session else f"address {incoming.remote}"
    period = int(rules.clock() // RATE_PERIOD)
    key = quota.quota_key(f"browser calls of {who}", period, settings.namespace)
    if not quota.spend(settings.store, key, rules.calls_per_minute, 2 * RATE_PERIOD):
        raise Refusal(rate_limited(RATE_PERIOD), f"more than {rules.calls_per_minute} a minute")


def _reject_constant(text: str) -> Any:
    raise ValueError(f"{text} is not JSON")


def _data(incoming: Incoming, spec: SignalSpec) -> Any:
    """The call's data: the body must be a JSON object ``{"data": ...}`` within the size."""
    kind = incoming.headers.get("content-type", "").partition(";")[0].strip().lower()
    if kind != "application/json":
        raise Refusal(BAD_REQUEST, f"content type {kind!r}")
    body = incoming.body
    if body is None or len(body) > spec.max_call_bytes:
        raise Refusal(BAD_REQUEST, "body too large")
    try:
        found = json.loads(body.decode("utf-8"), parse_constant=_reject_constant)
    except (ValueError, RecursionError):
        raise Refusal(BAD_REQUEST, "body is not JSON") from None
    if not isinstance(found, dict) or "data" not in found:
        raise Refusal(BAD_REQUEST, 'body is not {"data": ...}')
    data = found["data"]
    if spec.schema is not None:
        try:
            spec.schema(data)
        except Exception as error:
            raise Refusal(BAD_REQUEST, f"schema: {error!r}") from None
    return data


def _permitted(check: Callable[..., bool], visitor: Visitor, data: Any) -> bool:
    """What a ``from_browser`` callable says; one that raises refuses (and is logged)."""
    try:
        return bool(check(visitor, data))
    except Exception:
        logger.exception("a from_browser check raised; the call is refused")
        return False


def _run_now(name: str, payload: BrowserCall) -> None:
    """Run ``name``'s receivers on ``payload`` now, in a span of their own when traced."""
    if not tracing.active():
        send_now(name, payload)
        return
    with tracing.processing(name, None) as process:
        try:
            send_now(name, payload)
        except Exception as error:
            process.failed(error)
            raise


def browser_trace(headers: Mapping[str, str]) -> AbstractContextManager[None]:
    """Make the browser's trace context (``traceparent``, ``tracestate``) the current one,
    so the spans of the call's send or handlers are its children."""
    carrier = {name: headers[name] for name in ("traceparent", "tracestate") if name in headers}
    return tracing.remote_parent(carrier)
