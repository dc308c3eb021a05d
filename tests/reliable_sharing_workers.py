"""Child-process bodies for ``tests/delivery_layer/test_sharing_processes.py``: bounded reliable
deliverers draining one backlog together.

They live in their own importable module because the tests start children with the ``spawn``
method, which imports the target function by name in a fresh interpreter. Each body takes
first ``path``, the base name of its report files, and ``seconds``, its deadline; it writes the
ids it handled and whether it met the others to ``<path>.json``, the library's warnings to
``<path>.log`` and, if it fails, its traceback to ``<path>.error``.
"""

from __future__ import annotations

import json
import threading
import time
from multiprocessing.synchronize import Barrier
from pathlib import Path
from typing import Any

from gaesignals import SignalMapping, deliver

from .concurrency_workers import child, configure, queues_empty


def bounded_deliverer(
    path: str,
    seconds: float,
    url: str,
    name: str,
    limit: int,
    start: Barrier,
    together: Barrier,
    pause: float,
) -> None:
    """Once every deliverer is at ``start``, deliver the undeclared signal ``name`` reliably,
    ``limit`` payloads at most per delivery, until its queues are empty; each payload takes
    ``pause`` seconds.

    The first payload this process handles waits at ``together`` until every deliverer is
    handling one: it passes only if the backlog is shared (each deliverer works on its own
    shards at the same time); ``together`` in the report says whether it did."""
    with child(path + ".error", path + ".log"):
        deadline = time.monotonic() + seconds
        store = configure(url, shards=None)
        handled: list[int] = []
        met: list[bool] = []
        lock = threading.Lock()

        def handler(data: Any) -> None:
            with lock:
                handled.append(data)
                first = not met
                if first:
                    met.append(False)
            if first:
                try:
                    together.wait(max(0.0, deadline - time.monotonic()) / 2)
                    met[0] = True
                except threading.BrokenBarrierError:
                    pass
            time.sleep(pause)

        try:
            mapping = SignalMapping([(name, handler)])
            start.wait(max(0.0, deadline - time.monotonic()))
            while deliver(mapping, reliable=True, limit=limit) != 0 or not queues_empty([name]):
                if time.monotonic() > deadline:
                    raise TimeoutError("the backlog did not drain in time")
                time.sleep(0.002)  # pacing only: another deliverer holds what is left
            report = {"ids": handled, "together": bool(met and met[0])}
            Path(path + ".json").write_text(json.dumps(report))
        finally:
            store.close()
