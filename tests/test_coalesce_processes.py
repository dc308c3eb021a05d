"""Coalescing and cancelling under concurrency, in processes on a real memcached and a real
Redis: senders and deliverers at once, weak and reliable; the counts add up, the final payload
of every key is delivered, none twice; a cancel racing a delivery is delivered or cancelled,
never both, never neither.

Children are started with ``spawn`` and run the bodies in :mod:`tests.coalesce_workers`; every
wait is a join or an event wait with a deadline (:class:`tests.harness.Run`), no timed
assertion.
"""

from __future__ import annotations

import json
from collections import Counter
from multiprocessing.process import BaseProcess
from pathlib import Path
from typing import Any

import pytest

from gaesignals import pending, send, stats
from gaesignals.testing import MemcachedServer, RedisServer

from . import coalesce_workers as workers
from . import harness

#: The children's own deadline; a healthy run takes well under it.
DEADLINE = 120.0
SENDERS = 8
PER_SENDER = 1_000
KEYS = 10
DELIVERERS = 2


@pytest.fixture(params=["memcached", "redis"])
def server_url(request: pytest.FixtureRequest) -> str:
    """The URL of a real memcached, then of a real Redis, flushed."""
    fixture = {"memcached": "gaesignals_memcached", "redis": "gaesignals_redis"}[request.param]
    server: MemcachedServer | RedisServer = request.getfixturevalue(fixture)
    server.flush()
    return server.url


def handled(run: harness.Run, deliverers: list[BaseProcess]) -> list[dict[str, Any]]:
    """Every payload the deliverers handled (the order within each deliverer kept)."""
    lines: list[str] = []
    for proc in deliverers:
        lines += (run.tmp / f"{proc.name}.ids").read_text().splitlines()
    return [json.loads(line) for line in lines]


def counts_in_parent(url: str, reliable: bool) -> dict[str, int]:
    """The signal's counters, read from the store the children used."""
    store = workers.configure(url, reliable)
    try:
        return stats(workers.SIGNAL)[workers.SIGNAL]
    finally:
        store.close()


def test_many_senders_over_ten_keys_while_two_deliverers_run(
    server_url: str, reliable: bool, tmp_path: Path
) -> None:
    """8 senders x 1,000 sends over 10 coalesce keys while 2 deliverers run: every payload is
    counted once (sent = delivered + coalesced), none is handled twice, and the final payload
    of every key, sent once the senders are done, is delivered."""
    run = harness.Run(tmp_path, DEADLINE)
    start, stop = run.ctx.Event(), run.ctx.Event()
    deliverers = [
        run.process(workers.deliverer, f"deliverer-{i}", server_url, reliable, stop)
        for i in range(DELIVERERS)
    ]
    senders = [
        run.process(workers.sender, f"sender-{i}", server_url, i, PER_SENDER, KEYS, start)
        for i in range(SENDERS)
    ]
    with run.running():
        start.set()
        run.join(senders)
        store = workers.configure(server_url, reliable)
        try:
            for k in range(KEYS):
                key = workers.key_of(0, k, KEYS)
                send(workers.SIGNAL, {"final": True, "key": key}, coalesce=key)
        finally:
            store.close()
        stop.set()
        run.join(deliverers)
    got = handled(run, deliverers)
    counts = counts_in_parent(server_url, reliable)
    seen = Counter(json.dumps(data, sort_keys=True) for data in got)
    print(
        f"\n{'reliable' if reliable else 'weak'}: {run.elapsed:.1f}s handled={len(got)} "
        f"counts={counts} refusals={[run.report(p.name)['refusals'] for p in senders]}"
    )
    assert [line for line, times in seen.items() if times > 1] == []
    finals = {data["key"] for data in got if data.get("final")}
    assert finals == {workers.key_of(0, k, KEYS) for k in range(KEYS)}
    sent = SENDERS * PER_SENDER + KEYS
    assert counts["sent"] == sent and counts["delivered"] == len(got)
    assert counts["delivered"] + counts["coalesced"] == sent
    assert counts["cancelled"] == counts["lost"] == counts["failed"] == counts["dropped"] == 0


def test_a_cancel_racing_a_delivery_is_one_or_the_other(
    server_url: str, reliable: bool, tmp_path: Path
) -> None:
    """A sender cancels every other payload it sends while 2 deliverers run: each cancelled
    one is delivered or counted cancelled, never both and never neither; every other payload
    is delivered once; nothing is left pending. (On memcached this found a weak take that
    counted a payload delivered twice when its resets kept losing to cancellations.)"""
    run = harness.Run(tmp_path, DEADLINE)
    start, stop = run.ctx.Event(), run.ctx.Event()
    deliverers = [
        run.process(workers.deliverer, f"deliverer-{i}", server_url, reliable, stop)
        for i in range(DELIVERERS)
    ]
    canceller = run.process(workers.canceller, "canceller", server_url, 1_000, start)
    with run.running():
        start.set()
        run.join([canceller])
        stop.set()
        run.join(deliverers)
    report = run.report("canceller")
    delivered = Counter(data["n"] for data in handled(run, deliverers))
    counts = counts_in_parent(server_url, reliable)
    cancelled = set(report["cancelled"])
    print(
        f"\n{'reliable' if reliable else 'weak'}: {run.elapsed:.1f}s "
        f"delivered={sum(delivered.values())} "
        f"of which cancel-raced={len(cancelled & set(delivered))} counts={counts}"
    )
    assert [n for n, times in delivered.items() if times > 1] == []
    assert set(report["sent"]) - cancelled <= set(delivered)
    assert counts["cancelled"] == len(cancelled - set(delivered))  # never both, never neither
    assert counts["delivered"] + counts["cancelled"] == counts["sent"] == len(report["sent"])
    store = workers.configure(server_url, reliable)
    try:
        assert pending(workers.SIGNAL)[workers.SIGNAL].count == 0
    finally:
        store.close()
