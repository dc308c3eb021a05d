"""Whether Django's task-backend tests are in place for the Django installed (standard library
only: the check runs where Django has no ``django.tasks`` too)."""

from __future__ import annotations

import importlib.metadata
import importlib.util
from pathlib import Path

UPSTREAM = Path(__file__).resolve().parent / "upstream"
COMMAND = "python scripts/django_tasks_suite.py"
#: Django's test modules the port runs (tests/tasks/ of its sdist), imported as Django names them.
MODULES = (
    "tasks.test_tasks",
    "tasks.test_immediate_backend",
    "tasks.test_dummy_backend",
    "tasks.test_custom_backend",
)


def has_django_tasks() -> bool:
    """Whether the Django installed has ``django.tasks`` (Django 6, Python 3.12+)."""
    return importlib.util.find_spec("django") is not None and (
        importlib.util.find_spec("django.tasks") is not None
    )


def missing() -> str | None:
    """Why Django's suite is not ready to run here, or None when it is."""
    installed = importlib.metadata.version("django")
    try:
        extracted = (UPSTREAM / "DJANGO_VERSION").read_text().strip()
    except FileNotFoundError:
        return f"Django's tests/tasks are not in {UPSTREAM.name}/: run `{COMMAND}` once"
    if extracted != installed:
        return (
            f"{UPSTREAM.name}/ holds Django {extracted}'s tests/tasks, Django {installed} is "
            f"installed: run `{COMMAND}` again"
        )
    return None
