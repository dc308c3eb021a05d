"""Faults of handlers: handlers that raise, always or once, across deliverer processes; the
attempt count lives in the cache, then dead letters and requeueing.

The counts (lost, duplicated, unexpected) are described in :mod:`tests.fault_harness`.
"""

from __future__ import annotations

import multiprocessing.connection
import time
from collections import Counter
from multiprocessing.process import BaseProcess
from pathlib import Path
from typing import Any

import pytest

from gaesignals import dead_letters, deliver, frames, requeue_dead_letters, send
from gaesignals.keys import signal_keys
from gaesignals.pytest_plugin import make_store
from gaesignals.testing import MemcachedServer

from . import fault_deliverers as fd
from . import fault_workers as fw
from .fault_harness import DEADLINE, SCALE, FaultRun, Sends, pick
from .fault_stores import appengine_store, configured, raw_value

pytestmark = pytest.mark.slow


# -- handlers that raise: attempts across processes, dead letters, requeue ------------------------

PAYLOADS = pick(300, 5_000)
MAX_ATTEMPTS = 3


def test_raising_handlers_across_processes_dead_letter_after_max_attempts(
    gaesignals_memcached: MemcachedServer, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """A payload whose handler keeps raising is tried by max_attempts different processes, then
    dead-lettered and delivered once requeued, while the rest are handled once, in send order."""
    # One signal, its payloads sent by one process in order while deliverer processes (two at a
    # time) each deliver until their handler raises once, then exit, and are replaced. Two payloads
    # always raise, one raises only the first time. The always-failing ones are tried by
    # ``max_attempts`` different processes (the attempt count lives in the cache), then
    # dead-lettered; everything else is handled once, in send order; requeueing the dead letters
    # puts them back with a fresh count, and they are then delivered.
    gaesignals_memcached.flush()
    spec = {"url": gaesignals_memcached.url}
    name = "flaky"
    poison = [PAYLOADS // 4, PAYLOADS // 2]
    flaky = [3 * PAYLOADS // 4]
    log = tmp_path / "shared.events"
    run = FaultRun(tmp_path)
    senders_done = run.ctx.Event()
    sender = run.process(fw.sender, "sender", spec, 0, [name], count=PAYLOADS, pace=0.001)
    live: list[BaseProcess] = []
    spawned = 0
    drained = False

    def spawn() -> None:
        nonlocal spawned
        proc = run.process(
            fd.failing_deliverer,
            f"deliverer-{spawned}",
            spec,
            name,
            str(log),
            poison,
            flaky,
            MAX_ATTEMPTS,
            senders_done,
        )
        spawned += 1
        proc.start()
        live.append(proc)

    with run.running([sender]):
        spawn()
        spawn()
        deadline = run.started + DEADLINE
        while live:
            if not senders_done.is_set() and sender.exitcode is not None:
                run.join([sender])
                senders_done.set()
            sentinels = [p.sentinel for p in live] + [sender.sentinel]
            multiprocessing.connection.wait(sentinels, timeout=0.5)
            for proc in [p for p in live if p.exitcode is not None]:
                run.join([proc])
                live.remove(proc)
                if run.report(proc.name)["drained"]:
                    drained = True
                elif not drained:
                    spawn()
            if time.monotonic() > deadline:
                pytest.fail(f"the deliverers did not finish in time{run.errors()}")
        run.join([sender])

    sends = Sends.of(run, ["sender"])
    events = [line.split() for line in log.read_text().splitlines()]
    done = [int(pid) for kind, pid, _ in events if kind == "D"]
    failures: dict[int, list[str]] = {}
    for kind, pid, proc in events:
        if kind == "F":
            failures.setdefault(int(pid), []).append(proc)
    tally = sends.tally(Counter(done))
    with configured(make_store("memcached", request, flush=False)[0]):
        dead = [data["id"] for data in dead_letters(name)]
        requeued = requeue_dead_letters(name)
        dead_after = dead_letters(name)
        queued, _ = frames.parse(raw_value(signal_keys(name, "").queue) or b"", b"")
        attempts_after = [frame.attempts for frame in queued]
        healed: list[int] = []
        redelivered = deliver({name: lambda d: healed.append(d["id"])}, reliable=True)
        left = raw_value(signal_keys(name, "").queue)
    print(
        f"\n[raising handlers {SCALE}] {run.elapsed:.1f}s payloads={PAYLOADS} deliverer "
        f"processes={spawned} max_attempts={MAX_ATTEMPTS} failures by payload="
        f"{ {pid: len(procs) for pid, procs in failures.items()} } distinct processes per "
        f"payload={ {pid: len(set(procs)) for pid, procs in failures.items()} } "
        f"dead letters={dead} {tally.line()}\n"
        f"    in send order={done == sorted(done)} requeued={requeued} attempts after "
        f"requeue={attempts_after} delivered after requeue={healed} logged={dict(run.logs())}"
    )
    assert len(sends.ok) == PAYLOADS
    for pid in poison:
        assert len(failures[pid]) == MAX_ATTEMPTS
        assert len(set(failures[pid])) == MAX_ATTEMPTS  # one attempt per process
    assert len(failures[flaky[0]]) == 1
    assert dead == poison
    assert tally.lost == sorted(poison)  # not handled: dead-lettered
    assert tally.duplicated == [] and tally.unexpected == []
    assert done == sorted(set(sends.ok) - set(poison))  # the rest, once each, in send order
    assert requeued == 2 and dead_after == [] and attempts_after == [0, 0]
    assert redelivered == 2 and healed == poison
    assert not left


@pytest.mark.usefixtures("gaesignals_testbed")
def test_raising_handlers_on_the_app_engine_stub_dead_letter_after_max_attempts() -> None:
    """On App Engine's stub too, a payload whose handler keeps raising is dead-lettered after
    max_attempts and delivered once requeued, while the rest are handled once, in send order."""
    # The same promises on App Engine's memcache stub (one process: the attempt count lives in the
    # cache, so separate deliveries stand for separate processes).
    count = pick(100, 1_000)
    name = "flaky"
    poison, flaky = [count // 4, count // 2], [3 * count // 4]
    appengine_store()
    for pid in range(count):
        send(name, {"id": pid})
    done: list[int] = []
    failures: Counter[int] = Counter()

    def handler(data: dict[str, Any]) -> None:
        pid = data["id"]
        if pid in poison or (pid in flaky and not failures[pid]):
            failures[pid] += 1
            raise RuntimeError("refused")
        done.append(pid)

    rounds = 0
    while fw.pending_bytes([name]):
        rounds += 1
        assert rounds < 50
        deliver({name: handler}, reliable=True, max_attempts=MAX_ATTEMPTS, retry_delay=0)
    dead = [data["id"] for data in dead_letters(name)]
    requeued = requeue_dead_letters(name)
    healed: list[int] = []
    deliver({name: lambda d: healed.append(d["id"])}, reliable=True)
    print(
        f"\n[raising handlers appengine-stub {SCALE}] deliveries={rounds} "
        f"failures={dict(failures)} dead letters={dead} in send order={done == sorted(done)} "
        f"requeued={requeued} "
        f"delivered after requeue={healed}"
    )
    assert failures == {poison[0]: 3, poison[1]: 3, flaky[0]: 1}
    assert dead == poison
    assert done == [pid for pid in range(count) if pid not in poison]
    assert requeued == 2 and healed == poison and dead_letters(name) == []
