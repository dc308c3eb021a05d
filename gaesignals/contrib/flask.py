"""Flask integration: an extension that configures gaesignals from ``app.config``, delivers
around each request, and serves the cron delivery endpoint as a blueprint.

::

    from gaesignals.contrib.flask import GaeSignals

    signals = GaeSignals(mapping)             # or GaeSignals(app); mapping=None: the registry
    signals.init_app(app)                     # reads GAESIGNALS_* from app.config
    app.register_blueprint(signals.cron_blueprint("/tasks/deliver-signals"))

Config keys: ``GAESIGNALS_STORE``, ``GAESIGNALS_NAMESPACE``, ``GAESIGNALS_SECRET_KEY``,
``GAESIGNALS_CODEC`` and ``GAESIGNALS_EAGER`` go to :func:`gaesignals.configure` (a key left out
falls back to the environment, as ``configure`` does; with none set, ``configure`` is not called
at all). ``GAESIGNALS_DELIVER`` is ``"before"`` (the default), ``"after"`` or ``None``;
``GAESIGNALS_INTERVAL``, ``GAESIGNALS_RELIABLE``, ``GAESIGNALS_LEASE``,
``GAESIGNALS_MAX_ATTEMPTS`` and ``GAESIGNALS_LIMIT`` shape that delivery as
:class:`~gaesignals.SignalsMiddleware`'s arguments do (``GAESIGNALS_CRON_LIMIT``, the cron
endpoint's); ``GAESIGNALS_CRON_TOKEN`` is the cron endpoint's bearer token.
"""

from __future__ import annotations

import time
import weakref
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from .._extras import requires
from ..config import configure
from ..cron import CRON_LIMIT, CronDeliveryApp
from ..mapping import HandlerSpec, SignalMapping
from ..middleware import REQUEST_LIMIT, RequestDeliverer, record_delivered

with requires("flask"):
    from flask import Blueprint, Flask, Response, current_app, request
    from werkzeug.wrappers import Response as WerkzeugResponse

EXTENSION = "gaesignals"
#: app.config key -> configure() argument.
CONFIGURE_KEYS = {
    "GAESIGNALS_STORE": "store",
    "GAESIGNALS_NAMESPACE": "namespace",
    "GAESIGNALS_SECRET_KEY": "secret_key",
    "GAESIGNALS_CODEC": "codec",
    "GAESIGNALS_EAGER": "eager",
}
DELIVER_WHEN = ("before", "after", None)
#: Every method reaches CronDeliveryApp, which answers 403 before it answers 405.
CRON_METHODS = ["GET", "POST", "PUT", "PATCH", "DELETE"]

MappingArg = SignalMapping | Mapping[str, HandlerSpec] | Iterable[tuple[str, HandlerSpec]]


class GaeSignals:
    """The Flask extension. ``GaeSignals(app)`` or ``GaeSignals()`` then ``init_app(app)``.

    ``mapping`` is what the per-request delivery and the cron blueprint deliver; left out, the
    default registry's receivers (:func:`~gaesignals.receiver`) as they are at each delivery.
    Delivery never breaks a request: handler errors and store outages are logged on the
    ``gaesignals`` logger, and the response is never changed. ``clock`` is injectable for
    tests of ``GAESIGNALS_INTERVAL``.
    """

    def __init__(
        self,
        app: Flask | None = None,
        mapping: MappingArg | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.mapping = None if mapping is None else SignalMapping.coerce(mapping)
        self._clock = clock
        if app is not None:
            self.init_app(app)

    def init_app(self, app: Flask) -> None:
        """Configure gaesignals from ``app.config`` and hook delivery into ``app``'s requests.

        gaesignals' settings are per process, so with several apps in one process the last
        ``init_app`` that sets a ``GAESIGNALS_STORE``-like key wins for all of them.
        """
        config = app.config
        when = config.get("GAESIGNALS_DELIVER", "before")
        if when not in DELIVER_WHEN:
            raise ValueError(f"GAESIGNALS_DELIVER must be 'before', 'after' or None, not {when!r}")
        given = {arg: config[key] for key, arg in CONFIGURE_KEYS.items() if key in config}
        if given:
            configure(**given)
        deliverer = RequestDeliverer(
            self.mapping,
            config.get("GAESIGNALS_RELIABLE"),
            lease=config.get("GAESIGNALS_LEASE"),
            max_attempts=config.get("GAESIGNALS_MAX_ATTEMPTS"),
            interval=config.get("GAESIGNALS_INTERVAL", 0) or 0,
            clock=self._clock,
            limit=config.get("GAESIGNALS_LIMIT", REQUEST_LIMIT),
        )
        app.extensions[EXTENSION] = deliverer
        if when == "before":

            def deliver_before() -> None:
                # Counted in the environ, so a cron endpoint this request reaches reports it.
                record_delivered(request.environ, deliverer.deliver_if_due())

            app.before_request(deliver_before)
        elif when == "after":

            def deliver_after(response: Response) -> Response:
                # After the body has gone to the client (werkzeug calls this on close), inside
                # an app context so handlers can use current_app and app-bound extensions.
                def run() -> None:
                    with app.app_context():
                        deliverer.deliver_if_due()

                response.call_on_close(run)
                return response

            app.after_request(deliver_after)

    def cron_blueprint(
        self,
        url: str = "/tasks/deliver-signals",
        *,
        name: str = "gaesignals_cron",
        reliable: bool | None = None,
        token: str | None = None,
    ) -> Blueprint:
        """A blueprint serving :class:`~gaesignals.cron.CronDeliveryApp` at ``url``.

        It delivers this extension's mapping to App Engine cron or a caller with
        ``Authorization: Bearer <token>`` (``token``, else ``GAESIGNALS_CRON_TOKEN`` from the
        app's config, else from the environment) and answers 403 to anyone else, 405 to other
        methods, 503 when the store is down. ``reliable=None`` gives each signal its declared
        mode; ``GAESIGNALS_LEASE`` and ``GAESIGNALS_MAX_ATTEMPTS`` apply, and
        ``GAESIGNALS_CRON_LIMIT`` bounds each call (:data:`~gaesignals.cron.CRON_LIMIT` by
        default).
        """
        blueprint = Blueprint(name, __name__)
        endpoints: weakref.WeakKeyDictionary[Flask, CronDeliveryApp] = weakref.WeakKeyDictionary()

        @blueprint.record_once
        def build(state: Any) -> None:
            # Built when registered, so a bad token fails at start-up, not at the first cron.
            config = state.app.config
            endpoints[state.app] = CronDeliveryApp(
                self.mapping,
                reliable=reliable,
                token=token if token is not None else config.get("GAESIGNALS_CRON_TOKEN"),
                lease=config.get("GAESIGNALS_LEASE"),
                max_attempts=config.get("GAESIGNALS_MAX_ATTEMPTS"),
                limit=config.get("GAESIGNALS_CRON_LIMIT", CRON_LIMIT),
            )

        @blueprint.route(url, methods=CRON_METHODS, provide_automatic_options=False)
        def deliver_signals() -> WerkzeugResponse:
            endpoint = endpoints[current_app._get_current_object()]  # type: ignore[attr-defined]
            return WerkzeugResponse.from_app(endpoint, request.environ)

        return blueprint
