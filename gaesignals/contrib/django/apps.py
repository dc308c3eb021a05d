"""The Django app: configures gaesignals from ``settings.GAESIGNALS`` and imports the
``signals`` module of every installed app, so receivers and AsyncSignals are connected in
every process (web workers and ``manage.py deliver_signals`` alike); on Django 6 it connects
the queues of every ``django.tasks`` backend of :mod:`.tasks` too.

::

    GAESIGNALS = {
        "STORE": "memcached://10.0.0.5:11211",  # NAMESPACE, SECRET_KEY, CODEC, EAGER too
        "DELIVER": "before",                    # the middleware: "before", "after" or None
        "INTERVAL": 2,                          # at most one delivery per 2 s per process
        "LIMIT": 100,                           # payloads of each signal a request takes
        "RELIABLE": None,                       # None: each signal's declared mode
        "CRON_TOKEN": "...",                    # the cron view's bearer token
    }

``STORE``, ``NAMESPACE``, ``SECRET_KEY``, ``CODEC`` and ``EAGER`` go to
:func:`gaesignals.configure`; one left out falls back to the environment as ``configure``
does, and with none of them set ``configure`` is not called at all.
"""

from __future__ import annotations

import importlib.util
from typing import Any

from django.apps import AppConfig
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.utils.module_loading import autodiscover_modules

from ...config import configure
from ...cron import CronDeliveryApp

#: GAESIGNALS key -> configure() argument.
CONFIGURE_KEYS = {
    "STORE": "store",
    "NAMESPACE": "namespace",
    "SECRET_KEY": "secret_key",
    "CODEC": "codec",
    "EAGER": "eager",
}
DELIVERY_KEYS = (
    "DELIVER",
    "INTERVAL",
    "RELIABLE",
    "LEASE",
    "MAX_ATTEMPTS",
    "LIMIT",
    "CRON_LIMIT",
    "CRON_TOKEN",
)
DELIVER_WHEN = ("before", "after", None)


def options() -> dict[str, Any]:
    """``settings.GAESIGNALS`` checked: unknown keys and bad ``DELIVER`` values are refused."""
    found = getattr(settings, "GAESIGNALS", None) or {}
    if not isinstance(found, dict):
        raise ImproperlyConfigured("settings.GAESIGNALS must be a dict")
    unknown = sorted(set(found) - set(CONFIGURE_KEYS) - set(DELIVERY_KEYS))
    if unknown:
        raise ImproperlyConfigured(f"unknown GAESIGNALS key(s): {', '.join(unknown)}")
    if found.get("DELIVER", "before") not in DELIVER_WHEN:
        raise ImproperlyConfigured(
            f"GAESIGNALS['DELIVER'] must be 'before', 'after' or None, not {found['DELIVER']!r}"
        )
    return dict(found)


def configure_from_settings() -> None:
    """Pass the configure() keys of ``settings.GAESIGNALS`` to :func:`gaesignals.configure`."""
    found = options()
    given = {arg: found[key] for key, arg in CONFIGURE_KEYS.items() if found.get(key) is not None}
    if given:
        configure(**given)


class GaeSignalsConfig(AppConfig):
    name = "gaesignals.contrib.django"
    label = "gaesignals"
    verbose_name = "gaesignals"

    def ready(self) -> None:
        configure_from_settings()
        token = options().get("CRON_TOKEN")
        if token is not None:
            CronDeliveryApp(token=token)  # a guessable token fails at start-up, not at cron time
        autodiscover_modules("signals")
        if getattr(settings, "TASKS", None) and importlib.util.find_spec("django.tasks"):
            # Django 6+: connect the queues of every SignalsBackend, so that whatever
            # delivers here (a worker that never enqueues) runs their tasks.
            from .tasks import connect_backends

            connect_backends()
