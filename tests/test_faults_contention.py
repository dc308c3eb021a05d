"""Faults of contention: many senders and deliverers racing on the same signals, on memcached
(atomic append) and on App Engine's memcache stub (gets + cas, retried on contention).

The counts (lost, duplicated, unexpected) are described in :mod:`tests.fault_harness`.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

import gaesignals
from gaesignals import SignalMapping, deliver
from gaesignals.stores.appengine import AppEngineStore
from gaesignals.testing import MemcachedServer

from . import concurrency_workers as cw
from . import fault_deliverers as fd
from . import fault_threads as ft
from . import fault_workers as fw
from .fault_harness import DEADLINE, SCALE, FaultRun, Sends, handled, pick
from .harness import GRACE, Threads, leftovers, proc_names

pytestmark = pytest.mark.slow


# -- many sender and deliverer processes ----------------------------------------------------------

SENDERS, DELIVERERS, COLD = 8, 4, 200
PAYLOADS = pick(4_000, 50_000)


@pytest.mark.parametrize("mode", ["weak", "reliable"])
def test_racing_senders_and_deliverers_lose_double_and_invent_nothing(
    mode: str, gaesignals_memcached: MemcachedServer, tmp_path: Path
) -> None:
    """Sender and deliverer processes racing on one memcached lose, double and invent nothing, each
    send in a bounded number of append rounds."""
    # 8 sender processes and 4 deliverer processes, one hot signal (half the payloads) and 200 cold
    # ones: nothing lost, doubled or invented, in either mode, and a send makes a bounded number of
    # append rounds (one, in practice: memcached's append is atomic).
    gaesignals_memcached.flush()
    spec = {"url": gaesignals_memcached.url}
    names = cw.signal_names(COLD)
    run = FaultRun(tmp_path)
    stop = run.ctx.Event()
    ready = [run.ctx.Event() for _ in range(DELIVERERS)]
    deliverers = [
        run.process(
            fd.deliverer,
            f"deliverer-{i}",
            spec,
            names,
            reliable=mode == "reliable",
            lease=10,
            stop=stop,
            ready=ready[i],
        )
        for i in range(DELIVERERS)
    ]
    senders = run.senders(
        SENDERS,
        spec,
        names,
        count=PAYLOADS // SENDERS,
        start_when=ready,
        hot_every=2,
        counting=True,
    )
    with run.running():
        run.wind_down(senders, deliverers, stop)
    sends = Sends.of(run, proc_names(senders))
    done = handled(run, proc_names(deliverers))
    leftover = leftovers(gaesignals_memcached.url, COLD)
    tally = sends.tally(done)
    per_deliverer = [len(run.events(p.name)) // 2 for p in deliverers]
    print(
        f"\n[contention {mode} {SCALE}] {run.elapsed:.1f}s senders={SENDERS} "
        f"deliverers={DELIVERERS} signals=1+{COLD} sent={len(sends.ok)} "
        f"handled={done.total()} per_deliverer={per_deliverer} {tally.line()} "
        f"left_in_store={len(leftover)}\n"
        f"    {sends.rounds_line('append')} logged={dict(run.logs())}"
    )
    assert len(sends.ok) == PAYLOADS
    tally.check()
    assert leftover == []
    sends.check_rounds()
    assert sends.retried["Contention"] == 0


@pytest.mark.usefixtures("gaesignals_testbed")
def test_racing_threads_on_the_app_engine_stub_lose_double_and_invent_nothing() -> None:
    """Sender and deliverer threads racing on App Engine's stub, where a send is gets + cas retried
    on contention, lose, double and invent nothing."""
    # The same on App Engine's memcache stub, where a send is gets + cas retried on contention: 8
    # sender threads and 4 deliverer threads (weak on half the signals, reliable on the other half),
    # and the gets + cas rounds per send are bounded.
    count = pick(2_000, 20_000)
    names_weak = ["w-hot", *(f"w-cold-{i}" for i in range(COLD // 2))]
    names_reliable = ["r-hot", *(f"r-cold-{i}" for i in range(COLD // 2))]
    gaesignals.configure(store=ft.ThreadCountingStore(AppEngineStore()), secret_key=cw.SECRET_KEY)
    stop = threading.Event()
    got: list[list[int]] = [[] for _ in range(DELIVERERS)]

    def deliverer(index: int) -> None:
        names = names_weak if index % 2 == 0 else names_reliable
        mapping = SignalMapping([(n, lambda d: got[index].append(d["id"])) for n in names])
        reliable = index % 2 == 1
        while not stop.is_set():
            if deliver(mapping, reliable, lease=10) == 0:
                time.sleep(0.001)
        while deliver(mapping, reliable, lease=10) or fw.pending_bytes(names):
            time.sleep(0.001)

    reports: list[dict[str, Any]] = [{} for _ in range(SENDERS)]

    def sender(index: int) -> None:
        names = names_weak if index % 2 == 0 else names_reliable
        ft.thread_sender(index, names, count // SENDERS, 2, reports[index])

    started = time.monotonic()
    threads = Threads()
    threads.run(
        [threads.thread(sender, i) for i in range(SENDERS)],
        [threads.thread(deliverer, i) for i in range(DELIVERERS)],
        stop,
        started + DEADLINE + GRACE,
    )
    elapsed = time.monotonic() - started
    sends = Sends()
    for report in reports:
        sends.add({**report, "ok": [[pid, 0] for pid in report["ok"]]})
    done = Counter(pid for ids in got for pid in ids)
    tally = sends.tally(done)
    print(
        f"\n[contention appengine-stub {SCALE}] {elapsed:.1f}s sender threads={SENDERS} "
        f"deliverer threads={DELIVERERS} sent={len(sends.ok)} handled={done.total()} "
        f"{tally.line()}\n    {sends.rounds_line('gets+cas')}"
    )
    assert len(sends.ok) == count // SENDERS * SENDERS
    tally.check()
    sends.check_rounds()
