"""Django's task-backend test classes (``tests/tasks/`` of its sdist, patched: see
``__init__.py``), each run once per store with Django's own assertions; below, the cases that
cannot apply to ``SignalsBackend``, with why."""

from __future__ import annotations

import importlib
from typing import Any

import pytest

from .presence import MODULES, has_django_tasks, missing

if not has_django_tasks():
    pytest.skip("django.tasks needs Django 6 (Python 3.12+)", allow_module_level=True)
if missing() is not None:  # test_suite_present.py fails for it under CI
    pytest.skip(missing() or "", allow_module_level=True)

from django.test import SimpleTestCase

from gaesignals.contrib.django.tasks import connect_backends
from gaesignals.stores import Store
from tests.django_setup import setup_django

STORES = ("memory", "memcached", "appengine")

PRIORITY = (
    "it builds a task with a priority other than 0, which validate_task refuses while "
    "supports_priority is False (test_backend_does_not_support_priority checks the refusal)"
)
HAS_RESULTS = (
    "SignalsBackend supports results (supports_get_result); the other cases read them back"
)
#: Cases of Django's classes that cannot apply, by class: case -> why.
NOT_APPLICABLE: dict[str, dict[str, str]] = {
    "TaskTestCase": {
        "test_using_priority": PRIORITY,
        "test_chained_using": PRIORITY,
        "test_invalid_priority": PRIORITY,
    },
    "ImmediateBackendTestCase": {
        "test_cannot_get_result": HAS_RESULTS,
        "test_cannot_refresh_result": HAS_RESULTS,
        "test_cannot_pass_run_after": "SignalsBackend supports run_after (supports_defer)",
    },
    "DummyBackendTestCase": {
        "test_clear": "DummyBackend.clear() empties its in-memory list; SignalsBackend has no "
        "clear() (results expire after RESULT_TTL; each test has a fresh store)",
    },
    "CustomBackendTestCase": {
        "test_options": "it checks the log line of Django's CustomBackend fixture, built from "
        "its prefix option; SignalsBackend's OPTIONS are checked in test_using_correct_backend",
        "test_no_enqueue": "it checks that Django's abstract CustomBackendNoEnqueue fixture "
        "cannot be built; SignalsBackend implements enqueue()",
    },
    # Django's Task subclass on its own CustomTaskBackend fixture: nothing of ours runs.
    "CustomTaskTestCase": {"*": "it tests Django's custom task_class support, not a backend"},
}


def _per_store(case: type[SimpleTestCase]) -> dict[str, type[SimpleTestCase]]:
    """``case`` once per store, without the cases that cannot apply (a name that is not
    callable is no test to unittest's loader)."""
    skipped = NOT_APPLICABLE.get(case.__name__, {})
    unknown = sorted(set(skipped) - {*dir(case), "*"})
    if unknown:
        raise LookupError(f"Django's {case.__name__} has no {unknown}: update NOT_APPLICABLE")
    if "*" in skipped:
        return {}
    body: dict[str, Any] = dict.fromkeys(skipped)
    return {
        f"{case.__name__}_{kind}": type(
            f"{case.__name__}_{kind}",
            (case,),
            {**body, "gaesignals_store_kind": kind, "__module__": __name__},
        )
        for kind in STORES
    }


def _django_cases() -> dict[str, type[SimpleTestCase]]:
    """Every test class Django's modules define, once per store."""
    setup_django()
    found: dict[str, type[SimpleTestCase]] = {}
    for name in MODULES:
        module = importlib.import_module(name)
        for value in vars(module).values():
            if (
                isinstance(value, type)
                and issubclass(value, SimpleTestCase)
                and value.__module__ == module.__name__
            ):
                found.update(_per_store(value))
    return found


globals().update(_django_cases())


@pytest.fixture
def gaesignals_store_kind(request: pytest.FixtureRequest) -> str:
    """The store of the class's copy of a Django test class."""
    kind: str = request.cls.gaesignals_store_kind
    return kind


@pytest.fixture(autouse=True)
def _connected(_fresh_settings: None, gaesignals_store: Store) -> None:
    """A fresh store, and the configured backends' queues connected again (the registry was
    cleared), as the app connects them at start-up."""
    connect_backends()
