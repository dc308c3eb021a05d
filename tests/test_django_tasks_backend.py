"""The django.tasks backend and its settings: declared capabilities, bad settings and system
checks, and the tasks Django's validate_task refuses, refused at enqueue.

Django 6 (which has ``django.tasks``) needs Python 3.12+: on older Pythons, or with Django 5,
the whole module skips. The fixtures and settings are django_tasks_support's."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

import gaesignals
from gaesignals import frames
from tests.django_tasks_support import require_django_tasks

require_django_tasks()  # before anything of Django: skips this module without Django 6

from django.tasks import (  # noqa: E402
    task,
    task_backends,
)
from django.tasks.exceptions import (  # noqa: E402
    InvalidTask,
    InvalidTaskBackend,
)
from django.test import override_settings  # noqa: E402

from gaesignals.contrib.django.tasks import (  # noqa: E402
    SignalsBackend,
    UnserializableArguments,
    queue_signal,
)
from tests import task_functions  # noqa: E402
from tests.task_functions import (  # noqa: E402
    add,
    note,
)

from .django_tasks_support import (  # noqa: E402
    BACKEND,
    DEFAULT,
    _tasks,  # noqa: F401 (an autouse fixture)
    pending,
)

pytestmark = pytest.mark.gaesignals_stores("memcached", "appengine")


# -- the backend and its settings ----------------------------------------------------------------


def test_capabilities_are_declared() -> None:
    """Defer, async tasks and results are supported; priority is not."""
    backend = task_backends["default"]
    assert isinstance(backend, SignalsBackend)
    assert backend.supports_defer and backend.supports_async_task and backend.supports_get_result
    assert not backend.supports_priority


@pytest.mark.parametrize(
    ("params", "says"),
    [
        ({"QUEUES": []}, "needs its QUEUES listed"),
        ({"OPTIONS": {"RESULTS_TTL": 5}}, "unknown OPTIONS"),
        ({"OPTIONS": {"RESULT_TTL": 0}}, "RESULT_TTL must be"),
        ({"OPTIONS": {"MAX_ATTEMPTS": 0}}, "MAX_ATTEMPTS must be a positive int"),
        ({"OPTIONS": {"RETRY_BACKOFF": 0.5}}, "retry_backoff must be"),
    ],
    ids=["no-queues", "unknown-option", "bad-ttl", "bad-attempts", "bad-backoff"],
)
def test_bad_backend_settings_are_refused(params: dict[str, Any], says: str) -> None:
    """Settings the backend cannot work with fail when Django builds it."""
    with (
        override_settings(TASKS={"default": {"BACKEND": BACKEND, **params}}),
        pytest.raises(InvalidTaskBackend, match=says),
    ):
        task_backends["default"]


def test_system_check_wants_the_gaesignals_app() -> None:
    """Django's check reports a SignalsBackend without the app that connects its queues."""
    backend = task_backends["default"]
    assert list(backend.check()) == []
    with override_settings(INSTALLED_APPS=["examples.django_app.guestbook"]):
        [error] = backend.check()
    assert error.id == "gaesignals.E001" and "INSTALLED_APPS" in error.hint


def test_each_queue_is_a_reliable_declared_signal() -> None:
    """Every queue of every SignalsBackend has its signal, reliable, with the retry options,
    allowing one delivery more than MAX_ATTEMPTS (which records a worker lost on the last)."""
    assert set(gaesignals.registry.names()) == {
        DEFAULT,
        queue_signal("default", "emails"),
        queue_signal("eager", "default"),
    }
    spec = gaesignals.registry.spec(DEFAULT)
    assert (spec.reliable, spec.max_attempts, spec.retry_delay) == (True, 4, 0)
    assert task_backends["default"].max_attempts == 3
    assert gaesignals.registry.spec(queue_signal("eager", "default")).max_attempts == 2
    assert task_backends["eager"].max_attempts == 1


# -- validate_task: Django's refusals ------------------------------------------------------------


def test_unknown_queue_is_refused() -> None:
    """A queue the backend does not list is refused, in Django's words."""
    with pytest.raises(InvalidTask, match=r"Queue 'nope' is not valid for backend\."):
        add.using(queue_name="nope")


def test_priority_is_refused() -> None:
    """A priority other than the default is refused: the backend does not support it."""
    with pytest.raises(InvalidTask, match="does not support setting priority"):
        add.using(priority=10)


def test_function_not_at_module_level_is_refused() -> None:
    """A task must be a module-level function, as Django requires."""

    def local() -> None: ...

    with pytest.raises(InvalidTask, match="defined at a module level"):
        task(local)


def test_takes_context_without_a_context_argument_is_refused() -> None:
    """takes_context needs a first argument named context."""
    with pytest.raises(InvalidTask, match="first argument of 'context'"):
        task(takes_context=True)(task_functions.add.func)


def test_naive_run_after_is_refused_with_use_tz() -> None:
    """With USE_TZ, run_after must be aware (Django's rule)."""
    with pytest.raises(InvalidTask, match="aware datetime"):
        add.using(run_after=datetime.now() + timedelta(minutes=1))


def test_run_after_past_the_longest_delay_is_refused() -> None:
    """A run_after further than a delayed send can wait fails at once, with the limit."""
    far = datetime.fromtimestamp(frames.clock(), UTC) + timedelta(days=8)
    with pytest.raises(InvalidTask, match="at most 7 days away"):
        add.using(run_after=far)
    assert pending() == 0


def test_unserialisable_arguments_fail_at_enqueue() -> None:
    """Arguments Django cannot normalise to JSON fail at enqueue, and nothing is stored."""
    with pytest.raises(gaesignals.UnserializablePayload, match="not JSON") as raised:
        add.enqueue(object(), 1)
    assert isinstance(raised.value, TypeError)
    assert pending() == 0


def test_bytes_that_are_not_text_fail_at_enqueue() -> None:
    """Bytes Django cannot decode (its ValueError) fail at enqueue too, as ours."""
    with pytest.raises(UnserializableArguments) as raised:
        note.enqueue(b"\xff")
    assert isinstance(raised.value, ValueError) and isinstance(raised.value, TypeError)
    assert pending() == 0
