"""The django.tasks backend's enqueueing, delivery and results, against a real memcached and the
App Engine stub: a result is stored at enqueue, recorded when the task runs, kept for its TTL and
never read as a success it was not.

Django 6 (which has ``django.tasks``) needs Python 3.12+: on older Pythons, or with Django 5,
the whole module skips. The fixtures and settings are django_tasks_support's."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

import pytest

import gaesignals
from gaesignals.config import get_settings
from gaesignals.stores import Store
from gaesignals.stores.memory import MemoryStore
from gaesignals.testing import captured_signals
from tests.django_tasks_support import require_django_tasks

require_django_tasks()  # before anything of Django: skips this module without Django 6

from django.tasks import (  # noqa: E402
    TaskResultStatus,
    default_task_backend,
    task_backends,
)
from django.tasks.exceptions import (  # noqa: E402
    TaskResultDoesNotExist,
    TaskResultMismatch,
)
from django.test import override_settings  # noqa: E402
from django.utils import timezone  # noqa: E402

from gaesignals.contrib.django import task_records  # noqa: E402
from gaesignals.contrib.django.tasks import (  # noqa: E402
    connect_backends,
    queue_signal,
)
from tests import task_functions  # noqa: E402
from tests.task_functions import (  # noqa: E402
    add,
    attempt_number,
    double,
    fail,
    note,
)

from .django_tasks_support import (  # noqa: E402
    BACKEND,
    DEFAULT,
    _tasks,  # noqa: F401 (an autouse fixture)
    pending,
)

pytestmark = pytest.mark.gaesignals_stores("memcached", "appengine")


# -- enqueue, deliver, results -------------------------------------------------------------------


def test_enqueue_stores_a_ready_result_and_its_payload() -> None:
    """enqueue returns a READY result with its id and enqueued_at, readable from the store,
    and queues one payload: the task's path and its JSON-normalised arguments."""
    result = add.enqueue(2, b=(3,))
    assert result.status == TaskResultStatus.READY and result.enqueued_at is not None
    assert (result.args, result.kwargs) == ([2], {"b": [3]})  # as Django normalises them
    assert pending() == 1
    again = default_task_backend.get_result(result.id)
    assert (again.id, again.status, again.task.func) == (result.id, "READY", add.func)
    assert again.enqueued_at == result.enqueued_at and again.attempts == 0
    with pytest.raises(ValueError, match="not finished"):
        again.return_value  # noqa: B018


def test_delivery_runs_the_task_and_records_its_success() -> None:
    """A delivery runs the task; refresh() then reads SUCCESSFUL with its return value."""
    result = add.enqueue(2, 3)
    assert gaesignals.deliver() == 1
    result.refresh()
    assert result.status == TaskResultStatus.SUCCESSFUL and result.return_value == 5
    assert result.attempts == 1 and result.errors == []
    assert result.enqueued_at <= result.started_at <= result.finished_at
    assert result.last_attempted_at == result.started_at
    assert pending() == 0


def test_get_result_checks_the_task() -> None:
    """Task.get_result finds its own results and refuses another task's."""
    result = add.enqueue(1, 1)
    assert add.get_result(result.id).id == result.id
    with pytest.raises(TaskResultMismatch):
        note.get_result(result.id)


@pytest.mark.parametrize("result_id", ["x" * 32, "../etc", "", "a b"])
def test_unknown_result_ids_do_not_exist(result_id: str) -> None:
    """An id never stored, or not an id at all, is TaskResultDoesNotExist."""
    with pytest.raises(TaskResultDoesNotExist):
        default_task_backend.get_result(result_id)


def test_an_evicted_result_reads_as_missing_never_as_success() -> None:
    """A record the cache lost is TaskResultDoesNotExist; the task still runs at delivery,
    and what it records from then on reads back."""
    result = add.enqueue(4, 4)
    task_records.delete(result.id, get_settings())
    with pytest.raises(TaskResultDoesNotExist):
        result.refresh()
    assert gaesignals.deliver() == 1
    result.refresh()
    assert result.status == TaskResultStatus.SUCCESSFUL and result.return_value == 8


def test_a_planted_record_reads_as_missing(gaesignals_store: Store) -> None:
    """With a secret key, a record that is not signed by it is not a result."""
    gaesignals.configure(store=gaesignals_store, secret_key="k" * 32)
    result = add.enqueue(1, 2)
    assert default_task_backend.get_result(result.id).status == "READY"
    gaesignals.configure(store=gaesignals_store, secret_key="o" * 32)
    with pytest.raises(TaskResultDoesNotExist):
        default_task_backend.get_result(result.id)


@pytest.mark.parametrize(
    "planted",
    [b"- {}", b"- [1]", b"- not json", b'- {"id": 1}', b"nonsense"],
    ids=["empty", "list", "not-json", "partial", "no-head"],
)
def test_a_record_that_is_not_one_reads_as_missing(gaesignals_store: Store, planted: bytes) -> None:
    """Whatever else sits at a result's key is not a result."""
    result = add.enqueue(1, 2)
    key = task_records.record_key(result.id, get_settings().namespace)
    with gaesignals_store.connection() as conn:
        conn.set_many({key: planted})
    with pytest.raises(TaskResultDoesNotExist):
        result.refresh()


@pytest.mark.gaesignals_stores("memory")
def test_a_result_is_kept_result_ttl_seconds_after_its_last_change() -> None:
    """RESULT_TTL counts from the record's last write; a deferred task's READY record is kept
    until RESULT_TTL after its run_after."""
    now = [1000.0]
    gaesignals.configure(store=MemoryStore(clock=lambda: now[0]))
    tasks = {"default": {"BACKEND": BACKEND, "OPTIONS": {"RESULT_TTL": 60}}}
    with override_settings(TASKS=tasks):
        connect_backends()
        done = add.enqueue(1, 1)
        later = add.using(run_after=timezone.now() + timedelta(seconds=600)).enqueue(2, 2)
        now[0] += 30
        gaesignals.deliver()
        now[0] += 59
        assert done.task.get_backend().get_result(done.id).return_value == 2
        now[0] += 2
        with pytest.raises(TaskResultDoesNotExist):
            done.refresh()
        now[0] += 500  # 591 s after the enqueue: 60 s past its run_after yet to come
        assert later.task.get_backend().get_result(later.id).status == TaskResultStatus.READY
        now[0] += 100
        with pytest.raises(TaskResultDoesNotExist):
            later.refresh()


def test_using_another_queue_and_backend() -> None:
    """using() picks the queue (its own signal) and the backend alias."""
    emails = add.using(queue_name="emails").enqueue(1, 2)
    other = add.using(backend="eager").enqueue(3, 4)
    assert pending(queue_signal("default", "emails")) == 1
    assert pending(queue_signal("eager", "default")) == 1
    assert (emails.task.queue_name, other.backend) == ("emails", "eager")
    assert gaesignals.deliver() == 2
    assert task_backends["eager"].get_result(other.id).return_value == 7
    emails.refresh()
    assert emails.return_value == 3 and emails.task.queue_name == "emails"


def test_aenqueue_and_aget_result() -> None:
    """The async API enqueues and reads results as the sync one does."""

    async def go() -> tuple[Any, Any]:
        result = await add.aenqueue(5, 6)
        await asyncio.to_thread(gaesignals.deliver)
        await result.arefresh()
        return result, await add.aget_result(result.id)

    result, found = asyncio.run(go())
    assert result.return_value == 11 and found.status == TaskResultStatus.SUCCESSFUL


def test_a_coroutine_task_is_awaited() -> None:
    """An async def task runs to completion at delivery."""
    result = double.enqueue(21)
    assert gaesignals.deliver() == 1
    result.refresh()
    assert result.return_value == 42


def test_takes_context_gets_the_result_and_attempt() -> None:
    """A takes_context task gets its TaskResult and attempt number."""
    result = attempt_number.enqueue()
    gaesignals.deliver()
    result.refresh()
    assert result.return_value == {"attempt": 1, "id": result.id}


def test_a_task_recorded_as_successful_is_not_run_again() -> None:
    """A payload delivered again after its task succeeded (its deliverer died before removing
    it) does not run the task a second time: its record, sealed by the payload, says so."""
    with captured_signals() as sent:
        result = note.enqueue("once")
    [payload] = sent.data(DEFAULT)
    gaesignals.deliver()
    record = task_records.read(result.id, get_settings())
    assert record is not None and record["status"] == "SUCCESSFUL"
    task_backends["default"].run(payload)
    assert task_functions.NOTED == ["once"]


def test_eager_mode_runs_the_task_at_enqueue(gaesignals_store: Store) -> None:
    """With gaesignals' eager mode the task runs at enqueue, as Django's ImmediateBackend
    runs it: the returned result is finished, a failure recorded and not raised."""
    gaesignals.configure(store=gaesignals_store, eager=True)
    assert add.enqueue(2, 2).return_value == 4
    failed = fail.enqueue("eager")
    assert failed.status == TaskResultStatus.FAILED and failed.attempts == 1
    assert "ValueError: eager" in failed.errors[0].traceback
    assert pending() == 0
