"""Many processes sending and delivering at once against a real memcached, Redis and Redis
cluster (the ``server_url`` fixture).

Children are started with ``spawn`` and run the bodies in :mod:`tests.concurrency_workers`; each
reports through files under ``tmp_path`` named after it (``<name>.json``, ``.ids``, ``.log``,
``.error``). Nothing here waits on a guess: every wait is a join or an event wait with a
deadline, and a child that misses it fails the test with its traceback.
"""

from __future__ import annotations

import json
import multiprocessing
import signal
import threading
import time
from collections import Counter
from collections.abc import Iterable, Sequence
from multiprocessing.process import BaseProcess
from pathlib import Path
from typing import Any

import pytest

from gaesignals import SignalMapping, dead_letters, deliver, stats
from gaesignals.testing import MemcachedServer, RedisClusterServers, RedisServer

from . import concurrency_workers as workers

#: The children's own deadline; a healthy run of each test takes a few seconds.
DEADLINE = 45.0
#: Extra time the parent gives a child past the child's own deadline before failing the test.
GRACE = 10.0


@pytest.fixture(params=["memcached", "redis", "redis-cluster"])
def server_url(request: pytest.FixtureRequest) -> str:
    """The URL of each real server kind in turn, flushed."""
    fixture = {"memcached": "memcached_server", "redis": "redis_server"}.get(
        request.param, "redis_cluster"
    )
    server: MemcachedServer | RedisServer | RedisClusterServers = request.getfixturevalue(fixture)
    server.flush()
    return server.url


class Run:
    """The child processes of one test, reporting under one directory."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.ctx = multiprocessing.get_context("spawn")
        self.procs: list[BaseProcess] = []
        self.exitcodes: dict[str, int | None] = {}
        self.started = time.monotonic()

    def process(self, target: Any, name: str, *args: Any) -> BaseProcess:
        """A process, not started, running ``target(<tmp>/<name>, DEADLINE, *args)``."""
        proc = self.ctx.Process(
            target=target, name=name, args=(str(self.tmp / name), DEADLINE, *args)
        )
        self.procs.append(proc)
        return proc

    def join(self, procs: Sequence[BaseProcess], exitcode: int = 0) -> None:
        """Wait for ``procs`` until the run's deadline; fail unless each exited with
        ``exitcode``."""
        deadline = self.started + DEADLINE + GRACE
        for proc in procs:
            proc.join(max(0.0, deadline - time.monotonic()))
        late = [proc.name for proc in procs if proc.is_alive()]
        if late:
            pytest.fail(f"{', '.join(late)} still running at the deadline{self.errors()}")
        for proc in procs:
            self.exitcodes[proc.name] = proc.exitcode
            if proc.exitcode != exitcode:
                pytest.fail(
                    f"{proc.name} exited with {proc.exitcode}, expected {exitcode}{self.errors()}"
                )

    def errors(self) -> str:
        reports = [f"\n--- {path.name}:\n{path.read_text()}" for path in self.tmp.glob("*.error")]
        return "".join(sorted(reports))

    def cleanup(self) -> None:
        """Kill whatever is still running (a failed test) and release every process."""
        for proc in self.procs:
            if proc.pid is None:
                continue  # never started
            if proc.is_alive():
                proc.kill()
            proc.join(5)
            if not proc.is_alive():
                proc.close()

    def sent(self, names: Iterable[str]) -> tuple[list[int], Counter[str]]:
        """The ids the senders sent successfully, and how many sends raised, by exception."""
        sent: list[int] = []
        failures: Counter[str] = Counter()
        for name in names:
            report: dict[str, Any] = json.loads((self.tmp / f"{name}.json").read_text())
            sent += report["sent"]
            failures.update(report["failures"])
        return sent, failures

    def ids(self, name: str) -> list[int]:
        return [int(line) for line in (self.tmp / f"{name}.ids").read_text().split()]

    def logs(self) -> Counter[str]:
        """The library's warnings and errors logged in every child that finished."""
        counts: Counter[str] = Counter()
        for path in self.tmp.glob("*.log"):
            counts.update(json.loads(path.read_text()))
        return counts


def leftovers(url: str, cold: int, shards: int = 1) -> list[int]:
    """Deliver, in this process, whatever the children left in the store; return the ids."""
    store = workers.configure(url, shards)
    try:
        found: list[int] = []
        mapping = SignalMapping(
            [(name, lambda data: found.append(data["id"])) for name in workers.signal_names(cold)]
        )
        while deliver(mapping):
            pass
        for name in workers.signal_names(cold):
            assert dead_letters(name) == [], f"{name} has dead letters"
        return found
    finally:
        store.close()


def tally(sent: list[int], delivered: Counter[int]) -> tuple[list[int], list[int], list[int]]:
    """(lost, duplicated, unexpected) ids: sent but never delivered, delivered more than once,
    delivered but never (successfully) sent."""
    lost = sorted(set(sent) - delivered.keys())
    duplicated = sorted(pid for pid, times in delivered.items() if times > 1)
    unexpected = sorted(delivered.keys() - set(sent))
    return lost, duplicated, unexpected


@pytest.mark.slow
def test_weak_delivery_under_concurrency(server_url: str, tmp_path: Path) -> None:
    """Two processes delivering weakly while four send 6000 payloads over one hot and 40 cold
    signals deliver every successfully sent payload exactly once."""
    url = server_url
    n_senders, per_sender, cold = 4, 1500, 40
    run = Run(tmp_path)
    senders_done = run.ctx.Event()
    ready = [run.ctx.Event() for _ in range(2)]
    deliverers = [
        run.process(workers.weak_deliverer, f"deliverer-{i}", url, cold, ready[i], senders_done)
        for i in range(len(ready))
    ]
    # The senders start once both deliverers are delivering, so the two always overlap.
    senders = [
        run.process(workers.sender, f"sender-{i}", url, i, per_sender, cold, ready)
        for i in range(n_senders)
    ]
    try:
        for proc in run.procs:
            proc.start()
        run.join(senders)
        senders_done.set()
        run.join(deliverers)
    finally:
        run.cleanup()
    elapsed = time.monotonic() - run.started

    sent, failures = run.sent(proc.name for proc in senders)
    per_deliverer = [run.ids(proc.name) for proc in deliverers]
    delivered = Counter(pid for ids in per_deliverer for pid in ids)
    leftover = leftovers(url, cold)
    lost, duplicated, unexpected = tally(sent, delivered)
    print(
        f"\nweak: {elapsed:.1f}s sent={len(sent)} send_failures={dict(failures)} "
        f"delivered={sum(delivered.values())} per_deliverer={[len(ids) for ids in per_deliverer]} "
        f"lost={len(lost)} duplicated={len(duplicated)} unexpected={len(unexpected)} "
        f"left_in_store={len(leftover)} logged={dict(run.logs())}"
    )
    assert len(sent) == n_senders * per_sender
    assert lost == [], f"{len(lost)} payloads lost, e.g. {lost[:10]}"
    assert duplicated == [], f"{len(duplicated)} payloads delivered twice, e.g. {duplicated[:10]}"
    assert unexpected == [], f"{len(unexpected)} unsent ids delivered, e.g. {unexpected[:10]}"
    assert leftover == []


@pytest.mark.slow
@pytest.mark.parametrize("shards", [1, 4])
def test_reliable_delivery_survives_a_killed_deliverer(
    server_url: str, tmp_path: Path, shards: int
) -> None:
    """Reliable delivery loses nothing when a deliverer is SIGKILLed mid-handler: the others
    deliver its payloads again once the lease on its locks runs out (the hot signal on one
    key, or on four shards, each with its own progress cursor)."""
    url = server_url
    n_senders, per_sender, cold, lease, die_at = 2, 1000, 4, 2, 200
    run = Run(tmp_path)
    senders_done = run.ctx.Event()
    primed = [run.ctx.Event() for _ in range(n_senders)]
    victim_busy = run.ctx.Event()
    survivors_busy = run.ctx.Event()
    # The victim starts once 300 payloads per sender (150 hot) are queued, so its first delivery
    # holds more than die_at payloads of the hot signal, its first signal, and every lock (the
    # survivors wait for its first payload): it dies in the middle of that delivery, whatever
    # the timing, with nothing acknowledged. The senders send their next 300 payloads while it
    # holds the locks, and the rest once a survivor has taken over.
    primed_at, takeover_at = 300, 600
    assert n_senders * primed_at // 2 > die_at
    victim = run.process(
        workers.reliable_deliverer,
        "victim",
        url,
        cold,
        lease,
        primed,
        victim_busy,
        senders_done,
        die_at,
        shards,
    )
    survivors = [
        run.process(
            workers.reliable_deliverer,
            f"survivor-{i}",
            url,
            cold,
            lease,
            [victim_busy],
            survivors_busy,
            senders_done,
            0,
            shards,
        )
        for i in range(2)
    ]
    senders = [
        run.process(
            workers.sender,
            f"sender-{i}",
            url,
            i,
            per_sender,
            cold,
            [],
            [(primed_at, primed[i], victim_busy), (takeover_at, None, survivors_busy)],
            shards,
        )
        for i in range(n_senders)
    ]
    try:
        for proc in run.procs:
            proc.start()
        run.join([victim], -signal.SIGKILL)
        run.join(senders)
        senders_done.set()
        run.join(survivors)
    finally:
        run.cleanup()
    elapsed = time.monotonic() - run.started

    sent, failures = run.sent(proc.name for proc in senders)
    victim_ids = run.ids("victim")
    survivor_ids = [run.ids(proc.name) for proc in survivors]
    # The victim's last id was recorded, then its handler died: only the others completed.
    completed = victim_ids[:-1] + [pid for ids in survivor_ids for pid in ids]
    delivered = Counter(completed)
    leftover = leftovers(url, cold, shards)
    lost, duplicated, unexpected = tally(sent, delivered)
    print(
        f"\nreliable: {elapsed:.1f}s sent={len(sent)} send_failures={dict(failures)} "
        f"victim_exitcode={run.exitcodes['victim']} victim_recorded={len(victim_ids)} "
        f"survivors={[len(ids) for ids in survivor_ids]} delivered={len(completed)} "
        f"lost={len(lost)} duplicated={len(duplicated)} unexpected={len(unexpected)} "
        f"left_in_store={len(leftover)} logged={dict(run.logs())}"
    )
    assert run.exitcodes["victim"] == -signal.SIGKILL
    assert len(sent) == n_senders * per_sender
    assert len(victim_ids) == die_at, "the victim did not die at its die_at-th payload"
    assert lost == [], f"{len(lost)} payloads lost, e.g. {lost[:10]}"
    assert unexpected == [], f"{len(unexpected)} unsent ids delivered, e.g. {unexpected[:10]}"
    assert leftover == []
    # Said outright, though implied by lost == []: the payload the victim died handling was
    # delivered again by a survivor.
    assert any(victim_ids[-1] in ids for ids in survivor_ids)


@pytest.mark.slow
@pytest.mark.parametrize("reliable", [False, True], ids=["weak", "reliable"])
def test_sharded_hot_signal_under_concurrency(
    memcached_server: MemcachedServer, tmp_path: Path, reliable: bool
) -> None:
    """Eight processes sending one sharded hot signal (and a few cold ones) while two
    deliver it concurrently, weakly or reliably: every payload sent is delivered exactly
    once, and nothing is left on any shard."""
    memcached_server.flush()
    url = memcached_server.url
    n_senders, per_sender, cold, shards = 8, 600, 4, 8
    run = Run(tmp_path)
    senders_done = run.ctx.Event()
    ready = [run.ctx.Event() for _ in range(2)]
    if reliable:
        deliverers = [
            run.process(
                workers.reliable_deliverer,
                f"deliverer-{i}",
                url,
                cold,
                30,  # a lease no delivery outlives: duplicates would be a bug
                [],
                ready[i],
                senders_done,
                0,
                shards,
            )
            for i in range(len(ready))
        ]
    else:
        deliverers = [
            run.process(
                workers.weak_deliverer,
                f"deliverer-{i}",
                url,
                cold,
                ready[i],
                senders_done,
                shards,
            )
            for i in range(len(ready))
        ]
    senders = [
        run.process(
            workers.sender,
            f"sender-{i}",
            url,
            i,
            per_sender,
            cold,
            [] if reliable else ready,
            [],
            shards,
        )
        for i in range(n_senders)
    ]
    try:
        for proc in run.procs:
            proc.start()
        run.join(senders)
        senders_done.set()
        run.join(deliverers)
    finally:
        run.cleanup()
    elapsed = time.monotonic() - run.started

    sent, failures = run.sent(proc.name for proc in senders)
    per_deliverer = [run.ids(proc.name) for proc in deliverers]
    delivered = Counter(pid for ids in per_deliverer for pid in ids)
    leftover = leftovers(url, cold, shards)
    lost, duplicated, unexpected = tally(sent, delivered)
    print(
        f"\nsharded {'reliable' if reliable else 'weak'}: {elapsed:.1f}s sent={len(sent)} "
        f"send_failures={dict(failures)} delivered={sum(delivered.values())} "
        f"per_deliverer={[len(ids) for ids in per_deliverer]} lost={len(lost)} "
        f"duplicated={len(duplicated)} unexpected={len(unexpected)} "
        f"left_in_store={len(leftover)} logged={dict(run.logs())}"
    )
    assert len(sent) == n_senders * per_sender
    assert lost == [], f"{len(lost)} payloads lost, e.g. {lost[:10]}"
    assert duplicated == [], f"{len(duplicated)} payloads delivered twice, e.g. {duplicated[:10]}"
    assert unexpected == [], f"{len(unexpected)} unsent ids delivered, e.g. {unexpected[:10]}"
    assert leftover == []


@pytest.mark.slow
@pytest.mark.parametrize("shards", [8, 1], ids=["sharded", "one-key"])
@pytest.mark.parametrize("reliable", [False, True], ids=["weak", "reliable"])
def test_hot_signal_on_the_app_engine_stub(reliable: bool, shards: int) -> None:
    """The same on App Engine's memcache stub, where sends are gets + cas: eight sender
    threads on one signal (sharded, or one key, where every send starts on the one-send fast
    path and a lost CAS falls back to the general one) and two delivering threads (the stub
    lives in one process, so threads stand in for instances); every payload sent is
    delivered exactly once, and ``sent`` counts each once."""
    from google.appengine.ext import testbed

    from gaesignals import Contention, QueueFull, configure, declare, send
    from gaesignals.stores.appengine import AppEngineStore

    bed = testbed.Testbed()
    bed.activate()
    bed.init_memcache_stub()
    try:
        configure(store=AppEngineStore(), secret_key=workers.SECRET_KEY)
        declare("hot", shards=shards)
        n_senders, per_sender = 8, 300
        sent: list[int] = []
        delivered: list[int] = []
        failures: Counter[str] = Counter()
        errors: list[BaseException] = []
        lock = threading.Lock()
        senders_done = threading.Event()
        deadline = time.monotonic() + DEADLINE

        def sender(index: int) -> None:
            try:
                for n in range(per_sender):
                    pid = index * workers.ID_BASE + n
                    while True:
                        try:
                            send("hot", {"id": pid})
                        except (Contention, QueueFull) as error:
                            with lock:
                                failures[type(error).__name__] += 1
                            if time.monotonic() > deadline:
                                raise
                            time.sleep(0.001)
                            continue
                        with lock:
                            sent.append(pid)
                        break
            except BaseException as error:
                errors.append(error)

        def deliverer() -> None:
            mapping = SignalMapping({"hot": lambda data: delivered.append(data["id"])})
            try:
                while not senders_done.is_set() and time.monotonic() < deadline:
                    if deliver(mapping, reliable=reliable, lease=30) == 0:
                        time.sleep(0.001)
                while deliver(mapping, reliable=reliable, lease=30) and time.monotonic() < deadline:
                    pass
            except BaseException as error:
                errors.append(error)

        senders = [threading.Thread(target=sender, args=(i,)) for i in range(n_senders)]
        deliverers = [threading.Thread(target=deliverer) for _ in range(2)]
        for thread in senders + deliverers:
            thread.start()
        for thread in senders:
            thread.join(max(0.0, deadline + GRACE - time.monotonic()))
        senders_done.set()
        for thread in deliverers:
            thread.join(max(0.0, deadline + GRACE - time.monotonic()))
        assert not any(thread.is_alive() for thread in senders + deliverers), "threads hung"
        assert errors == []
        leftover: list[int] = []
        while deliver({"hot": lambda data: leftover.append(data["id"])}, reliable=reliable):
            pass
        lost, duplicated, unexpected = tally(sent, Counter(delivered))
        print(
            f"\n{shards}-shard appengine {'reliable' if reliable else 'weak'}: sent={len(sent)} "
            f"send_failures={dict(failures)} delivered={len(delivered)} lost={len(lost)} "
            f"duplicated={len(duplicated)} left={len(leftover)}"
        )
        assert len(sent) == n_senders * per_sender
        assert lost == [] and duplicated == [] and unexpected == [] and leftover == []
        assert stats("hot")["hot"]["sent"] == len(sent)
    finally:
        bed.deactivate()
