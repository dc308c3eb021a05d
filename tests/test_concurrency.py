"""Many processes sending and delivering at once against a real memcached, Redis and Redis
cluster (the ``server_url`` fixture).

Children are started with ``spawn`` and run the bodies in :mod:`tests.concurrency_workers`; each
reports through files under ``tmp_path`` named after it (``<name>.json``, ``.ids``, ``.log``,
``.error``). Nothing here waits on a guess: every wait is a join or an event wait with a
deadline, and a child that misses it fails the test with its traceback.
"""

from __future__ import annotations

import signal
import threading
import time
from collections import Counter
from collections.abc import Iterable, Sequence
from multiprocessing.process import BaseProcess
from multiprocessing.synchronize import Event
from pathlib import Path

import pytest

from gaesignals import SignalMapping, deliver, stats
from gaesignals.config import get_settings
from gaesignals.keys import shard_queues, signal_keys
from gaesignals.queue.append import widen
from gaesignals.testing import MemcachedServer, RedisClusterServers, RedisServer

from . import concurrency_workers as workers
from . import harness
from .harness import GRACE, Tally, Threads, leftovers, proc_names

#: The children's own deadline; a healthy run of each test takes a few seconds.
DEADLINE = 45.0


@pytest.fixture(params=["memcached", "redis", "redis-cluster"])
def server_url(request: pytest.FixtureRequest) -> str:
    """The URL of each real server kind in turn, flushed."""
    fixture = {"memcached": "gaesignals_memcached", "redis": "gaesignals_redis"}.get(
        request.param, "redis_cluster"
    )
    server: MemcachedServer | RedisServer | RedisClusterServers = request.getfixturevalue(fixture)
    server.flush()
    return server.url


class Run(harness.Run):
    """The children of one test of this file, with its deadline and the reports of
    :mod:`tests.concurrency_workers`."""

    def __init__(self, tmp: Path) -> None:
        super().__init__(tmp, DEADLINE)

    def senders(
        self,
        how_many: int,
        url: str,
        per_sender: int,
        cold: int,
        start_when: Sequence[Event] = (),
        steps: Sequence[Sequence[workers.Step]] = (),
        shards: int | None = 1,
    ) -> list[BaseProcess]:
        """``how_many`` :func:`tests.concurrency_workers.sender` children named ``sender-<i>``,
        each sending ``per_sender`` payloads once ``start_when`` is set, with its own
        ``steps[i]`` if given."""
        return [
            self.process(
                workers.sender,
                f"sender-{i}",
                url,
                i,
                per_sender,
                cold,
                start_when,
                steps[i] if steps else [],
                shards,
            )
            for i in range(how_many)
        ]

    def sent(self, senders: Iterable[BaseProcess]) -> tuple[list[int], Counter[str]]:
        """The ids the senders sent successfully, and how many sends raised, by exception."""
        sent: list[int] = []
        failures: Counter[str] = Counter()
        for name in proc_names(senders):
            report = self.report(name)
            sent += report["sent"]
            failures.update(report["failures"])
        return sent, failures

    def ids(self, name: str) -> list[int]:
        """The ids deliverer ``name`` handled, in order."""
        return [int(line) for line in (self.tmp / f"{name}.ids").read_text().split()]


def check_delivered_once(
    run: Run,
    label: str,
    url: str,
    cold: int,
    shards: int | None,
    senders: Sequence[BaseProcess],
    deliverers: Sequence[BaseProcess],
    expected: int,
) -> None:
    """Print what the senders sent and the deliverers delivered, and check that all
    ``expected`` payloads were sent and each delivered exactly once, nothing left behind."""
    sent, failures = run.sent(senders)
    per_deliverer = [run.ids(proc.name) for proc in deliverers]
    delivered = Counter(pid for ids in per_deliverer for pid in ids)
    leftover = leftovers(url, cold, shards)
    tally = Tally.of(sent, delivered)
    print(
        f"\n{label}: {run.elapsed:.1f}s sent={len(sent)} send_failures={dict(failures)} "
        f"delivered={sum(delivered.values())} per_deliverer={[len(ids) for ids in per_deliverer]} "
        f"{tally.line()} left_in_store={len(leftover)} logged={dict(run.logs())}"
    )
    assert len(sent) == expected
    tally.check()
    assert leftover == []


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
    senders = run.senders(n_senders, url, per_sender, cold, ready)
    with run.running():
        run.wind_down(senders, deliverers, senders_done)
    check_delivered_once(run, "weak", url, cold, 1, senders, deliverers, n_senders * per_sender)


@pytest.mark.slow
@pytest.mark.parametrize("shards", [1, 4, None], ids=["one-key", "four-shards", "spreading"])
def test_reliable_delivery_survives_a_killed_deliverer(
    server_url: str, tmp_path: Path, shards: int | None
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
    steps = [
        [(primed_at, primed[i], victim_busy), (takeover_at, None, survivors_busy)]
        for i in range(n_senders)
    ]
    senders = run.senders(n_senders, url, per_sender, cold, [], steps, shards)
    with run.running():
        if shards is None:  # undeclared: spread it to 8 shards while the victim delivers
            run.until("the victim's first payload", victim_busy.is_set, [victim])
            spread_from_here(url, 8)
        run.join([victim], -signal.SIGKILL)
        run.wind_down(senders, survivors, senders_done)

    sent, failures = run.sent(senders)
    victim_ids = run.ids("victim")
    survivor_ids = [run.ids(proc.name) for proc in survivors]
    # The victim's last id was recorded, then its handler died: only the others completed.
    completed = victim_ids[:-1] + [pid for ids in survivor_ids for pid in ids]
    delivered = Counter(completed)
    leftover = leftovers(url, cold, shards)
    tally = Tally.of(sent, delivered)
    print(
        f"\nreliable: {run.elapsed:.1f}s sent={len(sent)} send_failures={dict(failures)} "
        f"victim_exitcode={run.exitcodes['victim']} victim_recorded={len(victim_ids)} "
        f"survivors={[len(ids) for ids in survivor_ids]} delivered={len(completed)} "
        f"{tally.line()} left_in_store={len(leftover)} logged={dict(run.logs())}"
    )
    assert run.exitcodes["victim"] == -signal.SIGKILL
    assert len(sent) == n_senders * per_sender
    assert len(victim_ids) == die_at, "the victim did not die at its die_at-th payload"
    tally.check(duplicates=True)  # the payload the victim died handling is handled again
    assert leftover == []
    # Said outright, though implied by lost == []: the payload the victim died handling was
    # delivered again by a survivor.
    assert any(victim_ids[-1] in ids for ids in survivor_ids)


@pytest.mark.slow
@pytest.mark.parametrize("reliable", [False, True], ids=["weak", "reliable"])
def test_sharded_hot_signal_under_concurrency(
    gaesignals_memcached: MemcachedServer, tmp_path: Path, reliable: bool
) -> None:
    """Eight processes sending one sharded hot signal (and a few cold ones) while two
    deliver it concurrently, weakly or reliably: every payload sent is delivered exactly
    once, and nothing is left on any shard."""
    gaesignals_memcached.flush()
    url = gaesignals_memcached.url
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
    senders = run.senders(n_senders, url, per_sender, cold, [] if reliable else ready, [], shards)
    with run.running():
        run.wind_down(senders, deliverers, senders_done)
    label = f"sharded {'reliable' if reliable else 'weak'}"
    check_delivered_once(run, label, url, cold, shards, senders, deliverers, n_senders * per_sender)


def spread_from_here(url: str, shards: int) -> None:
    """Spread the hot signal over ``shards`` shards from this process, as one of its senders
    or deliverers would."""
    store = workers.configure(url, None)
    try:
        settings = get_settings()
        queues = shard_queues(signal_keys(workers.HOT, settings.namespace).queue, 1)
        with store.connection() as conn:
            while len(queues) < shards:
                queues = widen(conn, settings, queues)
    finally:
        store.close()


@pytest.mark.slow
def test_an_undeclared_hot_signal_spreads_under_concurrency(
    gaesignals_memcached: MemcachedServer, tmp_path: Path
) -> None:
    """Eight processes sending flat out to one signal nobody declared (and to cold ones)
    while four deliver weakly: the deliveries' resets lose to the appends until the signal
    spreads itself, and then no send raises (``QueueFull`` was the symptom), every payload
    sent is delivered exactly once, and nothing is left on any shard."""
    gaesignals_memcached.flush()
    url = gaesignals_memcached.url
    n_senders, per_sender, cold = 8, 10000, 4
    run = Run(tmp_path)
    senders_done = run.ctx.Event()
    ready = [run.ctx.Event() for _ in range(4)]
    deliverers = [
        run.process(
            workers.weak_deliverer, f"deliverer-{i}", url, cold, ready[i], senders_done, None
        )
        for i in range(len(ready))
    ]
    senders = run.senders(n_senders, url, per_sender, cold, ready, [], None)
    with run.running():
        run.wind_down(senders, deliverers, senders_done)
    expected = n_senders * per_sender
    check_delivered_once(run, "undeclared weak", url, cold, None, senders, deliverers, expected)
    assert run.sent(senders)[1] == Counter()


@pytest.mark.slow
@pytest.mark.parametrize("shards", [8, None], ids=["sharded", "undeclared"])
@pytest.mark.parametrize("reliable", [False, True], ids=["weak", "reliable"])
def test_hot_signal_on_the_app_engine_stub(reliable: bool, shards: int | None) -> None:
    """The same on App Engine's memcache stub, where sends are gets + cas: sixteen sender
    threads on one signal (declared with eight shards, or undeclared, where every send
    starts on the one-send fast path, a lost CAS falls back to the general one, and the
    signal spreads itself) and two delivering threads (the stub lives in one process, so
    threads stand in for instances); every payload sent is delivered exactly once, ``sent``
    counts each once, and on the undeclared signal no send raises."""
    from google.appengine.ext import testbed

    from gaesignals import Contention, QueueFull, configure, declare, send
    from gaesignals.stores.appengine import AppEngineStore

    bed = testbed.Testbed()
    bed.activate()
    bed.init_memcache_stub()
    try:
        configure(store=AppEngineStore(), secret_key=workers.SECRET_KEY)
        if shards is not None:
            declare("hot", shards=shards)
        n_senders, per_sender = 16, 150
        sent: list[int] = []
        delivered: list[int] = []
        failures: Counter[str] = Counter()
        lock = threading.Lock()
        senders_done = threading.Event()
        deadline = time.monotonic() + DEADLINE

        def sender(index: int) -> None:
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

        def deliverer() -> None:
            mapping = SignalMapping({"hot": lambda data: delivered.append(data["id"])})
            while not senders_done.is_set() and time.monotonic() < deadline:
                if deliver(mapping, reliable=reliable, lease=30) == 0:
                    time.sleep(0.001)
            while deliver(mapping, reliable=reliable, lease=30) and time.monotonic() < deadline:
                pass

        threads = Threads()
        threads.run(
            [threads.thread(sender, i) for i in range(n_senders)],
            [threads.thread(deliverer) for _ in range(2)],
            senders_done,
            deadline + GRACE,
        )
        leftover: list[int] = []
        while deliver({"hot": lambda data: leftover.append(data["id"])}, reliable=reliable):
            pass
        tally = Tally.of(sent, Counter(delivered))
        print(
            f"\n{shards}-shard appengine {'reliable' if reliable else 'weak'}: sent={len(sent)} "
            f"send_failures={dict(failures)} delivered={len(delivered)} {tally.line()} "
            f"left={len(leftover)}"
        )
        assert len(sent) == n_senders * per_sender
        if shards is None:  # it spread itself: no send raised (declared, it may be retried)
            assert failures == Counter()
        tally.check()
        assert leftover == []
        assert stats("hot")["hot"]["sent"] == len(sent)
    finally:
        bed.deactivate()
