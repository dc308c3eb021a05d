"""Delayed sends under concurrency: processes on a real memcached send payloads due 0-3 s
later while others deliver them, weakly or reliably; every payload is counted."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from gaesignals import dead_letters, send
from gaesignals.pytest_plugin import make_store, store_url
from gaesignals.testing.servers import MemcachedServer

from . import delay_workers as workers
from .fault_stores import configured
from .harness import Run

#: What a payload may arrive after its time: one delivery interval, and the time a busy
#: two-core machine takes to schedule the deliverer and run a delivery (generous, so that a
#: slow machine cannot fail it; a payload early by even a millisecond fails at once).
LATENESS_MS = 1500


@pytest.mark.slow
@pytest.mark.parametrize("reliable", [False, True], ids=["weak", "reliable"])
def test_delayed_payloads_arrive_once_never_early(
    gaesignals_memcached: MemcachedServer, tmp_path: Path, reliable: bool
) -> None:
    """Three processes send 150 payloads each, due at random 0-3 s ahead, while two deliver
    them: each payload is delivered exactly once, never before its time, and within a
    delivery interval (and the machine's scheduling) after it."""
    gaesignals_memcached.flush()
    url = gaesignals_memcached.url
    run = Run(tmp_path, 60.0)
    go, stop = run.ctx.Event(), run.ctx.Event()
    senders = [run.process(workers.sender, f"sender-{i}", url, i, 150, go) for i in range(3)]
    deliverers = [
        run.process(workers.deliverer, f"deliverer-{i}", url, reliable, stop) for i in range(2)
    ]
    with run.running():
        go.set()
        run.wind_down(senders, deliverers, stop)
    sent = [pid for proc in senders for pid in run.report(proc.name)["sent"]]
    arrived = [tuple(a) for proc in deliverers for a in run.report(proc.name)["arrived"]]
    times = Counter(pid for pid, _, _ in arrived)
    early = [(pid, due, at) for pid, due, at in arrived if at < due - 1]
    late = [(pid, at - due) for pid, due, at in arrived if at > due + LATENESS_MS]
    print(
        f"\ndelayed {'reliable' if reliable else 'weak'}: sent={len(sent)} "
        f"delivered={len(arrived)} early={len(early)} late={len(late)} "
        f"worst={max((at - due for _, due, at in arrived), default=0):.0f} ms"
    )
    assert len(sent) == 450
    assert sorted(times) == sorted(sent) and set(times.values()) == {1}
    assert early == []
    assert late == []


@pytest.mark.slow
def test_a_killed_deliverer_loses_no_payload_waiting_for_a_retry(
    request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    """A reliable deliverer that rescheduled failed payloads (each fifth fails its first
    attempt) and is then SIGKILLed mid-handler loses none of them: once its lease runs out two
    others deliver every payload, the rescheduled ones included, and none is dead-lettered."""
    url = store_url("memcached", request)
    with configured(make_store("memcached", request)[0]):
        for pid in range(200):
            send(workers.RETRIED, {"id": pid})
        run = Run(tmp_path, 60.0)
        died, busy = run.ctx.Event(), run.ctx.Event()
        victim = run.process(workers.flaky_deliverer, "victim", url, 120, None, busy)
        survivors = [
            run.process(workers.flaky_deliverer, f"survivor-{i}", url, 0, died, busy)
            for i in range(2)
        ]
        with run.running():
            run.join([victim], exitcode=-9)
            died.set()
            run.join(survivors)
        ids = [
            int(line)
            for name in ("victim", "survivor-0", "survivor-1")
            for line in (tmp_path / f"{name}.ids").read_text().split()
        ]
        times = Counter(ids)
        print(f"\nkilled with retries waiting: handled={len(ids)} distinct={len(times)}")
        assert sorted(times) == list(range(200))
        assert sum(n - 1 for n in times.values()) <= 1  # at most the one it died running
        assert dead_letters(workers.RETRIED) == []
