"""What the patched Django cases use in place of Django's own backends (see django-6.1.patch):
``SignalsBackend`` itself where Django has its ``DummyBackend``, :class:`DeliveringBackend`
where it has its ``ImmediateBackend``, and the delivery a deferred backend needs before an
assertion on a finished task."""

from __future__ import annotations

from typing import Any

from asgiref.sync import sync_to_async
from django.tasks import Task, TaskResult

import gaesignals
from gaesignals.contrib.django.tasks import SignalsBackend, queue_signal


class DeliveringBackend(SignalsBackend):
    """ADAPTED: a ``SignalsBackend`` that delivers its signals right after storing a task, and
    returns the result read back from the store, finished: what Django's ``ImmediateBackend``
    returns, done by the worker's part of this backend rather than inside ``enqueue``."""

    def enqueue(self, task: Task, args: Any, kwargs: Any) -> TaskResult:
        """Store the task, deliver, and read its result back."""
        result = super().enqueue(task, args, kwargs)
        gaesignals.deliver()
        return self.get_result(result.id)


def deliver() -> int:
    """ADAPTED: the delivery that runs what was enqueued, where Django's cases set a
    ``DummyBackend`` result's status by hand."""
    return gaesignals.deliver()


async def adeliver() -> int:
    """ADAPTED: :func:`deliver` from an async case, in a thread of its own, as a worker runs
    apart from the code that enqueues."""
    return await sync_to_async(gaesignals.deliver, thread_sensitive=False)()


def stored(alias: str = "default", queue: str = "default") -> int:
    """ADAPTED: how many tasks a queue holds, where Django counts ``DummyBackend.results``."""
    name = queue_signal(alias, queue)
    return gaesignals.pending([name])[name].count
