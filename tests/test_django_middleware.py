"""The Django middleware and cron view: delivery before the view or after the response, at an
interval, reliably; handler errors and store outages never break a request; the cron view's
token and answers.

Django is configured once per process (tests/django_setup.py: the example project's settings
with an in-memory database); each test gets a fresh gaesignals store and registry, and the
cleanup of django_support."""

from __future__ import annotations

import logging
from typing import Any

import pytest

import gaesignals
from gaesignals import send
from gaesignals.stores import Store
from gaesignals.testing import DownStore
from tests.django_setup import setup_django

setup_django()

from django.test import override_settings  # noqa: E402

from tests import django_urls  # noqa: E402

from .django_support import (  # noqa: E402
    TOKEN,
    _clean,  # noqa: F401 (an autouse fixture)
    record,
    site,
)

# -- the middleware ------------------------------------------------------------------------------


def test_middleware_delivers_before_the_view(gaesignals_store: Store) -> None:
    """By default the registered receivers are delivered before the view runs."""
    gaesignals.connect("greet", record)
    send("greet", "hi")
    with site() as browser:
        assert browser.get("/").json() == {"seen": ["hi"]}
        assert browser.get("/").json() == {"seen": ["hi"]}  # not twice


def test_middleware_after_delivers_once_the_response_is_closed(gaesignals_store: Store) -> None:
    """``DELIVER: "after"``: the view runs first; delivery happens when Django closes the
    response (the test client closes it as a server would) and the response is unchanged."""
    gaesignals.connect("greet", record)
    send("greet", "later")
    with site(DELIVER="after") as browser:
        response = browser.get("/")
    assert response.json() == {"seen": []}
    assert django_urls.DELIVERED == ["later"]


def test_middleware_deliver_none_is_not_used(gaesignals_store: Store) -> None:
    """``DELIVER: None`` takes the middleware out of the chain."""
    gaesignals.connect("greet", record)
    send("greet", 1)
    with site(DELIVER=None) as browser:
        assert browser.get("/").json() == {"seen": []}
    assert django_urls.DELIVERED == []


def test_middleware_interval(gaesignals_store: Store) -> None:
    """``INTERVAL``: at most one delivery per interval per process (the first request's)."""
    gaesignals.connect("greet", record)
    with site(INTERVAL=3600) as browser:
        send("greet", 1)
        assert browser.get("/").json() == {"seen": [1]}
        send("greet", 2)
        assert browser.get("/").json() == {"seen": [1]}
    assert gaesignals.deliver() == 1


def test_middleware_reliable(gaesignals_store: Store) -> None:
    """``RELIABLE: True`` keeps a payload whose handler failed, for the next request."""
    gaesignals.declare("greet", retry_delay=0)  # a failed payload is retried at once
    calls: list[Any] = []

    def flaky(data: Any) -> None:
        calls.append(data)
        if len(calls) == 1:
            raise RuntimeError("first time fails")

    gaesignals.connect("greet", flaky)
    send("greet", "x")
    with site(RELIABLE=True) as browser:
        browser.get("/")
        browser.get("/")
        browser.get("/")
    assert calls == ["x", "x"]


@pytest.mark.parametrize("when", ["before", "after"])
def test_handler_error_never_breaks_the_request(
    when: str, gaesignals_store: Store, caplog: pytest.LogCaptureFixture
) -> None:
    """A raising handler is logged once on ``gaesignals``; the view answers as usual."""

    def broken(data: Any) -> None:
        raise RuntimeError("handler bug")

    gaesignals.connect("greet", broken)
    send("greet", 1)
    with caplog.at_level(logging.ERROR, logger="gaesignals"), site(DELIVER=when) as browser:
        response = browser.get("/")
    assert response.status_code == 200
    failures = [r for r in caplog.records if r.name == "gaesignals"]
    assert len(failures) == 1 and failures[0].exc_info is not None


@pytest.mark.parametrize("when", ["before", "after"])
def test_store_outage_never_breaks_the_request(when: str, caplog: pytest.LogCaptureFixture) -> None:
    """With the cache down the request is served and the outage logged once."""
    gaesignals.configure(store=DownStore())
    gaesignals.connect("greet", record)
    with caplog.at_level(logging.ERROR, logger="gaesignals"), site(DELIVER=when) as browser:
        assert browser.get("/").status_code == 200
    assert [r.getMessage() for r in caplog.records] == [
        "no delivery for this request: the cache is down"
    ]


# -- the cron view -------------------------------------------------------------------------------


def test_cron_view_refuses_without_the_token(gaesignals_store: Store) -> None:
    """403 and no delivery without the bearer token, or with a spoofed cron header."""
    gaesignals.connect("audit", record)
    send("audit", 1)
    with site(DELIVER=None, CRON_TOKEN=TOKEN) as browser:
        assert browser.get("/tasks/deliver-signals").status_code == 403
        spoofed = browser.get("/tasks/deliver-signals", headers={"X-Appengine-Cron": "true"})
        assert spoofed.status_code == 403 and spoofed.json() == {"error": "forbidden"}
        wrong = browser.post("/tasks/deliver-signals", headers={"Authorization": "Bearer no"})
        assert wrong.status_code == 403
    assert django_urls.DELIVERED == []


def test_cron_view_delivers_with_the_bearer_token(gaesignals_store: Store) -> None:
    """200 and ``{"delivered": n}`` with ``Authorization: Bearer <CRON_TOKEN>``; 405 to PUT."""
    gaesignals.connect("audit", record)
    send("audit", 1)
    send("audit", 2)
    auth = {"Authorization": f"Bearer {TOKEN}"}
    with site(DELIVER=None, CRON_TOKEN=TOKEN) as browser:
        answer = browser.post("/tasks/deliver-signals", headers=auth)
        assert answer.status_code == 200 and answer.json() == {"delivered": 2}
        assert answer["Cache-Control"] == "no-store"
        put = browser.put("/tasks/deliver-signals", headers=auth)
        assert put.status_code == 405 and put["Allow"] == "GET, POST"
    assert django_urls.DELIVERED == [1, 2]


def test_cron_view_counts_what_the_middleware_delivered_first(gaesignals_store: Store) -> None:
    """With the middleware delivering before views, the cron view's answer counts what the
    middleware delivered in that same request."""
    gaesignals.connect("audit", record)
    send("audit", 1)
    send("audit", 2)
    auth = {"Authorization": f"Bearer {TOKEN}"}
    middleware = ["gaesignals.contrib.django.middleware.SignalsMiddleware"]
    with override_settings(MIDDLEWARE=middleware), site(CRON_TOKEN=TOKEN) as browser:
        answer = browser.post("/tasks/deliver-signals", headers=auth)
        assert answer.status_code == 200 and answer.json() == {"delivered": 2}
    assert django_urls.DELIVERED == [1, 2]


def test_cron_view_token_from_the_environment(
    gaesignals_store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without CRON_TOKEN, GAESIGNALS_CRON_TOKEN is the token, as for CronDeliveryApp."""
    monkeypatch.setenv("GAESIGNALS_CRON_TOKEN", TOKEN)
    with site(DELIVER=None) as browser:
        answer = browser.get("/tasks/deliver-signals", headers={"Authorization": f"Bearer {TOKEN}"})
    assert answer.json() == {"delivered": 0}


def test_cron_view_answers_503_when_the_store_is_down() -> None:
    """A store outage is a 503, not a crash."""
    gaesignals.configure(store=DownStore())
    gaesignals.connect("audit", record)
    with site(DELIVER=None, CRON_TOKEN=TOKEN) as browser:
        answer = browser.get("/tasks/deliver-signals", headers={"Authorization": f"Bearer {TOKEN}"})
    assert answer.status_code == 503 and answer.json() == {"error": "store unavailable"}
