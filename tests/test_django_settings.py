"""The Django integration's settings and app: ``settings.GAESIGNALS`` configures gaesignals, bad
settings are refused at start-up, and the signals modules of installed apps are discovered.

Django is configured once per process (tests/django_setup.py: the example project's settings
with an in-memory database); each test gets a fresh gaesignals store and registry, and the
cleanup of django_support."""

from __future__ import annotations

import subprocess
import sys
from typing import Any

import pytest

import gaesignals
from gaesignals.config import get_settings
from gaesignals.stores import Store
from gaesignals.stores.memory import MemoryStore
from tests.django_setup import setup_django

setup_django()

from django.core.exceptions import ImproperlyConfigured  # noqa: E402
from django.test import override_settings  # noqa: E402

from examples.django_app.guestbook.models import Entry  # noqa: E402
from gaesignals.contrib.django.apps import configure_from_settings  # noqa: E402

from .django_support import _clean  # noqa: E402, F401 (an autouse fixture)

# -- settings and the app ------------------------------------------------------------------------


def test_import_gaesignals_contrib_django_stays_lazy() -> None:
    """The app's package imports nothing from Django until its modules are used."""
    code = "import sys, gaesignals.contrib.django; print('django' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_settings_dict_configures_gaesignals(monkeypatch: pytest.MonkeyPatch) -> None:
    """STORE, NAMESPACE, CODEC and EAGER reach configure(); left-out keys come from the env."""
    monkeypatch.setenv("GAESIGNALS_NAMESPACE", "fromenv")
    store = MemoryStore()
    with override_settings(GAESIGNALS={"STORE": store, "CODEC": "json", "EAGER": True}):
        configure_from_settings()
    settings = get_settings()
    assert settings.store is store
    assert (settings.codec, settings.namespace, settings.eager) == ("json", "fromenv", True)


def test_settings_without_store_keys_leave_gaesignals_alone(gaesignals_store: Store) -> None:
    """A GAESIGNALS dict with only delivery keys does not call configure()."""
    with override_settings(GAESIGNALS={"DELIVER": "after", "INTERVAL": 5}):
        configure_from_settings()
    assert get_settings().store is gaesignals_store


@pytest.mark.parametrize(
    "bad",
    [{"STOER": "memory://"}, {"DELIVER": "before_view"}, ["STORE"]],
    ids=["unknown-key", "bad-deliver", "not-a-dict"],
)
def test_bad_settings_are_refused(bad: Any) -> None:
    """Typos in GAESIGNALS fail loudly."""
    with override_settings(GAESIGNALS=bad), pytest.raises(ImproperlyConfigured):
        configure_from_settings()


def test_short_cron_token_fails_at_start_up() -> None:
    """The app's ready() refuses a guessable CRON_TOKEN."""
    from django.apps import apps

    with (
        override_settings(GAESIGNALS={"CRON_TOKEN": "short"}),
        pytest.raises(gaesignals.ConfigurationError),
    ):
        apps.get_app_config("gaesignals").ready()


def test_signals_modules_of_installed_apps_are_autodiscovered() -> None:
    """ready() imported the guestbook's signals.py, which connected its receiver."""
    from examples.django_app.guestbook.signals import entry_signed, publish

    assert "examples.django_app.guestbook.signals" in sys.modules
    assert [r for r in entry_signed._live_receivers(Entry)[0]] == [publish]
