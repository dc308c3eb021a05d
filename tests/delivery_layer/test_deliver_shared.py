"""Deliverers sharing one signal's backlog with ``deliver(mapping, limit=N)``: threads on every
store, and processes on a real memcached and Redis; each payload is delivered exactly once
(lost == 0, duplicated == 0) and counted once."""

from __future__ import annotations

import threading
from collections import Counter
from pathlib import Path

import pytest

from gaesignals import configure as configure_store
from gaesignals import declare, deliver, send_multi, stats
from gaesignals.stores import Store
from gaesignals.testing import MemcachedServer, RedisServer

from .. import harness
from .. import sharing_workers as workers
from ..concurrency_workers import HOT, configure

#: The children's own deadline; a healthy run takes a few seconds.
DEADLINE = 60.0
BACKLOG = 2_000


def _tally(sent: range, handled: list[int]) -> tuple[int, int]:
    """How many of ``sent`` were never handled, and how many were handled more than once."""
    counts = Counter(handled)
    return sum(1 for i in sent if i not in counts), sum(1 for n in counts.values() if n > 1)


def _drain(handled: list[int]) -> None:
    """Deliver what the deliverers left (contention may leave a take's part), unbounded."""
    for _ in range(20):
        if not deliver({HOT: handled.append}):
            return


@pytest.mark.parametrize("shards", [None, 4], ids=["one-key", "four-shards"])
def test_threads_sharing_a_backlog_deliver_each_payload_once(
    store: Store, shards: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Four threads delivering 50 at a time from one signal's 2,000-payload backlog deliver
    every payload once, and the counters say so. (One lost check, before the threads start: a
    check racing another deliverer's take of a segmented queue can over-estimate.)"""
    monkeypatch.setenv("GAESIGNALS_LOST_CHECK_INTERVAL", "3600")
    configure_store(store=store)
    if shards:
        declare(HOT, shards=shards)
    send_multi([(HOT, i) for i in range(BACKLOG)])
    handled: list[int] = []
    lock = threading.Lock()
    deliver({HOT: handled.append}, limit=50)

    def record(data: int) -> None:
        with lock:
            handled.append(data)

    def deliverer() -> None:
        empty = 0
        for _ in range(BACKLOG):
            empty = 0 if deliver({HOT: record}, limit=50) else empty + 1
            if empty == workers.EMPTY_ROUNDS:
                return

    threads = [threading.Thread(target=deliverer) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    _drain(handled)
    assert _tally(range(BACKLOG), handled) == (0, 0)
    counters = stats(HOT)[HOT]
    assert (counters["sent"], counters["delivered"], counters["lost"]) == (BACKLOG, BACKLOG, 0)


@pytest.fixture(params=["memcached", "redis"])
def server_url(request: pytest.FixtureRequest) -> str:
    """A real memcached, then a real Redis, flushed."""
    server: MemcachedServer | RedisServer = request.getfixturevalue(f"gaesignals_{request.param}")
    server.flush()
    return server.url


@pytest.mark.parametrize("shards", [None, 4], ids=["undeclared", "four-shards"])
def test_processes_sharing_a_backlog_deliver_each_payload_once(
    server_url: str, shards: int | None, tmp_path: Path
) -> None:
    """Four processes delivering 100 at a time from one signal's 2,000-payload backlog
    deliver every payload once between them (lost == 0, duplicated == 0)."""
    store = configure(server_url, shards)
    try:
        send_multi([(HOT, i) for i in range(BACKLOG)])
        run = harness.Run(tmp_path, DEADLINE)
        start = run.ctx.Event()
        procs = [
            run.process(workers.bounded_deliverer, f"deliverer-{i}", server_url, 100, shards, start)
            for i in range(4)
        ]
        with run.running(procs):
            start.set()
            run.join(procs)
        per_process = [
            [int(line) for line in (tmp_path / f"{proc.name}.ids").read_text().split()]
            for proc in procs
        ]
        handled = [i for ids in per_process for i in ids]
        _drain(handled)
        print(f"\nper deliverer: {[len(ids) for ids in per_process]}; after: {len(handled)}")
        assert _tally(range(BACKLOG), handled) == (0, 0)
        assert stats(HOT)[HOT]["delivered"] == BACKLOG
    finally:
        store.close()
