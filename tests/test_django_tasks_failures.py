"""django.tasks failures: a failed attempt retried, a task failing every attempt failed with its
tracebacks, a task that exits or no longer imports failed without stopping the worker.

Django 6 (which has ``django.tasks``) needs Python 3.12+: on older Pythons, or with Django 5,
the whole module skips. The fixtures and settings are django_tasks_support's."""

from __future__ import annotations

import importlib.util
import logging
import sys
from pathlib import Path

import pytest

import gaesignals
from tests.django_tasks_support import require_django_tasks

require_django_tasks()  # before anything of Django: skips this module without Django 6

from django.tasks import (  # noqa: E402
    TaskResultStatus,
    default_task_backend,
)
from django.test import override_settings  # noqa: E402

from gaesignals.contrib.django.tasks import (  # noqa: E402
    MissingTask,
    TaskFailed,
    connect_backends,
)
from tests.task_functions import (  # noqa: E402
    add,
    exits,
    fail,
    flaky,
    unreturnable,
)

from .django_tasks_support import (  # noqa: E402
    BACKEND,
    DEFAULT,
    _tasks,  # noqa: F401 (an autouse fixture)
    pending,
)

pytestmark = pytest.mark.gaesignals_stores("memcached", "appengine")


# -- failures ------------------------------------------------------------------------------------


def test_a_failed_attempt_is_retried_with_the_next_attempt_number() -> None:
    """A task that fails is READY again, with the error, and the next delivery retries it:
    its context says attempt 2."""
    result = flaky.enqueue(1)
    assert gaesignals.deliver() == 0
    result.refresh()
    assert result.status == TaskResultStatus.READY and result.attempts == 1
    [error] = result.errors
    assert error.exception_class is RuntimeError and "attempt 1 fails" in error.traceback
    assert gaesignals.deliver() == 1
    result.refresh()
    assert result.status == TaskResultStatus.SUCCESSFUL and result.return_value == 2
    assert result.attempts == 2 and len(result.errors) == 1


def test_a_task_failing_every_attempt_is_failed_with_its_tracebacks() -> None:
    """After MAX_ATTEMPTS failures the result is FAILED with each traceback, and the payload
    is a dead letter."""
    result = fail.enqueue("boom")
    for _ in range(3):
        assert gaesignals.deliver() == 0
    result.refresh()
    assert result.status == TaskResultStatus.FAILED and result.is_finished
    assert result.attempts == 3 and len(result.errors) == 3
    assert result.errors[0].exception_class_path == "builtins.ValueError"
    assert "raise ValueError(message)" in result.errors[-1].traceback
    assert "ValueError: boom" in result.errors[-1].traceback
    with pytest.raises(ValueError, match="Task failed"):
        result.return_value  # noqa: B018
    [dead] = gaesignals.dead_letter_details(DEFAULT)
    assert dead.data["id"] == result.id and dead.attempts == 3


def test_without_reliable_delivery_a_failure_is_final() -> None:
    """With OPTIONS RELIABLE False a task runs at most once: its one failure is FAILED."""
    tasks = {"default": {"BACKEND": BACKEND, "OPTIONS": {"RELIABLE": False}}}
    with override_settings(TASKS=tasks):
        connect_backends()
        assert not gaesignals.registry.spec(DEFAULT).reliable
        result = fail.enqueue("once")
        assert gaesignals.deliver() == 0
        result.refresh()
        assert result.status == TaskResultStatus.FAILED and result.attempts == 1
        assert pending() == 0 and gaesignals.dead_letters(DEFAULT) == []


def test_a_return_value_that_is_not_json_fails_the_task() -> None:
    """A return value Django cannot normalise fails the task, as Django's backends do."""
    result = unreturnable.using(backend="eager").enqueue()
    gaesignals.deliver()
    result.refresh()
    assert result.status == TaskResultStatus.FAILED
    assert result.errors[0].exception_class_path == "builtins.TypeError"


def test_a_task_raising_system_exit_does_not_stop_the_worker(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """SystemExit from a task is recorded as its failure; delivery goes on (a retried one
    waits out a backoff, so the task behind it runs meanwhile)."""
    tasks = {"default": {"BACKEND": BACKEND, "OPTIONS": {"MAX_ATTEMPTS": 2}}}
    with override_settings(TASKS=tasks):
        connect_backends()
        result = exits.enqueue()
        other = add.enqueue(1, 1)
        with caplog.at_level(logging.ERROR, logger="gaesignals"):
            assert gaesignals.deliver() == 1
        result.refresh()
        assert result.status == TaskResultStatus.READY
        assert result.errors[0].exception_class_path == "builtins.SystemExit"
        assert add.get_result(other.id).return_value == 2
    assert any(isinstance(r.exc_info and r.exc_info[1], TaskFailed) for r in caplog.records)


def test_a_task_that_no_longer_imports_fails_and_is_dead_lettered(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A task whose module is gone at delivery becomes a FAILED result with the import
    error, and a dead letter at once; the delivery itself goes on."""
    (tmp_path / "vanishing_tasks.py").write_text(
        "from django.tasks import task\n\n@task\ndef gone():\n    return 1\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    import vanishing_tasks  # type: ignore[import-not-found]

    result = vanishing_tasks.gone.enqueue()
    other = add.enqueue(2, 2)
    (tmp_path / "vanishing_tasks.py").unlink()
    monkeypatch.delitem(sys.modules, "vanishing_tasks")
    importlib.invalidate_caches()
    assert gaesignals.deliver() == 1  # the other task
    found = default_task_backend.get_result(result.id)
    assert found.status == TaskResultStatus.FAILED and found.attempts == 0
    assert isinstance(found.task, MissingTask) and found.task.module_path == "vanishing_tasks.gone"
    assert found.errors[0].exception_class_path == "builtins.ModuleNotFoundError"
    assert "No module named 'vanishing_tasks'" in found.errors[0].traceback
    [dead] = gaesignals.dead_letter_details(DEFAULT)
    assert dead.data["id"] == result.id and dead.attempts == 1
    assert add.get_result(other.id).return_value == 4
