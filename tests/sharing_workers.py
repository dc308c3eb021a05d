"""Child-process bodies for the tests of deliverers sharing one signal's backlog
(``tests/delivery_layer/test_deliver_shared.py``).

Started with ``spawn`` (see :mod:`tests.harness`): each takes ``path`` (the base name of its
report files) and ``seconds`` (its deadline) first, configures gaesignals itself (as
:func:`tests.concurrency_workers.configure` does), and writes the payloads it handled to
``<path>.ids``, one a line, and its traceback to ``<path>.error`` if it fails.
"""

from __future__ import annotations

import time
from multiprocessing.synchronize import Event

from gaesignals import deliver

from .concurrency_workers import HOT, child, configure, wait_for

#: A deliverer stops after this many deliveries in a row that found nothing: the backlog is
#: then empty or held by the others' takes (the parent drains what is left either way).
EMPTY_ROUNDS = 3


def bounded_deliverer(
    path: str, seconds: float, url: str, limit: int, shards: int | None, start: Event
) -> None:
    """Once ``start`` is set, deliver the hot signal ``limit`` payloads at a time until it
    finds nothing :data:`EMPTY_ROUNDS` times in a row."""
    with child(path + ".error", path + ".log"):
        deadline = time.monotonic() + seconds
        store = configure(url, shards)
        with open(path + ".ids", "a") as out:
            try:
                wait_for(start, deadline, "the start")
                mapping = {HOT: lambda data: out.write(f"{data}\n")}
                empty = 0
                while empty < EMPTY_ROUNDS:
                    if time.monotonic() > deadline:
                        raise TimeoutError("the backlog was not drained in time")
                    empty = 0 if deliver(mapping, limit=limit) else empty + 1
            finally:
                store.close()
