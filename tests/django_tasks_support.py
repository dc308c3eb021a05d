"""The django.tasks suites' settings and fixture (``test_django_tasks_*``): Django is configured
once per process (tests/django_setup.py); each test sets ``TASKS`` with ``override_settings``
(Django then builds its backends anew) and connects their queues again, as the app does at
start-up. A suite module imports it first and calls :func:`require_django_tasks` before
importing anything of Django."""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Iterator

import pytest

import gaesignals
from gaesignals.stores import Store
from tests.django_setup import setup_django


def require_django_tasks() -> None:
    """Skip the importing module where there is no ``django.tasks`` (Django 6, which needs
    Python 3.12+; CI runs these suites on 3.13), else set Django up (once per process)."""
    if sys.version_info < (3, 12) or importlib.util.find_spec("django.tasks") is None:
        pytest.skip(
            "django.tasks needs Django 6, which needs Python 3.12+ (CI runs this on 3.13)",
            allow_module_level=True,
        )
    setup_django()


require_django_tasks()

from django.test import override_settings  # noqa: E402

from gaesignals.contrib.django.tasks import (  # noqa: E402
    connect_backends,
    queue_signal,
)
from tests import task_functions  # noqa: E402

BACKEND = "gaesignals.contrib.django.tasks.SignalsBackend"
#: "default": failed tasks get three attempts, retried by the very next delivery (no backoff to
#: wait out), and tasks enqueued in a transaction are stored at commit; "eager": the defaults.
TASKS = {
    "default": {
        "BACKEND": BACKEND,
        "QUEUES": ["default", "emails"],
        "OPTIONS": {"RETRY_DELAY": 0, "MAX_ATTEMPTS": 3, "ON_COMMIT": True},
    },
    "eager": {"BACKEND": BACKEND},
    "immediate": {"BACKEND": "django.tasks.backends.immediate.ImmediateBackend"},
}
DEFAULT = queue_signal("default", "default")


@pytest.fixture(autouse=True)
def _tasks(gaesignals_store: Store, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The test TASKS, their queues connected, on a fresh store."""
    for name in ("GAE_ENV", "GAE_APPLICATION", "GAESIGNALS_CRON_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    task_functions.NOTED.clear()
    with override_settings(TASKS=TASKS):
        assert connect_backends() == ["default", "eager"]
        yield


def pending(name: str = DEFAULT) -> int:
    return gaesignals.pending([name])[name].count
