"""Delayed sends under concurrency: processes on a real memcached send payloads due 0-3 s
later while others deliver them, weakly or reliably; every payload is counted."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from gaesignals.testing.servers import MemcachedServer

from . import delay_workers as workers
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
