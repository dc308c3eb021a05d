"""The django.tasks backend, against a real memcached and the App Engine stub: enqueueing,
delivery by every entry point, results, failures, retries, context, defer, signals, commits.

Django 6 (which has ``django.tasks``) needs Python 3.12+: on older Pythons, or with Django 5,
the whole module skips. Django is configured once per process (tests/django_setup.py); each
test sets ``TASKS`` with ``override_settings`` (Django then builds its backends anew) and
connects their queues again, as the app does at start-up.
"""

from __future__ import annotations

import importlib.util
import sys

import pytest

if sys.version_info < (3, 12) or importlib.util.find_spec("django.tasks") is None:
    pytest.skip(
        "django.tasks needs Django 6, which needs Python 3.12+ (CI runs this on 3.13)",
        allow_module_level=True,
    )

import asyncio
import contextlib
import io
import logging
import os
import subprocess
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import gaesignals
from gaesignals import frames
from gaesignals.config import get_settings
from gaesignals.stores import Store
from gaesignals.stores.memory import MemoryStore
from gaesignals.testing import MemcachedServer, captured_signals
from tests.django_setup import setup_django

setup_django()

from django.core.management import call_command  # noqa: E402
from django.db import transaction  # noqa: E402
from django.tasks import (  # noqa: E402
    TaskResultStatus,
    default_task_backend,
    task,
    task_backends,
)
from django.tasks.exceptions import (  # noqa: E402
    InvalidTask,
    InvalidTaskBackend,
    TaskResultDoesNotExist,
    TaskResultMismatch,
)
from django.tasks.signals import task_enqueued, task_finished, task_started  # noqa: E402
from django.test import Client, override_settings  # noqa: E402
from django.utils import timezone  # noqa: E402

from gaesignals.contrib.django import task_records  # noqa: E402
from gaesignals.contrib.django.tasks import (  # noqa: E402
    MissingTask,
    SignalsBackend,
    TaskFailed,
    UnserializableArguments,
    connect_backends,
    queue_signal,
)
from tests import task_functions  # noqa: E402
from tests.task_functions import (  # noqa: E402
    add,
    attempt_number,
    double,
    exits,
    fail,
    flaky,
    note,
    unreturnable,
)

pytestmark = pytest.mark.gaesignals_stores("memcached", "appengine")

ROOT = Path(__file__).resolve().parent.parent
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
TOKEN = "t" * 40


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


@contextlib.contextmanager
def received(*signals: Any) -> Iterator[list[tuple[str, Any, str]]]:
    """(signal, sender, status) for each of Django's task signals sent meanwhile."""
    seen: list[tuple[str, Any, str]] = []
    names = {task_enqueued: "enqueued", task_started: "started", task_finished: "finished"}
    receivers = []
    for signal in signals:

        def receive(sender: Any, task_result: Any, _name: str = names[signal], **kw: Any) -> None:
            seen.append((_name, sender, task_result.status))

        signal.connect(receive, weak=False)
        receivers.append((signal, receive))
    try:
        yield seen
    finally:
        for signal, receive in receivers:
            signal.disconnect(receive)


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


# -- run_after -----------------------------------------------------------------------------------


def test_run_after_holds_the_task_until_due(monkeypatch: pytest.MonkeyPatch) -> None:
    """A task with run_after is not run before then, and is at the first delivery after."""
    now = [frames.clock()]
    monkeypatch.setattr(frames, "clock", lambda: now[0])
    when = datetime.fromtimestamp(now[0], UTC) + timedelta(seconds=60)
    result = add.using(run_after=when).enqueue(1, 2)
    assert result.task.run_after == when
    assert gaesignals.deliver() == 0
    now[0] += 59
    assert gaesignals.deliver() == 0
    assert default_task_backend.get_result(result.id).status == TaskResultStatus.READY
    now[0] += 2
    assert gaesignals.deliver() == 1
    result.refresh()
    assert result.return_value == 3 and result.task.run_after == when


def test_run_after_in_the_past_runs_at_once() -> None:
    """A run_after already past is due now."""
    when = datetime.fromtimestamp(frames.clock(), UTC) - timedelta(hours=1)
    result = add.using(run_after=when).enqueue(1, 1)
    assert gaesignals.deliver() == 1
    assert add.get_result(result.id).return_value == 2


# -- Django's signals ----------------------------------------------------------------------------


def test_task_signals_fire_with_the_backend_as_sender() -> None:
    """task_enqueued at enqueue, task_started and task_finished around the run."""
    with received(task_enqueued, task_started, task_finished) as seen:
        add.enqueue(1, 2)
        assert seen == [("enqueued", SignalsBackend, "READY")]
        gaesignals.deliver()
    assert seen[1:] == [
        ("started", SignalsBackend, "RUNNING"),
        ("finished", SignalsBackend, "SUCCESSFUL"),
    ]


def test_task_finished_fires_once_a_failure_is_final() -> None:
    """A retried attempt starts again; task_finished comes with the last, FAILED."""
    with received(task_started, task_finished) as seen:
        fail.enqueue("x")
        for _ in range(3):
            gaesignals.deliver()
    assert [what for what, _, _ in seen] == ["started"] * 3 + ["finished"]
    assert seen[-1][2] == TaskResultStatus.FAILED


# -- transactions --------------------------------------------------------------------------------


def test_inside_atomic_the_task_is_stored_at_commit() -> None:
    """Inside transaction.atomic the result has its id and enqueued_at at once, and the task
    is stored (and task_enqueued sent) only when the transaction commits."""
    with received(task_enqueued) as seen, transaction.atomic():
        result = note.enqueue("committed")
        assert result.id and result.enqueued_at is not None
        assert pending() == 0 and seen == []
        with pytest.raises(TaskResultDoesNotExist):
            result.refresh()
    assert pending() == 1 and len(seen) == 1
    gaesignals.deliver()
    assert task_functions.NOTED == ["committed"]


def test_a_rolled_back_transaction_never_stores_the_task() -> None:
    """A rollback drops the task: nothing is queued, no result exists."""
    with contextlib.suppress(RuntimeError), transaction.atomic():
        result = note.enqueue("rolled back")
        raise RuntimeError("roll back")
    assert pending() == 0
    with pytest.raises(TaskResultDoesNotExist):
        result.refresh()


def test_unserialisable_arguments_fail_at_enqueue_inside_atomic() -> None:
    """Inside a transaction too, bad arguments fail at enqueue, not at commit."""
    with transaction.atomic(), pytest.raises(gaesignals.UnserializablePayload):
        note.enqueue({1, 2})


def test_on_commit_off_stores_inside_atomic_at_once() -> None:
    """Without ON_COMMIT (Django's default), a task enqueued in a transaction is stored at
    once, and stays stored if the transaction rolls back."""
    with contextlib.suppress(RuntimeError), transaction.atomic():
        result = note.using(backend="eager").enqueue("now")
        assert pending(queue_signal("eager", "default")) == 1
        raise RuntimeError("roll back")
    assert task_backends["eager"].get_result(result.id).status == "READY"


# -- the delivery entry points -------------------------------------------------------------------


def test_deliver_signals_command_runs_due_tasks() -> None:
    """manage.py deliver_signals runs the queued tasks."""
    result = add.enqueue(10, 20)
    out = io.StringIO()
    call_command("deliver_signals", stdout=out)
    assert out.getvalue() == "delivered 1\n"
    assert add.get_result(result.id).return_value == 30


def test_cron_view_runs_due_tasks() -> None:
    """The cron view runs the queued tasks for its token."""
    result = add.enqueue(7, 8)
    with override_settings(
        ROOT_URLCONF="tests.django_urls", GAESIGNALS={"DELIVER": None, "CRON_TOKEN": TOKEN}
    ):
        answer = Client().post(
            "/tasks/deliver-signals", headers={"Authorization": f"Bearer {TOKEN}"}
        )
    assert answer.json() == {"delivered": 1}
    assert add.get_result(result.id).return_value == 15


@pytest.mark.gaesignals_stores("memcached")
def test_gaesignals_worker_runs_due_tasks(
    gaesignals_memcached: MemcachedServer, tmp_path: Path
) -> None:
    """``gaesignals worker --once gaesignals.contrib.django.worker``, in its own process with
    the example's settings, runs a task this process enqueued."""
    result = add.enqueue(100, 1)
    env = dict(os.environ)  # this process's gaesignals settings but for the store
    env.update(
        PYTHONPATH=str(ROOT),
        DJANGO_SETTINGS_MODULE="examples.django_app.settings",
        GAESIGNALS_STORE=gaesignals_memcached.url,
        GUESTBOOK_DB=str(tmp_path / "db.sqlite3"),
    )
    command = [sys.executable, "-m", "gaesignals", "worker", "--once"]
    done = subprocess.run(
        [*command, "gaesignals.contrib.django.worker"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert add.get_result(result.id).return_value == 101
