"""Faults of servers: memcached restarted mid-run, a cluster node killed and restarted (also
between a delivery's read and its reset, and under a send_multi), and a hung (SIGSTOPped)
memcached timing calls out.

Each test starts the memcached servers it stops or pauses (``own_memcached``). The counts
(lost, duplicated, unexpected) are described in :mod:`tests.fault_harness`.
"""

from __future__ import annotations

import itertools
import logging
import os
import signal
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest

import gaesignals
from gaesignals import StoreUnavailable, deliver, send, send_multi
from gaesignals.keys import signal_keys
from gaesignals.stores.memcached import MemcachedStore
from gaesignals.testing import MemcachedServer

from . import concurrency_workers as cw
from . import fault_workers as fw
from .fault_harness import AFTER, DURING, SCALE, FaultRun, Phased, pick
from .fault_stores import KillingStore, PausingStore, configured, raw_value, stopped
from .harness import drain

pytestmark = pytest.mark.slow


# -- memcached restarted mid-run ------------------------------------------------------------------

RESTART_SENDERS = 3
RESTART_DELIVERERS = pick(1, 2)  # of each mode
RESTART_STEP = pick(100, 2_000)  # payloads per sender in each phase


def test_a_memcached_restart_loses_only_what_was_pending_before_it(
    own_memcached: Callable[..., MemcachedServer], tmp_path: Path
) -> None:
    """A memcached restarted under running senders and deliverers loses only what was pending before
    the restart, doubles nothing, and every process carries on."""
    # memcached restarted (killed, down for a while, started on the same port) while senders and
    # deliverers run, weak deliverers on half the signals and reliable ones on the other half. Sends
    # during the outage raise StoreUnavailable; every send that returned normally after the restart
    # is delivered (a restart loses what was pending before it: counted); nothing is handled twice
    # or invented; and the same processes carry on, nothing restarted but memcached.
    weak_names = ["w-hot", *(f"w-{i}" for i in range(5))]
    reliable_names = ["r-hot", *(f"r-{i}" for i in range(5))]
    names = [n for pair in zip(weak_names, reliable_names, strict=True) for n in pair]
    server = own_memcached()
    spec = {"url": server.url + "?timeout=1"}
    run = FaultRun(tmp_path)
    crew = Phased(run, RESTART_SENDERS, 2 * RESTART_DELIVERERS)
    crew.add_senders(spec, names)
    for i in range(2 * RESTART_DELIVERERS):
        reliable = i % 2 == 1
        crew.add_deliverer(spec, reliable_names if reliable else weak_names, reliable=reliable)
    with run.running(crew.everyone):
        crew.until_stored("sends before", RESTART_STEP)
        crew.phase.value = DURING
        server.stop()
        # Down until every sender and every deliverer has met the outage.
        crew.until_failed("every process to meet the outage", 1)
        at_restart = crew.progress()
        server.start()
        crew.phase.value = AFTER
        crew.until_stored("sends after the restart", RESTART_STEP, at_restart)
        crew.wind_down()
    with configured(MemcachedStore.from_url(server.url)):
        leftover = drain(names)
    sends, done, tally = crew.outcome()
    ok_after = {pid for pid, (at, _) in sends.ok.items() if at == AFTER}
    lost_after = sorted(ok_after - done.keys())
    lost_before = [pid for pid in tally.lost if sends.ok[pid][0] != AFTER]
    print(
        f"\n[restart {SCALE}] {run.elapsed:.1f}s senders={RESTART_SENDERS} "
        f"deliverers={RESTART_DELIVERERS} weak + {RESTART_DELIVERERS} reliable sent "
        f"ok={len(sends.ok)} (after the restart: {len(ok_after)}) StoreUnavailable: "
        f"sends={len(sends.failed)} (during the outage {sends.failed_in(DURING)},"
        f" after the restart {sends.failed_in(AFTER)}) {crew.outages_line()}\n"
        f"    {tally.line()} lost among sends after the restart={len(lost_after)} lost with the "
        f"restart (sent before it)={len(lost_before)} left_in_store={len(leftover)} "
        f"logged={dict(run.logs())}"
    )
    assert all(f.value > 0 for f in crew.failed)
    assert lost_after == [], f"sent after the restart and never delivered: {lost_after[:10]}"
    assert tally.duplicated == [] and tally.unexpected == []
    assert tally.indeterminate == [], "a send that raised StoreUnavailable was delivered"
    assert leftover == []


# -- one node of a three-node cluster killed and restarted ----------------------------------------

NODE_STEP = pick(100, 2_000)


def test_a_killed_cluster_node_loses_exactly_what_was_pending_on_it(
    own_memcached: Callable[..., MemcachedServer], tmp_path: Path
) -> None:
    """A cluster node SIGKILLed and restarted under running senders and weak deliverers loses
    exactly the payloads pending on it when it died."""
    # One node of a three-node HashClient cluster SIGKILLed while 3 senders and 2 weak deliverers
    # run, and started again later. Sends keep working; delivery drains the live nodes; payloads
    # sent while the node was away (held back from delivery for a while, so some are still stranded
    # on the other nodes when it returns) are delivered after it is back. The payloads lost are
    # exactly those pending on the killed node when it died (what the README says a cluster loses):
    # every lost id was stored on that node before it came back, and every undelivered payload
    # stored there is lost.
    names = [f"c-{i:02d}" for i in range(30)]
    cluster = [own_memcached() for _ in range(3)]
    spec = {
        "cluster": [list(s.address) for s in cluster],
        "timeout": 1,
        "dead_timeout": 1,
    }
    victim = cluster[0]
    victim_node = f"127.0.0.1:{victim.port}"
    run = FaultRun(tmp_path)
    crew = Phased(run, 3, 2)
    hold, release = run.ctx.Event(), run.ctx.Event()
    holding = [run.ctx.Event() for _ in range(2)]
    crew.add_senders(spec, names)
    for i in range(2):
        crew.add_deliverer(
            spec,
            names,
            reliable=False,
            hold=hold,
            holding=holding[i],
            release=release,
            ring=3,
        )

    def sent(step: int) -> None:
        crew.until_stored(f"{step} more sends", step, crew.progress())

    with run.running(crew.everyone):
        sent(NODE_STEP)
        crew.phase.value = DURING
        victim.stop()
        sent(NODE_STEP)  # sends keep working, delivery goes on on the two live nodes
        hold.set()
        run.until("the deliverers to pause", lambda: all(h.is_set() for h in holding), [])
        sent(NODE_STEP // 2)  # these stay pending, many on nodes that are not their home
        victim.start()
        crew.phase.value = AFTER
        release.set()
        sent(NODE_STEP)
        crew.wind_down()
    with configured(fw.memcached_store(spec)) as store:
        assert isinstance(store, MemcachedStore)
        home = {name: store.client.hasher.get_node(signal_keys(name, "").queue) for name in names}
        leftover = drain(names)
    sends, done, tally = crew.outcome()
    events = [e for p in crew.deliverers for e in run.events(p.name) if e[0] == "D"]
    on_victim = {pid for pid, (at, node) in sends.ok.items() if node == victim_node and at < AFTER}
    pending_at_kill = on_victim - done.keys()
    away = {pid for pid, (at, node) in sends.ok.items() if at == DURING and node != victim_node}
    stranded = {pid for pid in away if home[fw.name_of(pid, names, 0)] == victim_node}
    after_return = {pid for _, pid, at in events if at == AFTER}
    print(
        f"\n[cluster node {SCALE}] {run.elapsed:.1f}s nodes=3 senders=3 weak deliverers=2 sent ok="
        f"{len(sends.ok)} (while the node was away: {len(away)}, of them homed on it: "
        f"{len(stranded)}, delivered after it was back: {len(stranded & after_return)}) "
        f"StoreUnavailable: sends={len(sends.failed)} (when killed {sends.failed_in(DURING)}, "
        f"after the restart {sends.failed_in(AFTER)}) {crew.outages_line()}\n"
        f"    {tally.line()} pending on the killed node when it died={len(pending_at_kill)} "
        f"left_in_store={len(leftover)} logged={dict(run.logs())}"
    )
    assert set(tally.lost) == pending_at_kill, (
        f"lost but not on the killed node: {sorted(set(tally.lost) - pending_at_kill)[:10]}; "
        f"on it, yet not lost: {sorted(pending_at_kill - set(tally.lost))[:10]}"
    )
    assert tally.duplicated == [] and tally.unexpected == []
    assert stranded & after_return, "no payload was stranded and delivered after the return"
    assert leftover == []


def test_a_node_dying_between_a_weak_read_and_its_reset_loses_nothing_on_live_nodes(
    own_memcached: Callable[..., MemcachedServer],
) -> None:
    """A cluster node dying between a weak delivery's read and its reset loses nothing from the live
    nodes."""
    # A weak delivery over a three-node cluster reads every signal, then one node dies before the
    # batched reset: the payloads on the two live nodes must not be lost (the README: only "payloads
    # that were on a server when it died are lost with its memory").
    names = [f"n-{i:02d}" for i in range(30)]
    cluster = [own_memcached() for _ in range(3)]
    spec = {"cluster": [list(s.address) for s in cluster], "timeout": 1, "dead_timeout": 60}
    inner = fw.memcached_store(spec)
    with configured(inner):
        victim = f"127.0.0.1:{cluster[0].port}"
        # A name on a live node first, so its node's reset is sent before the dead one's.
        names.sort(key=lambda n: fw.node_of(inner, n) == victim)
        for i, name in enumerate(names):
            send(name, {"id": i})
        on_victim = {i for i, n in enumerate(names) if fw.node_of(inner, n) == victim}
        gaesignals.configure(store=KillingStore(inner, cluster[0]), secret_key=cw.SECRET_KEY)
        got: list[int] = []
        mapping = [(name, lambda d: got.append(d["id"])) for name in names]
        try:
            deliver(mapping)
            outcome = "returned"
        except StoreUnavailable:
            outcome = "raised StoreUnavailable"
        gaesignals.configure(store=inner, secret_key=cw.SECRET_KEY)
        while deliver(mapping):
            pass
    lost = sorted(set(range(len(names))) - set(got) - on_victim)
    print(
        f"\n[node dies between read and reset] delivery {outcome}; payloads on the dead "
        f"node={len(on_victim)} on live nodes={len(names) - len(on_victim)} handled="
        f"{len(got)} lost from live nodes={len(lost)}"
    )
    assert len(got) == len(set(got))
    assert lost == [], (
        f"{len(lost)} payloads on live nodes lost: the batched cas reset was applied on "
        "the live nodes, then the dead node's part raised StoreUnavailable before any "
        "handler ran (gaesignals/queue/weak_take.py; the memcached store's Ring.each_server "
        "raises after earlier servers' parts were applied)"
    )


def test_send_multi_beside_a_dead_cluster_node_stores_everything_or_raises(
    own_memcached: Callable[..., MemcachedServer],
) -> None:
    """A send_multi over a cluster whose node just died stores every payload or raises
    StoreUnavailable, and the next one goes around the dead node."""
    # send_multi over a three-node cluster right after one node died: a send that returns normally
    # has stored every payload; one that raises StoreUnavailable may have stored those on the other
    # nodes (the README's cluster limits: "it may or may not have been stored"): counted. Sends
    # after that one go around the dead node.
    names = [f"m-{i:02d}" for i in range(30)]
    cluster = [own_memcached() for _ in range(3)]
    spec = {"cluster": [list(s.address) for s in cluster], "timeout": 1, "dead_timeout": 60}
    with configured(fw.memcached_store(spec)) as store:
        assert isinstance(store, MemcachedStore)
        victim = f"127.0.0.1:{cluster[0].port}"
        send_multi([(name, {"id": -1}) for name in names])  # opens a socket to every node
        drain(names)
        on_victim = [n for n in names if fw.node_of(store, n) == victim]
        ordered = [n for n in names if n not in on_victim] + on_victim  # its batch last
        cluster[0].stop()
        outcomes = []
        for attempt in range(2):
            batch = [(name, {"id": attempt * 100 + i}) for i, name in enumerate(ordered)]
            try:
                send_multi(batch)
                outcomes.append("ok")
            except StoreUnavailable:
                outcomes.append("StoreUnavailable")
            arrived = set(drain(names))
            ids = {data["id"] for _, data in batch}
            outcomes.append(f"{len(arrived & ids)} of {len(ids)} arrived")
            if outcomes[-2] == "ok":
                assert arrived == ids
        print(f"\n[send_multi on a cluster with a dead node] {outcomes}")
        assert outcomes[-2] == "ok"


# -- a hung memcached -----------------------------------------------------------------------------

HUNG_TIMEOUT = 1
HUNG_STEP = pick(50, 1_000)


def test_a_hung_memcached_times_sends_out_and_they_resume_after_it(
    own_memcached: Callable[..., MemcachedServer], tmp_path: Path
) -> None:
    """Against a hung (SIGSTOPped) memcached every send raises StoreUnavailable within about the
    timeout, and after SIGCONT every normal send is delivered once, in order."""
    # memcached paused with SIGSTOP (a hung server: connections accepted by the kernel, never
    # answered) while 2 senders and 2 reliable deliverers run with ``?timeout=1``: every send raises
    # StoreUnavailable within about the timeout instead of blocking, none returns normally while the
    # server is paused; after SIGCONT the same processes carry on and every send that returned
    # normally is delivered, once, in order.
    #
    # A timed-out send is indeterminate: its request sits in the server's socket buffer and is
    # applied when the server resumes. Such payloads are counted ("landed despite
    # StoreUnavailable"), as is the order they land in. (Weak delivery is left to the next test: a
    # timed-out weak delivery can lose payloads.)
    names = cw.signal_names(7)
    server = own_memcached()
    assert server.process is not None
    spec = {"url": f"{server.url}?timeout={HUNG_TIMEOUT}"}
    run = FaultRun(tmp_path)
    crew = Phased(run, 2, 2)
    crew.add_senders(spec, names)
    for _ in range(2):
        crew.add_deliverer(spec, names, reliable=True, shared=str(tmp_path / "shared.events"))
    with run.running(crew.everyone):
        crew.until_stored("sends", HUNG_STEP)
        pid = server.process.pid
        os.kill(pid, signal.SIGSTOP)
        run.until("memcached to stop", lambda: stopped(pid), [])
        paused_at = time.monotonic()
        crew.phase.value = DURING
        crew.until_failed(
            "every process to time out twice (the second call started while paused)", 2
        )
        at_resume = crew.progress()
        crew.phase.value = AFTER
        os.kill(pid, signal.SIGCONT)
        paused_for = time.monotonic() - paused_at
        crew.until_stored("sends after SIGCONT", HUNG_STEP, at_resume)
        crew.wind_down()
    with configured(MemcachedStore.from_url(server.url)):
        leftover = drain(names)
    sends, _, tally = crew.outcome()
    ok_while_paused = [
        pid for pid, (at, _) in sends.ok.items() if at == DURING and sends.ended[pid] == DURING
    ]
    slowest_failure = max(took for _, _, took in sends.failed.values())
    # Order: per signal, the order the payloads were handled in, against their ids (a sender
    # sends its ids in increasing order, so ids of one sender must come out increasing).
    order: dict[tuple[str, int], list[int]] = {}
    for line in (tmp_path / "shared.events").read_text().splitlines():
        pid = int(line.split()[1])
        order.setdefault((fw.name_of(pid, names, 0), pid // cw.ID_BASE), []).append(pid)
    out_of_order_ok = sum(
        1
        for ids in order.values()
        for a, b in itertools.pairwise(ids)
        if a > b and a in sends.ok and b in sends.ok
    )
    out_of_order_any = sum(1 for ids in order.values() for a, b in itertools.pairwise(ids) if a > b)
    print(
        f"\n[hung memcached {SCALE}] {run.elapsed:.1f}s paused for {paused_for:.1f}s "
        f"timeout={HUNG_TIMEOUT}s sent ok={len(sends.ok)} StoreUnavailable: "
        f"sends={len(sends.failed)} (while paused "
        f"{sends.failed_in(DURING)}) {crew.outages_line()} slowest failed "
        f"send={slowest_failure:.2f}s sends that returned normally while paused="
        f"{len(ok_while_paused)} (started while paused, returned after SIGCONT: "
        f"{sum(1 for at, _ in sends.ok.values() if at == DURING) - len(ok_while_paused)})\n"
        f"    {tally.line()} handled out of send order: among normal sends={out_of_order_ok}, "
        f"counting the timed-out ones={out_of_order_any} left_in_store={len(leftover)} "
        f"logged={dict(run.logs())}"
    )
    assert slowest_failure < HUNG_TIMEOUT + 1.0, "a send blocked well past its timeout"
    assert ok_while_paused == []
    assert sends.failed_in(DURING) >= 2
    tally.check()
    assert out_of_order_ok == 0
    assert leftover == []


@pytest.mark.parametrize("mode", ["weak", "reliable"])
def test_a_delivery_timed_out_by_a_hung_memcached_doubles_nothing(
    own_memcached: Callable[..., MemcachedServer], mode: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A delivery timed out by a memcached hung after its read handles nothing twice; reliable loses
    nothing, weak at most that reset's payloads, and says so."""
    # A delivery whose reset (weak) or acknowledgement (reliable) times out because memcached hung
    # right after the payloads were read raises StoreUnavailable. Reliable: once memcached resumes,
    # every payload is handled, none twice. Weak (the README's documented limit): the reset may be
    # applied when memcached resumes, so the payloads it read may be lost, never more than that one
    # reset took, never delivered twice, and never silently: the delivery logs how many are at stake
    # (and takes its accounting back, so the lost counter reports them when the cache answers that).
    server = own_memcached()
    assert server.process is not None
    inner = MemcachedStore.from_url(f"{server.url}?timeout={HUNG_TIMEOUT}")
    with configured(inner):
        for pid in range(5):
            send("t", {"id": pid})
        gaesignals.configure(
            store=PausingStore(inner, server.process.pid), secret_key=cw.SECRET_KEY
        )
        got: list[int] = []
        started = time.monotonic()
        with pytest.raises(StoreUnavailable), caplog.at_level(logging.ERROR, "gaesignals"):
            deliver({"t": lambda d: got.append(d["id"])}, reliable=mode == "reliable")
        took = time.monotonic() - started
        handled_before = list(got)
        os.kill(server.process.pid, signal.SIGCONT)
        gaesignals.configure(store=inner, secret_key=cw.SECRET_KEY)
        queue = signal_keys("t", "").queue
        # Give the request memcached received before it hung the time to be applied: wait
        # (bounded) until the queue changes, then deliver what is left.
        deadline = time.monotonic() + 3
        while raw_value(queue) and mode == "weak" and time.monotonic() < deadline:
            time.sleep(0.01)
        for _ in range(10):
            if not raw_value(queue):
                break
            deliver({"t": lambda d: got.append(d["id"])}, reliable=mode == "reliable", lease=1)
            time.sleep(0.2)  # a reliable lock left by the timed-out delivery expires
        counts = Counter(got)
        counters = gaesignals.stats("t")["t"]
    lost = sorted(set(range(5)) - set(got))
    print(
        f"\n[timed-out {mode} delivery] raised StoreUnavailable after {took:.2f}s; "
        f"handled before it raised={handled_before} handled in all={sorted(got)} "
        f"lost={lost} counters={counters}"
    )
    # Weak and reliable each make one more call after the timed-out one (taking the
    # accounting back; releasing the lock), which times out too.
    assert took < 2 * HUNG_TIMEOUT + 1.0
    assert max(counts.values(), default=1) == 1
    if mode == "reliable":
        assert sorted(counts) == list(range(5)), f"payloads {lost} lost"
    else:
        assert handled_before == []
        if lost:
            assert lost == list(range(5))  # only what the timed-out reset took
            assert "its 5 payload(s) read now are lost" in caplog.text
