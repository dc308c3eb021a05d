"""Whether Django's task-backend tests are in place for the Django installed (standard library
only: the check runs where Django has no ``django.tasks`` too)."""

from __future__ import annotations

import importlib.metadata
import importlib.util
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parents[2]
UPSTREAM = Path(__file__).resolve().parent / "upstream"
COMMAND = "python scripts/django_tasks_suite.py"
#: Django's test modules the port runs (tests/tasks/ of its sdist), imported as Django names them.
MODULES = (
    "tasks.test_tasks",
    "tasks.test_immediate_backend",
    "tasks.test_dummy_backend",
    "tasks.test_custom_backend",
)


def load_script() -> ModuleType:
    """``scripts/django_tasks_suite.py``, which fetches them (scripts/ is not a package)."""
    spec = importlib.util.spec_from_file_location(
        "django_tasks_suite", ROOT / "scripts" / "django_tasks_suite.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def has_django_tasks() -> bool:
    """Whether the Django installed has ``django.tasks`` (Django 6, Python 3.12+)."""
    return importlib.util.find_spec("django") is not None and (
        importlib.util.find_spec("django.tasks") is not None
    )


def missing() -> str | None:
    """Why Django's suite is not ready to run here, or None when it is."""
    script = load_script()
    found = script.current_stamp()
    if found is None:
        return f"Django's tests/tasks are not in {UPSTREAM.name}/: run `{COMMAND}` once"
    expected = script.stamp(importlib.metadata.version("django"))
    if found != expected:
        return (
            f"{UPSTREAM.name}/ was set up for another Django or patch ({found.strip()}): "
            f"run `{COMMAND}` again"
        )
    return None
