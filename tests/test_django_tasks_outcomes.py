"""The django.tasks backend's results are honest: a task runs once by default and ends FAILED,
a worker killed mid-task does not leave it RUNNING, a rebuilt backend declares its whole queue,
and neither a planted record nor a malformed one reads as a result or stops a task.

Django 6 needs Python 3.12+: on older Pythons the whole module skips (CI runs it on 3.13).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import gaesignals
from gaesignals import frames
from gaesignals.config import get_settings
from gaesignals.stores import Store
from gaesignals.testing import MemcachedServer, captured_signals
from tests.django_tasks_support import require_django_tasks

require_django_tasks()  # before anything of Django: skips this module without Django 6

from django.core import checks  # noqa: E402
from django.tasks import TaskResultStatus, default_task_backend  # noqa: E402
from django.tasks.exceptions import TaskResultDoesNotExist  # noqa: E402
from django.test import override_settings  # noqa: E402

from gaesignals.contrib.django import task_records  # noqa: E402
from gaesignals.contrib.django.tasks import (  # noqa: E402
    WorkerLost,
    connect_backends,
    queue_signal,
    run_task,
)
from tests.task_functions import add, fail, flaky, wait_to_be_killed  # noqa: E402

pytestmark = pytest.mark.gaesignals_stores("memory", "memcached", "appengine")

ROOT = Path(__file__).resolve().parent.parent
BACKEND = "gaesignals.contrib.django.tasks.SignalsBackend"
DEFAULT = queue_signal("default", "default")
#: How long a test waits for another process (a bound, never a pace).
PATIENCE = 60.0


def backend_with(**options: Any) -> Any:
    """TASKS with one SignalsBackend under ``options`` (Django's defaults for the rest)."""
    return override_settings(TASKS={"default": {"BACKEND": BACKEND, "OPTIONS": options}})


@pytest.fixture(autouse=True)
def _tasks(gaesignals_store: Store) -> Iterator[None]:
    """One SignalsBackend with no OPTIONS, its queue connected, on a fresh store."""
    with backend_with():
        connect_backends()
        yield


def record_of(result_id: str) -> dict[str, Any]:
    found = task_records.read(result_id, get_settings())
    assert found is not None
    return found


def plant(result_id: str, raw: bytes) -> None:
    """Put ``raw`` where the record of ``result_id`` lives."""
    key = task_records.record_key(result_id, get_settings().namespace)
    with get_settings().store.connection() as conn:
        conn.set_many({key: raw})


# -- one attempt by default ----------------------------------------------------------------------


def test_a_task_runs_once_by_default_and_ends_failed() -> None:
    """As Django's backends do: a task that raises ends FAILED with its exception after one
    attempt, and its payload is a dead letter, never run again."""
    assert default_task_backend.max_attempts == 1
    result = fail.enqueue("once")
    assert gaesignals.deliver() == 0
    result.refresh()
    assert result.status == TaskResultStatus.FAILED and result.attempts == 1
    [error] = result.errors
    assert error.exception_class is ValueError and "ValueError: once" in error.traceback
    [dead] = gaesignals.dead_letter_details(DEFAULT)
    assert dead.data["id"] == result.id
    assert gaesignals.deliver() == 0
    assert default_task_backend.get_result(result.id).attempts == 1


def test_max_attempts_retries_a_failed_task_after_its_backoff(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Retries stay an option: with MAX_ATTEMPTS 2 a failed task is READY again, waits out
    RETRY_DELAY (plus at most 10 % of jitter), then its second attempt runs."""
    now = [frames.clock()]
    monkeypatch.setattr(frames, "clock", lambda: now[0])
    with backend_with(MAX_ATTEMPTS=2, RETRY_DELAY=10):
        connect_backends()
        result = flaky.enqueue(1)
        assert gaesignals.deliver() == 0
        result.refresh()
        assert result.status == TaskResultStatus.READY and result.attempts == 1
        now[0] += 9
        assert gaesignals.deliver() == 0
        now[0] += 3
        assert gaesignals.deliver() == 1
        result.refresh()
    assert result.status == TaskResultStatus.SUCCESSFUL and result.return_value == 2


def test_a_rebuilt_backend_declares_its_whole_queue() -> None:
    """A backend rebuilt with fewer OPTIONS (override_settings) declares the defaults of those
    it lost: it reports and delivers one attempt, and its failed task ends FAILED."""
    with backend_with(MAX_ATTEMPTS=3, LEASE=5, RETRY_DELAY=0):
        connect_backends()
        assert gaesignals.registry.spec(DEFAULT).max_attempts == 4
    with backend_with():
        connect_backends()
        spec = gaesignals.registry.spec(DEFAULT)
        assert (spec.max_attempts, spec.lease, spec.retry_delay) == (2, 30, 1.0)
        assert default_task_backend.max_attempts == 1
        result = fail.enqueue("rebuilt")
        gaesignals.deliver()
        result.refresh()
        assert result.status == TaskResultStatus.FAILED and result.attempts == 1


# -- a worker lost mid-task ----------------------------------------------------------------------


def enqueued(task: Any, *args: Any) -> tuple[Any, dict[str, Any]]:
    """Enqueue ``task``: its result, and the payload that reached the queue."""
    with captured_signals() as sent:
        result = task.enqueue(*args)
    [payload] = sent.data(DEFAULT)
    return result, payload


def running(result_id: str, attempts: int = 1) -> dict[str, Any]:
    """The record of ``result_id`` as a worker killed mid-task leaves it: RUNNING."""
    record = record_of(result_id)
    record.update(status="RUNNING", worker_ids=["gone"] * attempts)
    record["started_at"] = record["enqueued_at"]
    return record


def mark_running(result_id: str, payload: dict[str, Any]) -> None:
    """Write what a worker of ``payload`` killed mid-task leaves (its write, so sealed)."""
    task_records.write({**running(result_id), "nonce": payload["nonce"]}, get_settings(), 60)


def test_a_result_left_running_is_a_lost_attempt_then_run_again() -> None:
    """A delivery that finds its result RUNNING records the lost attempt (WorkerLost) and
    runs the task again while attempts remain."""
    with backend_with(MAX_ATTEMPTS=2):
        connect_backends()
        result, payload = enqueued(add, 1, 2)
        mark_running(result.id, payload)
        assert gaesignals.deliver() == 1
        result.refresh()
    assert result.status == TaskResultStatus.SUCCESSFUL and result.return_value == 3
    assert result.attempts == 2 and result.errors[0].exception_class is WorkerLost


def test_a_result_left_running_on_its_last_attempt_ends_failed() -> None:
    """With no attempt left, a result found RUNNING ends FAILED with WorkerLost, its payload a
    dead letter, and the task is not run again."""
    result, payload = enqueued(add, 1, 2)
    mark_running(result.id, payload)
    assert gaesignals.deliver() == 0
    result.refresh()
    assert result.status == TaskResultStatus.FAILED and result.attempts == 1
    assert result.errors[0].exception_class is WorkerLost
    assert [dead.data["id"] for dead in gaesignals.dead_letter_details(DEFAULT)] == [result.id]


def await_status(result: Any, status: str, child: subprocess.Popen[str] | None = None) -> None:
    """Refresh ``result`` until it has ``status``; fail past PATIENCE or if ``child`` ends."""
    deadline, pause = time.monotonic() + PATIENCE, threading.Event()
    while True:
        result.refresh()
        if result.status == status:
            return
        assert child is None or child.poll() is None, "the worker ended on its own"
        assert time.monotonic() < deadline, f"{result.id} never became {status}"
        pause.wait(0.05)


@pytest.mark.gaesignals_stores("memcached")
def test_a_task_whose_worker_is_killed_ends_failed(gaesignals_memcached: MemcachedServer) -> None:
    """A worker process killed mid-task leaves its result RUNNING only until a delivery after
    the lock's lease: then it is FAILED (WorkerLost) and a dead letter, on a real memcached."""
    options = {"LEASE": 1}  # the killed worker's lock lives 2 x 1 + 1 s on the server's clock
    settings = get_settings()
    env = dict(os.environ, PYTHONPATH=str(ROOT), GAESIGNALS_STORE=gaesignals_memcached.url)
    env["GAESIGNALS_NAMESPACE"] = settings.namespace
    with backend_with(**options):
        connect_backends()
        result = wait_to_be_killed.enqueue(PATIENCE)
        worker = subprocess.Popen(
            [sys.executable, "-m", "tests.django_task_workers", json.dumps(options)],
            cwd=ROOT,
            env=env,
            text=True,
        )
        try:
            await_status(result, TaskResultStatus.RUNNING, worker)
        finally:
            worker.kill()
            worker.wait(PATIENCE)
        deadline, pause = time.monotonic() + PATIENCE, threading.Event()
        while not result.is_finished and time.monotonic() < deadline:
            gaesignals.deliver()  # returns 0 while the dead worker's lock lives
            result.refresh()
            pause.wait(0.05)
    assert result.status == TaskResultStatus.FAILED and result.attempts == 1
    assert result.errors[0].exception_class is WorkerLost
    assert [dead.data["id"] for dead in gaesignals.dead_letter_details(DEFAULT)] == [result.id]


# -- planted and malformed records ---------------------------------------------------------------


def planted_success(result_id: str) -> dict[str, Any]:
    record = record_of(result_id)
    record.update(status="SUCCESSFUL", return_value=999, worker_ids=["forger"])
    record["finished_at"] = record["enqueued_at"]
    return record


def test_without_a_key_a_planted_success_does_not_stop_the_task() -> None:
    """Without a secret key a planted SUCCESSFUL record is not proof: the queued task runs,
    and the result then says what really happened."""
    assert not get_settings().secret_keys
    result = add.enqueue(2, 3)
    task_records.write(planted_success(result.id), get_settings(), 60)
    assert gaesignals.deliver() == 1
    result.refresh()
    assert result.return_value == 5 and result.worker_ids != ["forger"]


def test_without_a_key_a_planted_running_record_does_not_fail_the_task() -> None:
    """Without a secret key a planted record that spent every attempt is not believed either:
    it does not bear the payload's seal, and the task runs."""
    result = add.enqueue(2, 3)
    task_records.write(running(result.id, attempts=5), get_settings(), 60)
    assert gaesignals.deliver() == 1
    result.refresh()
    assert result.return_value == 5 and result.attempts == 1 and result.errors == []


def test_with_a_key_a_planted_success_reads_as_missing_and_the_task_runs(
    gaesignals_store: Store,
) -> None:
    """With a secret key an unsigned record is no result, and does not stop the task."""
    gaesignals.configure(store=gaesignals_store, secret_key="k" * 32)
    result = add.enqueue(2, 3)
    planted = json.dumps(planted_success(result.id)).encode()
    plant(result.id, b"- " + planted)
    with pytest.raises(TaskResultDoesNotExist):
        result.refresh()
    assert gaesignals.deliver() == 1
    assert add.get_result(result.id).return_value == 5


def test_the_deploy_check_wants_a_secret_key(gaesignals_store: Store) -> None:
    """``check --deploy`` warns about a SignalsBackend without a gaesignals secret key."""
    [warning] = checks.run_checks(include_deployment_checks=True, tags=["gaesignals"])
    assert warning.id == "gaesignals.W001" and "SECRET_KEY" in warning.hint
    gaesignals.configure(store=gaesignals_store, secret_key="k" * 32)
    assert checks.run_checks(include_deployment_checks=True, tags=["gaesignals"]) == []


MALFORMED = {
    "deeply-nested": {"args": "NESTED"},
    "error-without-parts": {"errors": [[]]},
    "task-a-number": {"task": 123},
    "queue-a-number": {"queue": 1},
    "queue-not-listed": {"queue": "elsewhere"},
    "status-unknown": {"status": "DONE"},
    "date-not-a-date": {"started_at": "yesterday"},
    "worker-a-number": {"worker_ids": [1]},
    "another-id": {"id": "y" * 32},
}


@pytest.mark.parametrize("change", list(MALFORMED.values()), ids=list(MALFORMED))
def test_a_malformed_record_reads_as_missing_and_the_task_runs(change: dict[str, Any]) -> None:
    """A record with a field of the wrong shape, or nested past what Python walks, is
    TaskResultDoesNotExist (not an IndexError, AttributeError or RecursionError), and the
    queued task still runs from its payload."""
    result = add.enqueue(1, 2)
    body = json.dumps({**record_of(result.id), **change}).encode()
    plant(result.id, b"- " + body.replace(b'"NESTED"', b"[" * 100_000 + b"]" * 100_000))
    with pytest.raises(TaskResultDoesNotExist):
        default_task_backend.get_result(result.id)
    assert gaesignals.deliver() == 1
    assert add.get_result(result.id).return_value == 3


#: The shapes a payload cannot have either (its queue and id are its own).
BAD_PAYLOADS = [name for name in MALFORMED if name not in ("queue-not-listed", "another-id")]


@pytest.mark.parametrize("name", BAD_PAYLOADS)
def test_a_malformed_payload_is_rejected(name: str) -> None:
    """A payload of the wrong shape is rejected (a dead letter), never half run."""
    result, payload = enqueued(add, 1, 2)
    with pytest.raises(gaesignals.Reject, match=r"not a django\.tasks payload"):
        run_task({**payload, **MALFORMED[name]})
    with pytest.raises(gaesignals.Reject, match=r"not a django\.tasks payload"):
        run_task({**payload, "nonce": None})
    run_task(payload)  # the payload as sent runs
    assert add.get_result(result.id).return_value == 3
