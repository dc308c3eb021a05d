"""The Django integration's bounds: ``GAESIGNALS["LIMIT"]`` for the middleware (100 by
default), ``GAESIGNALS["CRON_LIMIT"]`` for the cron view (1,000 by default) and
``deliver_signals --limit``."""

from __future__ import annotations

import io

import pytest

import gaesignals
from gaesignals import send_multi
from gaesignals.stores import Store
from tests.django_setup import setup_django

setup_django()

from django.core.management import CommandError, call_command  # noqa: E402

from tests import django_urls  # noqa: E402

from .django_support import (  # noqa: E402
    TOKEN,
    _clean,  # noqa: F401 (an autouse fixture)
    record,
    site,
)


def test_the_middleware_takes_at_most_100_per_request_by_default(gaesignals_store: Store) -> None:
    """Under a 150-payload backlog a request delivers the oldest 100, the next the rest."""
    gaesignals.connect("greet", record)
    send_multi([("greet", i) for i in range(150)])
    with site() as browser:
        assert browser.get("/").json() == {"seen": list(range(100))}
        assert browser.get("/").json() == {"seen": list(range(150))}


def test_limit_sets_the_middleware_bound(gaesignals_store: Store) -> None:
    """``LIMIT`` bounds each request's delivery."""
    gaesignals.connect("greet", record)
    send_multi([("greet", i) for i in range(10)])
    with site(LIMIT=4) as browser:
        assert browser.get("/").json() == {"seen": [0, 1, 2, 3]}


def test_cron_limit_sets_the_cron_view_bound(gaesignals_store: Store) -> None:
    """``CRON_LIMIT`` bounds each call of the cron view, which counts what it delivered."""
    gaesignals.connect("greet", record)
    send_multi([("greet", i) for i in range(10)])
    with site(DELIVER=None, CRON_TOKEN=TOKEN, CRON_LIMIT=6) as browser:
        auth = {"HTTP_AUTHORIZATION": f"Bearer {TOKEN}"}
        assert browser.post("/tasks/deliver-signals", **auth).json() == {"delivered": 6}
        assert browser.post("/tasks/deliver-signals", **auth).json() == {"delivered": 4}
    assert list(range(10)) == django_urls.DELIVERED


def test_the_deliver_signals_command_takes_a_limit(gaesignals_store: Store) -> None:
    """``manage.py deliver_signals --limit 3`` delivers the 3 oldest payloads of each signal;
    ``--limit 0`` is refused."""
    gaesignals.connect("greet", record)
    send_multi([("greet", i) for i in range(5)])
    out = io.StringIO()
    call_command("deliver_signals", "--limit", "3", stdout=out)
    assert django_urls.DELIVERED == [0, 1, 2]
    with pytest.raises(CommandError, match="limit"):
        call_command("deliver_signals", "--limit", "0", stdout=out)
    assert django_urls.DELIVERED == [0, 1, 2]
