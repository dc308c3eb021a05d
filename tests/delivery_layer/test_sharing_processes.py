"""Several reliable deliverer processes share one backlog on a real memcached and a real
Redis: each works on its own shards under its own locks, and nothing is lost."""

from __future__ import annotations

from pathlib import Path

import pytest

from gaesignals import send, stats
from gaesignals.testing import MemcachedServer, RedisServer

from .. import concurrency_workers as workers
from .. import reliable_sharing_workers
from ..harness import Run

#: The children's own deadline: a healthy run takes 5 to 20 s (a cursor write per payload on a
#: machine shared with the servers), several times that on a loaded one.
DEADLINE = 180.0
DELIVERERS = 4
BACKLOG = 2000


@pytest.fixture(params=["memcached", "redis"])
def server_url(request: pytest.FixtureRequest) -> str:
    """The URL of each real server kind in turn, flushed."""
    fixture = {"memcached": "gaesignals_memcached", "redis": "gaesignals_redis"}[request.param]
    server: MemcachedServer | RedisServer = request.getfixturevalue(fixture)
    server.flush()
    return server.url


@pytest.mark.slow
def test_bounded_reliable_deliverers_share_a_backlog_on_one_key(
    server_url: str, tmp_path: Path
) -> None:
    """A backlog of one undeclared signal on one key, drained by four reliable deliverer
    processes with a limit and handlers that take a few ms: every payload is handled at
    least once, none is lost, and all four handle payloads at the same time."""
    store = workers.configure(server_url, shards=None)
    try:
        for i in range(BACKLOG):
            send("backlog", i)
    finally:
        store.close()
    run = Run(tmp_path, DEADLINE)
    start = run.ctx.Barrier(DELIVERERS)
    together = run.ctx.Barrier(DELIVERERS)
    deliverers = [
        run.process(
            reliable_sharing_workers.bounded_deliverer,
            f"deliverer-{i}",
            server_url,
            "backlog",
            25,
            start,
            together,
            0.002,
        )
        for i in range(DELIVERERS)
    ]
    with run.running():
        run.join(deliverers)
    reports = [run.report(proc.name) for proc in deliverers]
    handled = [pid for report in reports for pid in report["ids"]]
    print(
        f"\nshared: {run.elapsed:.1f}s handled={[len(r['ids']) for r in reports]} "
        f"duplicates={len(handled) - len(set(handled))} logged={dict(run.logs())}"
    )
    assert set(handled) == set(range(BACKLOG))  # lost == 0: each handled at least once
    assert all(report["ids"] for report in reports)
    assert all(report["together"] for report in reports)  # all four at once: shared
    store = workers.configure(server_url, shards=None)
    try:
        assert stats("backlog")["backlog"]["lost"] == 0
    finally:
        store.close()
