"""What the Django integration suites (``test_django_*``) share: the test signals, a cleanup
fixture each suite imports (it is autouse), a handler recording into django_urls.DELIVERED.
Importing this module sets Django up (tests/django_setup.py)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import pytest

from tests.django_setup import setup_django

setup_django()


from django.test import Client, override_settings  # noqa: E402

from examples.django_app.guestbook.models import Entry  # noqa: E402
from gaesignals.contrib.django.signals import AsyncSignal  # noqa: E402
from tests import django_urls  # noqa: E402

paid = AsyncSignal("tests.paid")
audited = AsyncSignal("tests.audited", reliable=True, max_attempts=3)

#: The cron view's token in the suites' settings.
TOKEN = "d" * 40


@pytest.fixture(autouse=True)
def _clean(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    for name in ("GAE_ENV", "GAE_APPLICATION", "GAESIGNALS_CRON_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    django_urls.DELIVERED.clear()
    yield
    for signal in (paid, audited):  # forget this test's receivers, whatever their sender
        with signal.lock:
            signal.receivers.clear()
            signal.sender_receivers_cache.clear()
    Entry.objects.all().delete()


def record(data: Any) -> None:
    django_urls.DELIVERED.append(data)


@contextlib.contextmanager
def site(**gaesignals_settings: Any) -> Iterator[Client]:
    """The test URLs with ``settings.GAESIGNALS`` set, and a client built under them."""
    with override_settings(ROOT_URLCONF="tests.django_urls", GAESIGNALS=gaesignals_settings):
        yield Client()
