"""Faults of crashing processes: deliverers SIGKILLed mid-operation, again and again, at seeded
random points (in a handler, between payloads, while recording progress or acknowledging).

The counts (lost, duplicated, unexpected) are described in :mod:`tests.fault_harness`.
"""

from __future__ import annotations

import random
import signal
import time
from multiprocessing.process import BaseProcess
from pathlib import Path
from typing import Any

import pytest

from gaesignals.testing import MemcachedServer

from . import concurrency_workers as cw
from . import fault_deliverers as fd
from .fault_harness import SCALE, SEED, FaultRun, Sends, handled, pick, repeats, working_on
from .harness import leftovers, proc_names

pytestmark = pytest.mark.slow


# -- reliable deliverers SIGKILLed again and again ------------------------------------------------

KILLS = pick(3, 25)
#: Seconds between two sends of a sender: the long run leaves time to drain between kills.
PACE = pick(0.004, 0.01)
LEASE = 2


def test_killed_reliable_deliverers_repeat_only_the_payload_in_flight(
    gaesignals_memcached: MemcachedServer, tmp_path: Path
) -> None:
    """Reliable deliverers SIGKILLed at random points lose nothing and repeat only the payload a
    killed one was working on."""
    # Reliable delivery while deliverers are SIGKILLed one after another at random points (seeded):
    # nothing is lost, and a payload is handled again only if it was the one a killed deliverer was
    # working on: its handler running (``S`` without ``D``), or returned but its progress not yet
    # recorded in the cache (see the README's table: "only the payload that was running is
    # repeated").
    gaesignals_memcached.flush()
    spec = {"url": gaesignals_memcached.url}
    names = cw.signal_names(8)
    rng = random.Random(SEED)
    run = FaultRun(tmp_path)
    senders_stop, stop = run.ctx.Event(), run.ctx.Event()
    busy: dict[str, Any] = {}
    live: list[BaseProcess] = []
    killed: list[str] = []
    kill_delays: list[float] = []
    stored = [run.counter() for _ in range(2)]

    def spawn(index: int) -> BaseProcess:
        name = f"deliverer-{index}"
        busy[name] = run.ctx.Event()
        proc = run.process(
            fd.deliverer,
            name,
            spec,
            names,
            reliable=True,
            lease=LEASE,
            stop=stop,
            busy=busy[name],
            handler_sleep=0.001,
        )
        proc.start()
        live.append(proc)
        return proc

    senders = run.senders(2, spec, names, stop=senders_stop, pace=PACE, hot_every=2, stored=stored)
    with run.running(senders):
        run.until("a backlog", lambda: sum(s.value for s in stored) >= 300, senders)
        for i in range(3):
            spawn(i)
        for k in range(KILLS):
            # The victim is whichever deliverer is handling payloads now (reliable delivery
            # takes every free lock, so usually one works while the others find them taken);
            # it dies a random time later: in a handler, between payloads, while recording
            # progress, acknowledging, releasing, or between deliveries.
            # Only the live ones: a deliverer killed inside busy.set() never released that
            # event's lock, and clearing it would wait for ever (seen once in a long run).
            for proc in live:
                busy[proc.name].clear()
            run.until("a deliverer at work", lambda: any(busy[p.name].is_set() for p in live), live)
            victim = next(p for p in live if busy[p.name].is_set())
            delay = rng.uniform(0.0, 0.1)
            kill_delays.append(delay)
            time.sleep(delay)  # the random point, not a wait for anything
            victim.kill()
            run.join([victim], -signal.SIGKILL)
            live.remove(victim)
            killed.append(victim.name)
            spawn(3 + k)
        run.wind_down(senders, live, stop, senders_stop)

    sends = Sends.of(run, proc_names(senders))
    everyone = list(busy)
    done = handled(run, everyone, "D")
    starts = handled(run, everyone, "S")
    in_flight, mid_handler, after_handler = working_on(run, killed)
    tally = sends.tally(done)
    repeated, unexplained = repeats(starts, in_flight)
    leftover = leftovers(gaesignals_memcached.url, 8)
    print(
        f"\n[killed deliverers {SCALE}] {run.elapsed:.1f}s seed={SEED} kills={len(killed)} "
        f"kill delays={[round(d, 3) for d in kill_delays]} lease={LEASE}s "
        f"sent={len(sends.ok)} handler starts={starts.total()} completions={done.total()} "
        f"{tally.line()}\n"
        f"    kills mid-handler={len(mid_handler)} (payload repeated: "
        f"{sum(1 for p in mid_handler if starts[p] > 1)}) kills after a handler returned="
        f"{len(after_handler)} (payload repeated although its handler had returned: "
        f"{sum(1 for p in after_handler if starts[p] > 1)}) repeated payloads={len(repeated)} "
        f"(completed twice={len(tally.duplicated)}) repeats not explained by a "
        f"kill={len(unexplained)} left_in_store={len(leftover)} logged={dict(run.logs())}"
    )
    assert len(killed) == KILLS
    tally.check(duplicates=True)  # repeats are checked against the kills below
    assert unexplained == {}, f"repeated without a kill to explain it: {unexplained}"
    assert leftover == []
