"""Stats and health (issue 7): pending counts, per-signal counters and the health report, on
every store."""

from __future__ import annotations

import importlib
import json
import logging
import time
from types import SimpleNamespace
from typing import Any

import pytest

import gaesignals
from gaesignals import (
    Pending,
    SignalMapping,
    dead_letters,
    deliver,
    frames,
    health,
    pending,
    purge_dead_letters,
    requeue_dead_letters,
    send,
    send_multi,
    stats,
)
from gaesignals.keys import signal_keys
from gaesignals.pytest_plugin import make_store
from gaesignals.stores import Store, TakeGroup
from gaesignals.stores.memory import MemoryStore
from gaesignals.testing import CountingStore, DownStore

from .conftest import RawAccess

ZERO = {
    "sent": 0,
    "delivered": 0,
    "failed": 0,
    "retried": 0,
    "dead_lettered": 0,
    "dropped": 0,
    "expired": 0,
    "lost": 0,
    "coalesced": 0,
    "cancelled": 0,
    "purged": 0,
}


def test_pending_counts_without_draining(store: Store) -> None:
    """pending() counts each signal's frames and bytes and dates the oldest, and leaves them
    for delivery; a signal with nothing pending reads as zero with no age."""
    send_multi([("a", 1), ("a", 2), ("b", {"x": "y" * 100})])
    before = pending(["a", "b", "c"])
    assert before["a"].count == 2 and before["b"].count == 1
    assert before["a"].bytes > 0 and before["b"].bytes > before["a"].bytes / 2
    assert before["c"] == Pending(0, 0, None)
    age = before["a"].oldest_age
    assert age is not None and 0 <= age < 60
    assert pending("a")["a"][:2] == before["a"][:2]  # reading drained nothing
    got: list[Any] = []
    assert deliver({"a": got.append, "b": got.append}) == 3
    assert pending(["a", "b"]) == {"a": Pending(0, 0, None), "b": Pending(0, 0, None)}


def test_oldest_age_comes_from_the_frame_id(monkeypatch: pytest.MonkeyPatch) -> None:
    """A frame's id starts with its send second, so the age of the oldest pending payload is
    known without any other key."""
    gaesignals.configure(store=MemoryStore())
    clock = [1_700_000_000.0]
    fake = SimpleNamespace(time=lambda: clock[0], perf_counter=time.perf_counter)
    monkeypatch.setattr(frames, "clock", fake.time)
    monkeypatch.setattr(importlib.import_module("gaesignals.inspection"), "time", fake)
    send("aged", 1)
    clock[0] += 30
    send("aged", 2)
    clock[0] += 15
    assert pending("aged")["aged"].oldest_age == 45.0


def test_counters_follow_sends_and_deliveries(store: Store) -> None:
    """sent counts the stored payloads; delivered and failed the handler outcomes (weak and
    reliable); nothing lost when nothing was evicted. Missing counters read as 0."""
    assert stats(["fresh"]) == {"fresh": ZERO}
    send_multi([("s", 1), ("s", 2), ("s", 3), ("t", 1)])
    assert stats("s")["s"] == {**ZERO, "sent": 3}

    def picky(data: int) -> None:
        if data == 2:
            raise ValueError("no")

    deliver({"s": picky, "t": lambda d: None})
    assert stats(["s", "t"]) == {
        "s": {**ZERO, "sent": 3, "delivered": 2, "failed": 1},
        "t": {**ZERO, "sent": 1, "delivered": 1},
    }
    send("r", 1)
    deliver({"r": lambda d: None}, reliable=True)
    assert stats("r")["r"] == {**ZERO, "sent": 1, "delivered": 1}


def test_dead_letters_count(store: Store) -> None:
    """Each failed reliable attempt counts as failed, each but the last also as retried; the
    move to the dead letters as dead_lettered. Requeued letters are pending again (not lost),
    and delivering them counts as delivered."""
    send("d", "bad")
    failing = SignalMapping({"d": lambda d: 1 / 0}, max_attempts=2)
    deliver(failing, reliable=True, retry_delay=0)
    deliver(failing, reliable=True, retry_delay=0)
    assert dead_letters("d") == ["bad"]
    assert stats("d")["d"] == {**ZERO, "sent": 1, "failed": 2, "retried": 1, "dead_lettered": 1}
    assert requeue_dead_letters("d") == 1
    assert pending("d")["d"].count == 1
    deliver({"d": lambda d: None}, reliable=True, retry_delay=0)
    assert stats("d")["d"] == {
        **ZERO,
        "sent": 1,
        "failed": 2,
        "retried": 1,
        "dead_lettered": 1,
        "delivered": 1,
    }
    assert purge_dead_letters("d") == 0


def test_dropped_frames_are_counted_not_lost(raw: RawAccess) -> None:
    """A bad frame in a queue is dropped (logged) and counted as dropped; the valid frames
    around it are delivered, and nothing is reported lost."""
    send("g", 1)
    key = signal_keys("g", "").queue
    value = raw.get(key)
    assert value is not None
    raw.set(key, value + b"\xa7\x5cgarbage that is no frame")
    send("g", 2)
    got: list[Any] = []
    deliver({"g": got.append})
    assert got == [1, 2]
    assert stats("g")["g"] == {**ZERO, "sent": 2, "delivered": 2, "dropped": 1}


def test_lost_reports_what_vanished(raw: RawAccess, caplog: pytest.LogCaptureFixture) -> None:
    """A queue that disappears from the cache (eviction, simulated by a delete) is reported:
    the next delivery logs a warning and the lost counter holds how many payloads went;
    another delivery does not count them again."""
    send_multi([("v", 1), ("v", 2), ("v", 3)])
    with raw.store.connection() as conn:
        conn.delete_many([signal_keys("v", "").queue])
    send("v", 4)
    got: list[Any] = []
    with caplog.at_level(logging.WARNING, "gaesignals"):
        deliver({"v": got.append})
        deliver({"v": got.append})
    assert got == [4]
    assert stats("v")["v"] == {**ZERO, "sent": 4, "delivered": 1, "lost": 3}
    assert caplog.text.count("vanished from the cache") == 1


@pytest.mark.parametrize("reliable", [False, True], ids=["weak", "reliable"])
def test_lost_is_checked_once_per_interval(
    store: Store, reliable: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """By default a process checks a signal for lost payloads at most once per
    ``lost_check_interval`` (the check reads three counters per signal): a loss in between is
    reported by the first delivery after the interval, exactly once, and nothing is reported
    as lost that was delivered meanwhile."""
    accounting = importlib.import_module("gaesignals.accounting")
    clock = [1000.0]
    monkeypatch.setattr(accounting, "_monotonic", lambda: clock[0])
    seen: list[list[str]] = []
    reads = store.connection

    class Watched:
        """The store, noting the keys of every read."""

        def __getattr__(self, name: str) -> Any:
            return getattr(store, name)

        def connection(self) -> Any:
            outer = reads()
            conn = outer.__enter__()
            scan = conn.scan_many

            def scan_many(keys: list[str]) -> Any:
                seen.append(list(keys))
                return scan(keys)

            conn.scan_many = scan_many
            return _Entered(outer, conn)

        @property
        def native(self) -> Any:
            """The store's native take, noting the keys each take reads (Redis)."""
            if store.native is None:
                return None
            take = store.native.take_many

            class Noted:
                def take_many(self, groups: list[TakeGroup], now: int = 0) -> Any:
                    seen.append([k for group in groups for k in (*group.read, *group.queues)])
                    return take(groups, now)

                def __getattr__(self, name: str) -> Any:
                    return getattr(store.native, name)

            return Noted()

    gaesignals.configure(store=Watched(), lost_check_interval=30)  # type: ignore[arg-type]
    keys = signal_keys("p", "")
    got: list[Any] = []
    send("p", 1)
    deliver({"p": got.append}, reliable=reliable)  # checks: the first time in this process
    assert keys.counter("sent") in seen[-1]
    send_multi([("p", 2), ("p", 3)])
    with store.connection() as conn:
        conn.delete_many([keys.queue])  # evicted
    send("p", 4)
    clock[0] += 29
    deliver({"p": got.append}, reliable=reliable)  # within the interval: the queue only
    assert keys.counter("sent") not in seen[-1]
    assert stats("p")["p"]["lost"] == 0
    clock[0] += 1
    deliver({"p": got.append}, reliable=reliable)  # due again: the two evicted are found
    assert keys.counter("sent") in seen[-1]
    assert got == [1, 4]
    assert stats("p")["p"] == {**ZERO, "sent": 4, "delivered": 2, "lost": 2}


@pytest.mark.parametrize("store_kind", ["memory-cas", "appengine"])
def test_stores_without_append_write_sent_counts_in_batches(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without append a send is gets + cas; its ``sent`` count is held in the process and
    written at most every SENT_FLUSH_SECONDS in one call (not a third call per send), by
    the send that finds it due, by stats(), and at exit."""
    accounting = importlib.import_module("gaesignals.accounting")
    clock = [500.0]
    monkeypatch.setattr(accounting, "_monotonic", lambda: clock[0])
    counting = CountingStore(store)
    gaesignals.configure(store=counting)
    for i in range(5):
        send("batched", i)
    send_multi([("batched", 5), ("other", 0)])
    assert "incr_many" not in counting.calls
    with store.connection() as conn:  # nothing written yet
        assert conn.gets_many([signal_keys("batched", "").counter("sent")]) == {}
    clock[0] += accounting.SENT_FLUSH_SECONDS
    send("batched", 6)  # due: this send writes them all, in one call
    assert counting.calls["incr_many"] == 1
    send("batched", 7)
    assert stats(["batched", "other"]) == {
        "batched": {**ZERO, "sent": 8},
        "other": {**ZERO, "sent": 1},
    }
    send("batched", 8)
    accounting._flush_at_exit()
    with store.connection() as conn:
        sent = signal_keys("batched", "").counter("sent")
        assert conn.gets_many([sent])[sent][0].strip() == b"9"


class _WithoutAppend:
    """A shared store (memcached) used the way App Engine is: sends by gets + cas, so their
    ``sent`` counts are held in the process."""

    supports_append = False
    shared = True
    sizes = None
    fast_send = None
    native = None

    def __init__(self, inner: Store) -> None:
        self.inner = inner
        self.max_value_size = inner.max_value_size

    def connection(self) -> Any:
        return self.inner.connection()


def test_a_forked_child_does_not_write_its_parents_held_sent_counts(
    request: pytest.FixtureRequest,
) -> None:
    """Held ``sent`` counts belong to the process that sent: a child forked meanwhile (a
    pre-forking server's worker) starts with none, or both would write them and lost
    detection would report losses that never happened."""
    import os

    inner, closable = make_store("memcached", request)
    store = _WithoutAppend(inner)
    gaesignals.configure(store=store)  # type: ignore[arg-type]
    send("forked", 1)  # held by this process (a gets + cas store)
    pid = os.fork()
    if pid == 0:  # the child: write whatever it holds, then leave without atexit handlers
        try:
            accounting = importlib.import_module("gaesignals.accounting")
            with store.connection() as conn:
                accounting.flush_sent(conn, store)
            code = 0 if not accounting._tallies.get(store) else 1
        except BaseException:
            code = 2
        os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert stats("forked")["forked"]["sent"] == 1
    closable.close()


class _Entered:
    """A connection context manager whose connection was already entered."""

    def __init__(self, outer: Any, conn: Any) -> None:
        self.outer = outer
        self.conn = conn

    def __enter__(self) -> Any:
        return self.conn

    def __exit__(self, *exc: object) -> None:
        self.outer.__exit__(None, None, None)


@pytest.mark.parametrize("reliable", [False, True], ids=["weak", "reliable"])
def test_counters_off(store: Store, reliable: bool) -> None:
    """With counters=False neither sends nor deliveries touch a counter: a weak delivery is
    one read and one reset, as without stats."""
    counting = CountingStore(store)
    gaesignals.configure(store=counting, counters=False)
    send("quiet", 1)
    assert deliver({"quiet": lambda d: None}, reliable=reliable) == 1
    send("quiet", 2)
    counting.calls.clear()
    assert deliver({"quiet": lambda d: None}, reliable=reliable) == 1
    assert "incr_many" not in counting.calls
    if not reliable:
        natively = {"take_many": 1}  # one atomic take, no compare-and-set
        generic = {"scan_many": 1, "cas_many": 1}
        assert dict(counting.calls) == (natively if store.native else generic)
    assert stats("quiet")["quiet"] == ZERO


def test_health_reports_a_working_store(store: Store) -> None:
    """health() is JSON-serialisable, ok, with the store's latency and each signal's backlog
    and counters."""
    send("h", 1)
    report = health(["h"])
    assert json.loads(json.dumps(report)) == report
    assert report["ok"] is True
    assert report["store"]["reachable"] is True and report["store"]["error"] is None
    assert report["store"]["latency_ms"] >= 0
    assert report["store"]["kind"] == type(store).__name__
    signal = report["signals"]["h"]
    assert signal["pending"] == 1 and signal["pending_bytes"] > 0 and signal["sent"] == 1
    assert signal["oldest_age"] is not None
    assert health()["signals"] == {}


def test_health_never_raises_on_a_down_store() -> None:
    """A store that cannot be reached makes health() report ok False with the error, also as
    its problem line; it does not raise."""
    gaesignals.configure(
        store=DownStore("memcached at 127.0.0.1:1 is unreachable", max_value_size=1000, shared=True)
    )
    report = health(["h"])
    assert report["ok"] is False
    assert report["store"]["reachable"] is False
    assert "unreachable" in report["store"]["error"]
    assert report["problems"] == [f"the store cannot be reached: {report['store']['error']}"]
    assert json.loads(json.dumps(report)) == report


def test_health_on_a_stopped_memcached() -> None:
    """health() against a memcached that is not running reports ok False, without raising."""
    from gaesignals.stores.memcached import MemcachedStore
    from gaesignals.testing import free_port

    store = MemcachedStore.from_url(f"memcached://127.0.0.1:{free_port()}?timeout=0.5")
    gaesignals.configure(store=store)
    report = health(["h"])
    assert report["ok"] is False and report["store"]["error"]


@pytest.mark.parametrize("reliable", [False, True], ids=["weak", "reliable"])
def test_counters_of_expired_and_failing_payloads(
    store: Store, monkeypatch: pytest.MonkeyPatch, reliable: bool
) -> None:
    """Payloads past the signal's ttl count as expired, not delivered; a raising handler's
    payload counts as failed (weak delivery corrects its optimistic count afterwards)."""
    gaesignals.declare("t", ttl=60, max_attempts=1)
    clock = [1_700_000_000.0]
    monkeypatch.setattr(frames, "clock", lambda: clock[0])
    send("t", "old")
    send("t", "old")
    clock[0] = time.time()
    send("t", "fresh")
    send("t", "boom")

    def handler(data: str) -> None:
        if data == "boom":
            raise ValueError(data)

    deliver({"t": handler}, reliable=reliable)
    counts = stats("t")["t"]
    assert (counts["sent"], counts["delivered"], counts["failed"], counts["expired"]) == (
        4,
        1,
        1,
        2,
    )
    assert counts["lost"] == 0


def test_app_engine_counts_held_at_exit_are_written(gaesignals_testbed: Any) -> None:
    """At interpreter exit the sent counts an App Engine process still holds are written
    while the SDK's thread pool still takes calls (it stops before atexit handlers run), so
    nothing is lost and no traceback is printed."""
    import subprocess
    import sys
    from pathlib import Path

    probe = Path(__file__).with_name("exit_probe.py")
    done = subprocess.run(
        [sys.executable, str(probe)], capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stderr
    assert "sent at exit: b'2'" in done.stdout
    assert "lost at exit" not in done.stderr and "Traceback" not in done.stderr
