"""A ``django.tasks`` backend (Django 6+, Python 3.12+) that queues tasks as gaesignals payloads.

::

    TASKS = {
        "default": {
            "BACKEND": "gaesignals.contrib.django.tasks.SignalsBackend",
            "QUEUES": ["default", "emails"],
            "OPTIONS": {"RESULT_TTL": 86400},
        }
    }

Each queue is one gaesignals signal, ``django_tasks.<alias>.<queue>``, declared reliable (the
whole declaration, from OPTIONS and the defaults, each time a backend is built) and
connected to :func:`run_task` when the backend is set up (the ``gaesignals.contrib.django``
app does it for every configured ``SignalsBackend`` at start-up), so whatever delivers the
registered signals runs the due tasks: the middleware, ``manage.py deliver_signals``, the cron
view, ``gaesignals worker gaesignals.contrib.django.worker``.

As Django's own backends do, a task runs once by default: one that raises ends FAILED with
its exception (and its payload is a dead letter); ``MAX_ATTEMPTS`` above 1 retries it with
backoff. The backend counts the attempts in the result, and its queue signals allow one
delivery more than that, so that a task whose process was killed on its last attempt is
recorded FAILED (:class:`WorkerLost`) by the next delivery rather than left RUNNING.

A payload is the task's import path and the JSON-normalised arguments Django hands the
backend, with the result id; the result (status, timestamps, errors with their traceback,
worker ids, the return value) is a record in the same cache (:mod:`.task_records`), kept
``RESULT_TTL`` seconds, and an evicted one reads as missing, never as a success.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from traceback import format_exception
from typing import Any

from django.apps import apps
from django.core import checks
from django.db import transaction
from django.tasks import Task, TaskContext, TaskResult, TaskResultStatus, task_backends
from django.tasks.backends.base import BaseTaskBackend
from django.tasks.base import TaskError
from django.tasks.exceptions import InvalidTask, InvalidTaskBackend, TaskResultDoesNotExist
from django.tasks.signals import task_enqueued, task_finished, task_started
from django.utils import timezone
from django.utils.crypto import get_random_string
from django.utils.json import normalize_json
from django.utils.module_loading import import_string

from ... import frames
from ...codec import encode_payload
from ...config import Settings, get_settings
from ...exceptions import GaeSignalsError, Reject, UnserializablePayload
from ...keys import check_name, signal_keys
from ...registration import (
    DEFAULT_LEASE,
    DEFAULT_RETRY_BACKOFF,
    DEFAULT_RETRY_DELAY,
    DEFAULT_RETRY_MAX_DELAY,
    SignalSpec,
    registry,
)
from ...sending import send
from ...timing import MAX_DELAY
from . import task_records

logger = logging.getLogger("gaesignals")

DEFAULT_RESULT_TTL = 24 * 3600
#: memcached reads an expiry past 30 days as a date: a record (kept RESULT_TTL after its
#: task's run_after, at most MAX_DELAY away) must stay below that.
MAX_RESULT_TTL = 30 * 24 * 3600 - MAX_DELAY
#: How many times a task runs unless OPTIONS say otherwise: once, as Django's backends run it.
DEFAULT_MAX_ATTEMPTS = 1
#: OPTIONS key -> (gaesignals.declare() argument of every queue signal, its default here).
DECLARE_OPTIONS: dict[str, tuple[str, Any]] = {
    "RELIABLE": ("reliable", True),
    "MAX_ATTEMPTS": ("max_attempts", DEFAULT_MAX_ATTEMPTS),
    "LEASE": ("lease", DEFAULT_LEASE),
    "RETRY_DELAY": ("retry_delay", DEFAULT_RETRY_DELAY),
    "RETRY_BACKOFF": ("retry_backoff", DEFAULT_RETRY_BACKOFF),
    "RETRY_MAX_DELAY": ("retry_max_delay", DEFAULT_RETRY_MAX_DELAY),
}
OPTIONS = {"ON_COMMIT", "RESULT_TTL", *DECLARE_OPTIONS}


def queue_signal(alias: str, queue: str) -> str:
    """The gaesignals signal that carries the tasks of one queue of one backend."""
    return check_name(f"django_tasks.{alias}.{queue}")


class UnserializableArguments(UnserializablePayload, ValueError):
    """Task arguments Django cannot normalise to JSON: a ``TypeError`` and a ``ValueError``,
    as ``normalize_json`` raises either."""


class TaskFailed(GaeSignalsError):
    """A task raised something that is not an ``Exception`` (``SystemExit``); delivery sees
    this in its place, so the worker goes on."""


class WorkerLost(GaeSignalsError):
    """The error recorded for an attempt whose process died mid-run (killed, out of memory):
    the next delivery found the result still RUNNING."""


def missing_task(*args: Any, **kwargs: Any) -> None:
    """What a :class:`MissingTask` calls: nothing can run a task that does not import."""
    raise ImportError("this task no longer imports")


@dataclass(frozen=True, slots=True, kw_only=True)
class MissingTask(Task):
    """The task of a result whose import path no longer imports: ``module_path`` is that path."""

    path: str = ""

    @property
    def module_path(self) -> str:
        return self.path

    @property
    def name(self) -> str:
        return self.path.rpartition(".")[2]


class SignalsBackend(BaseTaskBackend):
    """Tasks queued in the gaesignals store, run by whatever delivers its signals.

    ``OPTIONS``: ``ON_COMMIT`` (default False, as Django's backends: True stores a task
    enqueued inside ``transaction.atomic`` when the transaction commits, never if it rolls
    back), ``RESULT_TTL`` (seconds a result is kept, default one day), ``MAX_ATTEMPTS``
    (default 1: a task runs once), and the queue signals' delivery options ``RELIABLE``
    (default True), ``LEASE``, ``RETRY_DELAY``, ``RETRY_BACKOFF`` and ``RETRY_MAX_DELAY``
    (see :func:`gaesignals.declare`).
    """

    supports_defer = True
    supports_async_task = True
    supports_get_result = True
    supports_priority = False

    def __init__(self, alias: str, params: dict[str, Any]) -> None:
        super().__init__(alias, params)
        self.worker_id = get_random_string(32)
        unknown = sorted(set(self.options) - OPTIONS)
        if unknown:
            raise InvalidTaskBackend(f"unknown OPTIONS for task backend {alias!r}: {unknown}")
        if not self.queues:
            raise InvalidTaskBackend(
                f"task backend {alias!r} needs its QUEUES listed: each is a signal to deliver"
            )
        if not all(isinstance(queue, str) and queue for queue in self.queues):
            raise InvalidTaskBackend(f"queue names must be non-empty strings: {self.queues!r}")
        self.on_commit = bool(self.options.get("ON_COMMIT", False))
        self.result_ttl = self.options.get("RESULT_TTL", DEFAULT_RESULT_TTL)
        ttl = self.result_ttl
        if not isinstance(ttl, int) or isinstance(ttl, bool) or not 1 <= ttl <= MAX_RESULT_TTL:
            raise InvalidTaskBackend(f"RESULT_TTL must be 1..{MAX_RESULT_TTL} s, got {ttl!r}")
        self.declared = _declaration(alias, self.options)
        self.signals = {queue: queue_signal(alias, queue) for queue in sorted(self.queues)}
        self.connect()

    def connect(self) -> None:
        """Declare every queue's signal, whole, and connect :func:`run_task` to it
        (idempotent); done at set-up, again after ``gaesignals.registry.clear()``. Whole:
        ``declare`` keeps what an option left out was before, and a backend rebuilt with
        fewer OPTIONS (``override_settings``) must not inherit the last one's."""
        for name in self.signals.values():
            spec = registry.spec(name)
            if any(getattr(spec, option) != value for option, value in self.declared.items()):
                registry.declare(name, **self.declared)  # not anew for each thread's backend
            registry.connect(name, run_task)

    def check(self, **kwargs: Any) -> Iterator[Any]:
        """Django's system check: without the app, a worker process never connects the
        queues (nothing would run the tasks)."""
        yield from super().check(**kwargs)
        if not apps.is_installed("gaesignals.contrib.django"):
            yield checks.Error(
                f"task backend {self.alias!r} is a SignalsBackend, but the gaesignals app is "
                "not installed, so no deliverer would run its tasks",
                hint="Add 'gaesignals.contrib.django' to INSTALLED_APPS.",
                id="gaesignals.E001",
            )

    @property
    def max_attempts(self) -> int:
        """How many times a task may run: the queue signals allow one delivery more, which
        records a task whose last attempt killed its process as FAILED."""
        if not self.declared["reliable"]:
            return 1
        found: int = self.declared["max_attempts"] - 1
        return found

    # -- enqueueing -------------------------------------------------------------------------

    def validate_task(self, task: Task) -> None:
        """Django's checks, and a ``run_after`` within what a delayed send can wait."""
        super().validate_task(task)
        if task.run_after is not None:
            seconds = _aware(task.run_after).timestamp() - frames.clock()
            if seconds > MAX_DELAY:
                raise InvalidTask(
                    f"run_after may be at most {MAX_DELAY // 86400} days away ({MAX_DELAY} s), "
                    f"not {seconds:.0f} s: the cache may evict what waits longer"
                )

    def enqueue(self, task: Task, args: Any, kwargs: Any) -> TaskResult:
        """Store the task (at commit, inside ``transaction.atomic``) and return its result,
        with its id and ``enqueued_at`` set either way. Arguments Django cannot normalise to
        JSON raise :class:`UnserializableArguments` (an
        :class:`~gaesignals.UnserializablePayload`)."""
        self.validate_task(task)
        try:
            result = TaskResult(
                task=task,
                id=get_random_string(32),
                status=TaskResultStatus.READY,
                enqueued_at=timezone.now(),
                started_at=None,
                last_attempted_at=None,
                finished_at=None,
                args=args,
                kwargs=kwargs,
                backend=self.alias,
                errors=[],
                worker_ids=[],
            )
        except (TypeError, ValueError) as error:
            raise UnserializableArguments(
                f"the arguments of task {task.module_path} are not JSON: {error}"
            ) from error
        record = _record(result)
        name = self.signals[task.queue_name]
        if self.on_commit and transaction.get_connection().in_atomic_block:
            settings = get_settings()
            encode_payload(name, record, signal_keys(name, settings.namespace), settings)  # now
            transaction.on_commit(lambda: self._store(name, record, result))
        else:
            self._store(name, record, result)
        return result

    def _store(self, name: str, record: dict[str, Any], result: TaskResult) -> None:
        """The record first (a deliverer finds it), then the payload; no payload, no record.
        In gaesignals' eager mode the task runs now instead, as Django's ImmediateBackend
        runs it: once, its failure recorded, not raised."""
        settings = get_settings()
        eta = None if result.task.run_after is None else _aware(result.task.run_after)
        wait = 0 if eta is None else max(0, int(eta.timestamp() - frames.clock()) + 1)
        task_records.write(record, settings, self.result_ttl + wait)
        if settings.eager:
            task_enqueued.send(type(self), task_result=result)
            with contextlib.suppress(Exception):
                self.run(record, last=True)
            with contextlib.suppress(TaskResultDoesNotExist):
                result.refresh()  # as ImmediateBackend returns it: finished
            return
        try:
            send(name, record, eta=eta)
        except BaseException:
            task_records.delete(record["id"], settings)
            raise
        task_enqueued.send(type(self), task_result=result)

    # -- results ----------------------------------------------------------------------------

    def get_result(self, result_id: str) -> TaskResult:
        """The result as last recorded; ``TaskResultDoesNotExist`` if there is no record (an
        unknown id, or one the cache evicted or expired) or what is there is not one."""
        record = task_records.read(result_id, get_settings())
        if record is None:
            raise TaskResultDoesNotExist(result_id)
        try:
            return self._result(record, self._task(record))
        except (TypeError, ValueError, InvalidTask, RecursionError) as error:
            # a record of the right shape with wrong values: a date that is not one, a queue
            # this backend does not list, arguments nested past what Python walks
            logger.warning("the task result %s is unreadable: %r", result_id, error)
            raise TaskResultDoesNotExist(result_id) from error

    def _task(self, record: dict[str, Any]) -> Task:
        """The record's task, or a :class:`MissingTask` if its path no longer imports."""
        try:
            return _import_task(record["task"]).using(
                queue_name=record["queue"],
                run_after=_datetime(record["run_after"]),
                backend=self.alias,
            )
        except (ImportError, TypeError):
            return MissingTask(
                func=missing_task,
                path=record["task"],
                queue_name=record["queue"],
                backend=self.alias,
            )

    def _result(self, record: dict[str, Any], task: Task) -> TaskResult:
        result = TaskResult(
            task=task,
            id=record["id"],
            status=TaskResultStatus(record["status"]),
            enqueued_at=_datetime(record["enqueued_at"]),
            started_at=_datetime(record["started_at"]),
            last_attempted_at=_datetime(record["last_attempted_at"]),
            finished_at=_datetime(record["finished_at"]),
            args=record["args"],
            kwargs=record["kwargs"],
            backend=self.alias,
            errors=[TaskError(exception_class_path=e[0], traceback=e[1]) for e in record["errors"]],
            worker_ids=list(record["worker_ids"]),
        )
        object.__setattr__(result, "_return_value", record["return_value"])
        return result

    # -- running ----------------------------------------------------------------------------

    def run(self, payload: dict[str, Any], *, last: bool = False) -> None:
        """Run one delivered task and record how it went. A failed attempt raises, so that
        delivery retries it; the last one (or a task that does not import) raises
        :class:`~gaesignals.Reject`: a dead letter now. A result still RUNNING is an attempt
        whose process died, recorded as :class:`WorkerLost` before the task runs again (or
        instead, if that was its last attempt)."""
        settings = get_settings()
        record = self._progress(payload, settings)
        if record is None:
            return
        try:
            _import_task(record["task"])
        except (ImportError, TypeError) as error:
            self._failed(record, self._task(record), error, settings)
            raise Reject(f"task {record['task']!r} does not import: {error}") from error
        task = self._task(record)
        if record["status"] == TaskResultStatus.RUNNING:
            lost = WorkerLost("the process running this task died before the task returned")
            final = len(record["worker_ids"]) >= self.max_attempts
            self._failed(record, task, lost, settings, final=final)
            if final:
                raise Reject(f"task {record['task']!r} killed its worker") from lost
        self._attempt(record, task, settings, last=last)

    def _progress(self, payload: dict[str, Any], settings: Settings) -> dict[str, Any] | None:
        """The payload with its record's progress (status, attempts, errors), or None if the
        record says it succeeded (a delivery that died before removing it). The task and its
        arguments always come from the payload, and the progress only from a record that bears
        the payload's seal: without a secret key anyone who can write to the cache can write
        a record, and one planted without the payload in hand stops nothing."""
        record = dict(payload)
        found = task_records.read(payload["id"], settings)
        if found is None:
            return record
        if not task_records.sealed(found, payload):
            logger.warning(
                "the task result %s is not sealed by its payload; ignored", payload["id"]
            )
            return record
        if found["status"] == TaskResultStatus.SUCCESSFUL:
            logger.info("task result %s already succeeded; not run again", record["id"])
            return None
        record.update({field: found[field] for field in task_records.PROGRESS})
        return record

    def _attempt(
        self, record: dict[str, Any], task: Task, settings: Settings, *, last: bool
    ) -> None:
        """One attempt: RUNNING, the task called, then SUCCESSFUL, or the failure recorded
        and raised (as :class:`~gaesignals.Reject` after the last attempt)."""
        now = timezone.now().isoformat()
        record.update(status=TaskResultStatus.RUNNING.value, last_attempted_at=now)
        record["started_at"] = record["started_at"] or now
        record["worker_ids"] = [*record["worker_ids"], self.worker_id]
        task_records.write(record, settings, self.result_ttl)
        result = self._result(record, task)
        task_started.send(type(self), task_result=result)
        try:
            value = _call(task, result)
        except KeyboardInterrupt:
            raise
        except BaseException as error:
            final = last or len(record["worker_ids"]) >= self.max_attempts
            self._failed(record, task, error, settings, final=final)
            if final:
                raise Reject(f"task {record['task']!r} failed: {error!r}") from error
            if isinstance(error, Exception):
                raise
            raise TaskFailed(f"task {record['task']!r} raised {error!r}") from error
        record.update(
            status=TaskResultStatus.SUCCESSFUL.value,
            finished_at=timezone.now().isoformat(),
            return_value=value,
        )
        task_records.write(record, settings, self.result_ttl)
        task_finished.send(type(self), task_result=self._result(record, task))

    def _failed(
        self,
        record: dict[str, Any],
        task: Task,
        error: BaseException,
        settings: Settings,
        *,
        final: bool = True,
    ) -> None:
        """Record a failed attempt: FAILED (and ``task_finished``) after the last one, READY
        again while delivery will retry it. Called inside the ``except`` block, as Django
        sends ``task_finished``, so its receivers see the exception."""
        kind = type(error)
        traceback = "".join(format_exception(error))
        record["errors"] = [
            *record["errors"],
            [f"{kind.__module__}.{kind.__qualname__}", traceback],
        ]
        record["status"] = (TaskResultStatus.FAILED if final else TaskResultStatus.READY).value
        if final:
            record["finished_at"] = timezone.now().isoformat()
        task_records.write(record, settings, self.result_ttl)
        if final:
            task_finished.send(type(self), task_result=self._result(record, task))


def run_task(data: Any) -> None:
    """The gaesignals handler of every queue signal: hand the payload to the backend it names.
    A payload no backend here can run is rejected (dead-lettered, to requeue once fixed)."""
    if not task_records.is_payload(data):
        raise Reject(f"not a django.tasks payload: {type(data).__name__}")
    try:
        backend = task_backends[data["backend"]]
    except InvalidTaskBackend as error:
        raise Reject(f"no task backend {data['backend']!r} here: {error}") from error
    if not isinstance(backend, SignalsBackend):
        raise Reject(f"task backend {data['backend']!r} is not a SignalsBackend")
    backend.run(data)


@checks.register(checks.Tags.security, "gaesignals", deploy=True)
def check_secret_key(app_configs: Any = None, **kwargs: Any) -> list[checks.CheckMessage]:
    """``manage.py check --deploy``: without a gaesignals secret key, whoever can write to the
    cache can write a task's result (and its payloads). Only a deploy check: tests and
    development run without a key, as Django's own backends run without one."""
    if get_settings().secret_keys:
        return []
    aliases = [alias for alias in task_backends.settings if _is_ours(alias)]
    if not aliases:
        return []
    return [
        checks.Warning(
            f"task backend(s) {', '.join(map(repr, aliases))} keep results unsigned: without "
            "a gaesignals secret key, anyone who can write to the cache can forge a result",
            hint="Set GAESIGNALS['SECRET_KEY'] (or GAESIGNALS_SECRET_KEY).",
            id="gaesignals.W001",
        )
    ]


def _is_ours(alias: str) -> bool:
    """Whether ``TASKS[alias]`` names a SignalsBackend (without building it)."""
    try:
        found = import_string(task_backends.settings[alias]["BACKEND"])
    except ImportError:
        return False  # not ours; Django reports it when the backend is used
    return isinstance(found, type) and issubclass(found, SignalsBackend)


def connect_backends() -> list[str]:
    """Set up every configured ``SignalsBackend``, connecting its queues' signals; returns
    their aliases. The app calls it at start-up, so a process that only delivers (a worker)
    has the handlers; call it again after ``gaesignals.registry.clear()``."""
    aliases = [alias for alias in task_backends.settings if _is_ours(alias)]
    for alias in aliases:
        task_backends[alias].connect()
    return aliases


def _declaration(alias: str, options: dict[str, Any]) -> dict[str, Any]:
    """The whole declaration of a backend's queue signals, every option given or defaulted;
    their ``max_attempts`` is one above ``MAX_ATTEMPTS`` (see ``SignalsBackend.max_attempts``)."""
    declared = {arg: options.get(key, default) for key, (arg, default) in DECLARE_OPTIONS.items()}
    attempts = declared["max_attempts"]
    if not isinstance(attempts, int) or isinstance(attempts, bool) or attempts < 1:
        raise InvalidTaskBackend(
            f"task backend {alias!r}: MAX_ATTEMPTS must be a positive int, got {attempts!r}"
        )
    declared["max_attempts"] = attempts + 1
    try:
        SignalSpec(queue_signal(alias, "default"), **declared)
    except (TypeError, ValueError) as error:
        raise InvalidTaskBackend(f"task backend {alias!r}: {error}") from error
    return declared


def _call(task: Task, result: TaskResult) -> Any:
    """Run the task on the result's arguments (a coroutine awaited, as ``Task.call`` does),
    its context first if it takes one; its return value normalised to JSON."""
    if task.takes_context:
        value = task.call(TaskContext(task_result=result), *result.args, **result.kwargs)
    else:
        value = task.call(*result.args, **result.kwargs)
    return normalize_json(value)


def _import_task(path: str) -> Task:
    found = import_string(path)
    if not isinstance(found, Task):
        raise TypeError(f"{path!r} is not a task (a function decorated with @task)")
    return found


def _record(result: TaskResult) -> dict[str, Any]:
    """A new result as its task's payload: the record, and the nonce that seals the record
    (:mod:`.task_records`)."""
    task = result.task
    return {
        "id": result.id,
        "task": task.module_path,
        "queue": task.queue_name,
        "backend": result.backend,
        "run_after": None if task.run_after is None else task.run_after.isoformat(),
        "args": result.args,
        "kwargs": result.kwargs,
        "status": result.status.value,
        "enqueued_at": result.enqueued_at.isoformat(),
        "started_at": None,
        "last_attempted_at": None,
        "finished_at": None,
        "errors": [],
        "worker_ids": [],
        "return_value": None,
        task_records.NONCE: get_random_string(32),
    }


def _aware(moment: datetime) -> datetime:
    """A naive ``run_after`` (``USE_TZ = False``) is in Django's current time zone."""
    return timezone.make_aware(moment) if timezone.is_naive(moment) else moment


def _datetime(text: str | None) -> datetime | None:
    return None if text is None else datetime.fromisoformat(text)


__all__ = [
    "MissingTask",
    "SignalsBackend",
    "TaskFailed",
    "UnserializableArguments",
    "WorkerLost",
    "connect_backends",
    "run_task",
]
