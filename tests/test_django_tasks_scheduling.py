"""When a django.tasks task is stored and runs: run_after, at a transaction's commit, by each
delivery entry point (the command, the cron view, the worker), with Django's task signals.

Django 6 (which has ``django.tasks``) needs Python 3.12+: on older Pythons, or with Django 5,
the whole module skips. The fixtures and settings are django_tasks_support's."""

from __future__ import annotations

import contextlib
import io
import os
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

import gaesignals
from gaesignals import frames
from gaesignals.testing import MemcachedServer
from tests.django_tasks_support import require_django_tasks

require_django_tasks()  # before anything of Django: skips this module without Django 6

from django.core.management import call_command  # noqa: E402
from django.db import transaction  # noqa: E402
from django.tasks import (  # noqa: E402
    TaskResultStatus,
    default_task_backend,
    task_backends,
)
from django.tasks.exceptions import (  # noqa: E402
    TaskResultDoesNotExist,
)
from django.tasks.signals import task_enqueued, task_finished, task_started  # noqa: E402
from django.test import Client, override_settings  # noqa: E402

from gaesignals.contrib.django.tasks import (  # noqa: E402
    SignalsBackend,
    queue_signal,
)
from tests import task_functions  # noqa: E402
from tests.task_functions import (  # noqa: E402
    add,
    fail,
    note,
)

from .django_tasks_support import (  # noqa: E402
    _tasks,  # noqa: F401 (an autouse fixture)
    pending,
)

pytestmark = pytest.mark.gaesignals_stores("memcached", "appengine")

ROOT = Path(__file__).resolve().parent.parent
TOKEN = "t" * 40


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
