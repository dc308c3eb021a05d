"""The parent's side of the fault-injection suite (``test_faults_*.py``, issue #6).

Every payload carries a unique id, and after each run a test counts lost, duplicated and
unexpected payloads (Jepsen's total-queue counts) and prints them:

* lost: sent (the send returned normally) but never handled;
* duplicated: handled more than once;
* unexpected: handled, but never sent successfully (a send that raised ``StoreUnavailable``
  is indeterminate: such ids are counted apart, as "landed despite StoreUnavailable").

The tests run on real memcached servers started on 127.0.0.1 (and on App Engine's memcache
stub where it applies), children started with ``spawn`` running the bodies in
:mod:`tests.fault_workers`. Nothing waits on a guess: every wait is a join, an event or a
bounded poll of a shared counter, each with a deadline.

``GAESIGNALS_FAULTS_SCALE=long`` runs the long variants (minutes; ``scripts/faults_long.sh``);
the default, ``small``, runs every fault file in about a minute on two cores.
``GAESIGNALS_FAULTS_SEED`` seeds the random kill points (default 6).
"""

from __future__ import annotations

import os
import statistics
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from multiprocessing.process import BaseProcess
from multiprocessing.sharedctypes import Synchronized
from pathlib import Path
from typing import Any

import gaesignals
from gaesignals import Contention, QueueFull, SignalMapping, deliver, send
from gaesignals.queue.append import RESET_RETRIES, SEND_ATTEMPTS
from gaesignals.queue.spread import MAX_CONTENDED
from gaesignals.stores.memcached import MemcachedStore
from gaesignals.testing import MemcachedServer

from . import fault_deliverers as fd
from . import fault_workers as fw
from .fault_stores import configured
from .harness import Run, Tally, proc_names

SCALE = os.environ.get("GAESIGNALS_FAULTS_SCALE", "small")
if SCALE not in ("small", "long"):
    raise ValueError(f"GAESIGNALS_FAULTS_SCALE must be small or long, not {SCALE!r}")
LONG = SCALE == "long"
SEED = int(os.environ.get("GAESIGNALS_FAULTS_SEED", "6"))


def pick(small: Any, long: Any) -> Any:
    """The small or the long variant of a parameter."""
    return long if LONG else small


#: The children's own deadline.
DEADLINE = pick(90.0, 1500.0)


class FaultRun(Run):
    """The children of one test of this file, with its deadline and the reports of
    :mod:`tests.fault_workers`."""

    def __init__(self, tmp: Path) -> None:
        super().__init__(tmp, DEADLINE)

    def senders(
        self,
        how_many: int,
        spec: fw.Spec,
        signals: Sequence[str],
        *,
        stored: Sequence[Synchronized[int]] = (),
        failed: Sequence[Synchronized[int]] = (),
        **kwargs: Any,
    ) -> list[BaseProcess]:
        """``how_many`` :func:`tests.fault_workers.sender` children named ``sender-<i>``,
        sending to ``signals``, each with its own ``stored`` and ``failed`` counter if given;
        ``kwargs`` go to the sender."""
        return [
            self.process(
                fw.sender,
                f"sender-{i}",
                spec,
                i,
                signals,
                stored=stored[i] if stored else None,
                failed=failed[i] if failed else None,
                **kwargs,
            )
            for i in range(how_many)
        ]

    def events(self, name: str) -> list[tuple[str, int, int]]:
        """A deliverer's handler events: (``S`` or ``D``, id, phase) in order."""
        path = self.tmp / f"{name}.ids"
        if not path.exists():
            return []
        out = []
        for line in path.read_text().splitlines():
            kind, pid, *rest = line.split()
            out.append((kind, int(pid), int(rest[0]) if rest else -1))
        return out


@dataclass
class Sends:
    """What the senders of a run did, by payload id."""

    ok: dict[int, tuple[int, str | None]] = field(default_factory=dict)  # id: (phase, node)
    ended: dict[int, int] = field(default_factory=dict)  # id: the phase its send returned in
    failed: dict[int, tuple[str, int, float]] = field(default_factory=dict)  # id: (exc, ...)
    retried: Counter[str] = field(default_factory=Counter)
    calls: Counter[int] = field(default_factory=Counter)
    rounds: Counter[int] = field(default_factory=Counter)

    @classmethod
    def of(cls, run: FaultRun, names: Sequence[str]) -> Sends:
        sends = cls()
        for name in names:
            sends.add(run.report(name))
        return sends

    def add(self, report: dict[str, Any]) -> None:
        for pid, phase, *rest in report["ok"]:
            self.ok[pid] = (phase, rest[0] if rest else None)
            self.ended[pid] = rest[1] if len(rest) > 1 else phase
        for pid, exc, phase, took in report.get("failed", []):
            self.failed[pid] = (exc, phase, took)
        self.retried.update(report.get("retried", {}))
        self.calls.update({int(k): v for k, v in report.get("calls_per_send", {}).items()})
        self.rounds.update({int(k): v for k, v in report.get("rounds_per_send", {}).items()})

    def failed_in(self, phase: int) -> int:
        return sum(1 for _, at, _ in self.failed.values() if at == phase)

    def tally(self, handled: Counter[int]) -> Tally:
        """The total-queue counts against the ids ``handled`` (a send that raised
        StoreUnavailable may have stored its payload: those count as indeterminate)."""
        return Tally.of(self.ok, handled, self.failed)

    def rounds_line(self, rounds: str) -> str:
        """The store round trips of the sends (``rounds``: what one round is), for a report."""
        return (
            f"{rounds} rounds per send (median/p99/max)={spread(self.rounds)} "
            f"retries per send={spread(Counter({k - 1: v for k, v in self.rounds.items()}))} "
            f"store calls per send={spread(self.calls)} raised and resent={dict(self.retried)}"
        )

    def check_rounds(self) -> None:
        """A send takes a bounded number of rounds, and one in the median case: its own
        attempts and the rounds lost only to deliveries' resets, plus, for each time it
        spreads its signal (1 -> 16 shards: at most four), a read of the signal's own key and
        the attempts of the marker's write there."""
        widenings = MAX_CONTENDED.bit_length() - 1
        bound = SEND_ATTEMPTS + RESET_RETRIES + widenings * (1 + SEND_ATTEMPTS)
        assert max(self.rounds) <= bound
        assert statistics.median(self.rounds.elements()) == 1


def handled(run: FaultRun, names: Sequence[str], kind: str = "D") -> Counter[int]:
    """How many times each id was handled (``D``) or started (``S``) by the deliverers."""
    return Counter(pid for name in names for k, pid, _ in run.events(name) if k == kind)


def working_on(run: FaultRun, killed: Sequence[str]) -> tuple[Counter[int], list[int], list[int]]:
    """What each killed deliverer was working on: its last started payload, counted in the
    first result; listed in the second if its handler was still running when the kill came
    (its last event is that ``S``), in the third if the handler had returned (its ``D``)."""
    in_flight: Counter[int] = Counter()
    mid_handler: list[int] = []
    after_handler: list[int] = []
    for name in killed:
        events = run.events(name)
        last = next((e for e in reversed(events) if e[0] == "S"), None)
        if last is not None:
            in_flight[last[1]] += 1
            (mid_handler if events[-1][0] == "S" else after_handler).append(last[1])
    return in_flight, mid_handler, after_handler


def repeats(starts: Counter[int], in_flight: Counter[int]) -> tuple[dict[int, int], dict[int, int]]:
    """The payloads whose handler started more than once, with how many times more, and those
    of them repeated more often than a killed deliverer was working on them (``in_flight``,
    from :func:`working_on`): repeats no kill explains."""
    repeated = {pid: times - 1 for pid, times in starts.items() if times > 1}
    unexplained = {pid: n for pid, n in repeated.items() if n > in_flight[pid]}
    return repeated, unexplained


def spread(histogram: Counter[int]) -> str:
    """``median/p99/max`` of a histogram {value: count}."""
    if not histogram:
        return "-"
    values = sorted(histogram.elements())
    p99 = values[min(len(values) - 1, int(len(values) * 0.99))]
    return f"{statistics.median(values):g}/{p99}/{values[-1]}"


# -- a fault in phases ----------------------------------------------------------------------------

BEFORE, DURING, AFTER = 0, 1, 2  # the phases of a fault, as children read them before a send


class Phased:
    """Senders and deliverers running through a fault (a restart, a dead cluster node, a hung
    server), and what the parent steps them through it with: ``phase`` (BEFORE, DURING, AFTER),
    which they record with each send and handler, and their counts of sends stored and failed
    and of deliveries that met the outage."""

    def __init__(self, run: FaultRun, senders: int, deliverers: int) -> None:
        self.run = run
        self.phase = run.counter()
        self.senders_stop, self.stop = run.ctx.Event(), run.ctx.Event()
        self.stored = [run.counter() for _ in range(senders)]
        self.failed = [run.counter() for _ in range(senders)]
        self.outages = [run.counter() for _ in range(deliverers)]
        self.senders: list[BaseProcess] = []
        self.deliverers: list[BaseProcess] = []

    def add_senders(self, spec: fw.Spec, signals: Sequence[str]) -> None:
        """The senders, sending to ``signals`` (one every 2 ms at most) until the end."""
        self.senders = self.run.senders(
            len(self.stored),
            spec,
            signals,
            stop=self.senders_stop,
            pace=0.002,
            phase=self.phase,
            stored=self.stored,
            failed=self.failed,
        )

    def add_deliverer(self, spec: fw.Spec, signals: Sequence[str], **kwargs: Any) -> None:
        """The next deliverer, ``deliverer-<i>``, delivering ``signals`` until the end;
        ``kwargs`` go to :func:`tests.fault_deliverers.deliverer`."""
        i = len(self.deliverers)
        self.deliverers.append(
            self.run.process(
                fd.deliverer,
                f"deliverer-{i}",
                spec,
                signals,
                stop=self.stop,
                phase=self.phase,
                errors=self.outages[i],
                **kwargs,
            )
        )

    @property
    def everyone(self) -> list[BaseProcess]:
        return [*self.senders, *self.deliverers]

    def progress(self) -> list[int]:
        """How many sends each sender has stored so far."""
        return [s.value for s in self.stored]

    def until_stored(self, what: str, step: int, since: Sequence[int] | None = None) -> None:
        """Wait until every sender has stored ``step`` sends more than ``since`` (its count
        then; by default, since it started)."""
        base = since or [0] * len(self.stored)
        self.run.until(
            what,
            lambda: all(s.value >= n + step for s, n in zip(self.stored, base, strict=True)),
            self.everyone,
        )

    def until_failed(self, what: str, times: int) -> None:
        """Wait until every sender and every deliverer has met the outage ``times`` times."""
        self.run.until(
            what,
            lambda: (
                all(f.value >= times for f in self.failed)
                and all(o.value >= times for o in self.outages)
            ),
            self.everyone,
        )

    def wind_down(self) -> None:
        """Stop the senders, then let the deliverers drain what is left."""
        self.run.wind_down(self.senders, self.deliverers, self.stop, self.senders_stop)

    def outcome(self) -> tuple[Sends, Counter[int], Tally]:
        """What was sent, how often each id was handled, and the tally of the two."""
        sends = Sends.of(self.run, proc_names(self.senders))
        done = handled(self.run, proc_names(self.deliverers))
        return sends, done, sends.tally(done)

    def outages_line(self) -> str:
        return f"deliveries={[o.value for o in self.outages]}"


# -- leases and eviction --------------------------------------------------------------------------


def lease_run(
    server: MemcachedServer,
    tmp_path: Path,
    name: str,
    count: int,
    lease: int,
    sleeps: dict[int, float],
    *,
    taker_lease: int,
    block_on: int = -1,
    while_blocked: Callable[[], None] = lambda: None,
) -> tuple[FaultRun, Sends, dict[str, Counter[int]], int]:
    """Payloads 0..count-1 on ``name``; a first holder delivers them reliably with ``lease``
    (its handler sleeping ``sleeps[id]``), and a second deliverer, started when the first
    handler starts, delivers in a loop with ``taker_lease``. With ``block_on``, the second one's
    handler of that id waits until the first holder has returned and ``while_blocked`` ran.
    Returns the run, the sends, each process's completions and the first holder's count."""
    server.flush()
    spec = {"url": server.url}
    with configured(MemcachedStore.from_url(server.url)):
        for pid in range(count):
            send(name, {"id": pid})
    run = FaultRun(tmp_path)
    started, released, blocked, go_on = (run.ctx.Event() for _ in range(4))
    first = run.process(
        fd.slow_holder,
        "first",
        spec,
        name,
        lease,
        {str(k): v for k, v in sleeps.items()},
        started,
        released,
    )
    second = run.process(
        fd.taker,
        "second",
        spec,
        name,
        taker_lease,
        started,
        block_on,
        blocked,
        go_on,
        count if block_on >= 0 else 0,
    )
    with run.running():
        if block_on >= 0:
            run.until("the second holder", blocked.is_set, [first, second])
            run.join([first])
            assert released.is_set()
            while_blocked()
            go_on.set()
        run.join([first, second])
    sends = Sends(ok={pid: (0, None) for pid in range(count)})
    per = {p: handled(run, [p]) for p in ("first", "second")}
    return run, sends, per, run.report("first")["delivered"]


#: More signals would crowd the counters themselves out of a 2 MiB memcached (then losses are
#: under-reported, never over-reported); the long variant runs longer, not wider.
EVICTION_SIGNALS = 500
EVICTION_PAD = 300
#: Sends after the first eviction, and how often the sender pauses for a delivery.
EVICTION_AFTER_EVICTIONS = pick(20_000, 200_000)
EVICTION_DELIVER_EVERY = 10_000
#: A small memcached: 2 MiB, 64 KiB items (slab_chunk_max may not pass -I).
EVICTION_ARGS = ["-I", "64k", "-o", "slab_chunk_max=32768"]


def evicting_run(server: MemcachedServer, *, mode: str, sends: int | None) -> dict[str, Any]:
    """Send to many signals round-robin (until ``sends``, or until EVICTION_AFTER_EVICTIONS sends
    after the first eviction), delivering every EVICTION_DELIVER_EVERY sends and at the end; return
    what was sent and handled, the counters and the server's evictions."""
    names = [f"e-{i:04d}" for i in range(EVICTION_SIGNALS)]
    store = MemcachedStore.from_url(f"{server.url}?max_value_size={60 * 1024}")
    ok: dict[str, set[int]] = {name: set() for name in names}
    got: dict[str, list[int]] = {name: [] for name in names}
    mapping = SignalMapping(
        [(name, lambda d, name=name: got[name].append(d["id"])) for name in names]
    )
    reliable = mode == "reliable"
    started = time.monotonic()
    with configured(store):
        pid = 0
        evicted_at: int | None = None
        while sends is None or pid < sends:
            name = names[pid % len(names)]
            try:
                send(name, {"id": pid, "pad": "x" * EVICTION_PAD})
                ok[name].add(pid)
            except (QueueFull, Contention):  # refused, and the sender told: not sent
                # (Contention: a 2 MiB memcached at times answers an append and the add after
                # it with "out of memory" until it has evicted enough.)
                pass
            pid += 1
            if pid % EVICTION_DELIVER_EVERY == 0:
                deliver(mapping, reliable=reliable)
                if evicted_at is None and int(server.stats()["evictions"]):
                    evicted_at = pid
                if sends is None and evicted_at and pid - evicted_at >= EVICTION_AFTER_EVICTIONS:
                    break
                assert time.monotonic() - started < DEADLINE, "no eviction before the deadline"
        while deliver(mapping, reliable=reliable):
            pass
        counters = gaesignals.stats(names)
    return {
        "names": names,
        "ok": ok,
        "got": got,
        "counters": counters,
        "evictions": int(server.stats()["evictions"]),
        "sends": pid,
        "seconds": time.monotonic() - started,
    }
