"""Module-level ``django.tasks`` tasks for tests/test_django_tasks_*.py (Django 6+ only: importing
this module needs ``django.tasks``)."""

from __future__ import annotations

import time
from typing import Any

from django.tasks import TaskContext, task

#: What :func:`note` was called with, in order; cleared by the tests.
NOTED: list[Any] = []


@task
def add(a: int, b: int) -> int:
    return a + b


@task
def note(value: Any) -> None:
    NOTED.append(value)


@task
def fail(message: str) -> None:
    raise ValueError(message)


@task(takes_context=True)
def attempt_number(context: TaskContext) -> dict[str, Any]:
    return {"attempt": context.attempt, "id": context.task_result.id}


@task(takes_context=True)
def flaky(context: TaskContext, failures: int) -> int:
    """Fails its first ``failures`` attempts; returns the attempt that succeeded."""
    if context.attempt <= failures:
        raise RuntimeError(f"attempt {context.attempt} fails")
    attempt: int = context.attempt
    return attempt


@task
async def double(value: int) -> int:
    return value * 2


@task
def unreturnable() -> object:
    return object()


@task
def exits() -> None:
    raise SystemExit(3)


@task
def wait_to_be_killed(seconds: float) -> None:
    """Blocks until its process is killed: the parent kills it once the result says RUNNING
    (``seconds`` only bounds an orphan's life)."""
    time.sleep(seconds)
