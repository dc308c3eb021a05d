"""Reliable delivery: retries, dead letters, locks and leases, resuming after a crash, on
every store."""

from __future__ import annotations

from typing import Any

import pytest

import gaesignals
from gaesignals import deliver, send
from gaesignals.config import get_settings
from gaesignals.keys import signal_keys
from gaesignals.queue.lease import lock_value

from ..conftest import RawAccess
from .support import collect


def test_reliable_keeps_failed_payload_and_order(store: Any) -> None:
    """Reliable: a raising handler leaves its payload (and the ones after it) for next time."""
    got: list[Any] = []
    fail = {1}

    def handler(data: Any) -> None:
        if data in fail:
            raise RuntimeError("not yet")
        got.append(data)

    for i in range(3):
        send("important", i)
    assert deliver({"important": handler}, reliable=True, retry_delay=0) == 1
    assert got == [0]
    fail.clear()
    assert deliver({"important": handler}, reliable=True, retry_delay=0) == 2
    assert got == [0, 1, 2]
    assert deliver({"important": handler}, reliable=True, retry_delay=0) == 0


def test_reliable_dead_letters_after_max_attempts(store: Any) -> None:
    """After max_attempts failures a payload moves to the dead letters; the rest go on, and
    the dead letters can be listed, requeued and purged."""
    got: list[Any] = []

    def handler(data: Any) -> None:
        if data == "poison":
            raise ValueError("cannot handle")
        got.append(data)

    send("jobs", "poison")
    send("jobs", "fine")
    for _ in range(2):
        assert deliver({"jobs": handler}, reliable=True, retry_delay=0, max_attempts=3) == 0
    assert gaesignals.dead_letters("jobs") == []
    assert deliver({"jobs": handler}, reliable=True, retry_delay=0, max_attempts=3) == 1
    assert got == ["fine"]
    assert gaesignals.dead_letters("jobs") == ["poison"]
    assert gaesignals.requeue_dead_letters("jobs") == 1
    assert gaesignals.dead_letters("jobs") == []
    got_again, ok = collect()
    assert deliver({"jobs": ok}, reliable=True, retry_delay=0) == 1
    assert got_again == ["poison"]
    send("jobs", "poison")
    for _ in range(3):
        deliver({"jobs": handler}, reliable=True, retry_delay=0, max_attempts=3)
    assert gaesignals.purge_dead_letters("jobs") == 1
    assert gaesignals.dead_letters("jobs") == []


def test_reliable_skips_a_locked_signal(store: Any, raw: RawAccess) -> None:
    """A signal whose lock another deliverer holds is skipped, not waited for."""
    got, handler = collect()
    send("busy", 1)
    keys = signal_keys("busy", get_settings().namespace)
    raw.set(keys.lock, lock_value(b"ab" * 16, 30))  # a live lock of another deliverer
    assert deliver({"busy": handler}, reliable=True) == 0
    assert got == []
    raw.set(keys.lock, b"")  # released
    assert deliver({"busy": handler}, reliable=True) == 1
    assert got == [1]


def test_reliable_release_leaves_lock_reusable(store: Any) -> None:
    """Repeated reliable deliveries take and release the lock each time."""
    got, handler = collect()
    for i in range(3):
        send("again", i)
        assert deliver({"again": handler}, reliable=True, lease=5) == 1
    assert got == [0, 1, 2]


def test_lease_expiry_hands_a_crashed_deliverers_signal_over() -> None:
    """A lock left by a deliverer that died expires after its lease; the next reliable
    delivery then takes the payloads it never acknowledged."""
    from gaesignals.stores.memory import MemoryStore

    now = [1000.0]
    store = MemoryStore(clock=lambda: now[0])
    gaesignals.configure(store=store)
    send("crash", "survives")
    keys = signal_keys("crash", "")
    with store.connection() as conn:
        assert conn.add_many(
            {keys.lock: lock_value(b"cd" * 16, 30)}, expire=30
        )  # what a crash leaves
    got, handler = collect()
    assert deliver({"crash": handler}, reliable=True, lease=30) == 0
    now[0] += 31
    assert deliver({"crash": handler}, reliable=True, lease=30) == 1
    assert got == ["survives"]


def test_release_never_frees_another_owners_lock() -> None:
    """If our lease ran out and another deliverer took the lock, our release leaves it."""
    from gaesignals.queue.lease import acquire, release
    from gaesignals.stores.memory import MemoryStore

    now = [0.0]
    store = MemoryStore(clock=lambda: now[0])
    with store.connection() as conn:
        assert acquire(conn, ["L"], b"first", 10) == {"L"}
        now[0] += 22  # locks live 2 * lease + 1 seconds
        assert acquire(conn, ["L"], b"second", 10) == {"L"}
        release(conn, ["L"], b"first", 10)
        assert conn.gets_many(["L"])["L"][0].startswith(b"second:")
        release(conn, ["L"], b"second", 10)
        assert conn.gets_many(["L"])["L"][0] == b""
        assert acquire(conn, ["L"], b"third", 10) == {"L"}


class Crash(BaseException):
    """Stands in for the process dying inside a handler (nothing catches it)."""


def test_interrupted_reliable_delivery_resumes_after_the_last_finished_payload(
    store: Any,
) -> None:
    """A reliable deliverer that dies mid-batch leaves a progress cursor: the next delivery
    repeats only the payload that was running, not the ones already finished."""
    seen: list[Any] = []

    def dies_on_two(data: Any) -> None:
        seen.append(data)
        if data == 2:
            raise Crash

    for i in range(5):
        send("batch", i)
    with pytest.raises(Crash):
        deliver({"batch": dies_on_two}, reliable=True)
    got, handler = collect()
    assert deliver({"batch": handler}, reliable=True) == 3
    assert seen == [0, 1, 2] and got == [2, 3, 4]
    assert deliver({"batch": handler}, reliable=True) == 0


def test_stale_cursor_never_skips_new_payloads(store: Any, raw: RawAccess) -> None:
    """A cursor left behind after the batch it described was acknowledged matches nothing in
    the key's new contents (frame ids are the send second plus random bits), so identical new
    payloads are delivered."""
    for _ in range(3):
        send("same", None)
    keys = signal_keys("same", get_settings().namespace)
    value = raw.get(keys.queue)
    assert value is not None
    from gaesignals import frames

    found, _ = frames.parse(value, keys.queue.encode())
    got, handler = collect()
    assert deliver({"same": handler}, reliable=True) == 3
    raw.set(keys.cursor, b"%d:%s" % (found[1].end, found[1].ident.hex().encode()))
    for _ in range(3):
        send("same", None)
    assert deliver({"same": handler}, reliable=True) == 3
    assert got == [None] * 6


def test_lease_is_renewed_while_a_long_batch_runs(monkeypatch: pytest.MonkeyPatch) -> None:
    """Between payloads, a holder past half its lease renews it on the store's clock, so a
    batch longer than the lease is never taken over by a second deliverer."""
    from gaesignals.queue import lease
    from gaesignals.stores.memory import MemoryStore

    now = [0.0]
    monkeypatch.setattr(lease.time, "monotonic", lambda: now[0])
    store = MemoryStore(clock=lambda: now[0])
    gaesignals.configure(store=store)
    for i in range(5):
        send("long", i)
    intruder: list[int] = []

    def slow(data: Any) -> None:
        now[0] += 12  # each payload takes 12 s of a 30 s lease
        intruder.append(deliver({"long": lambda d: None}, reliable=True, lease=30))

    assert deliver({"long": slow}, reliable=True, lease=30) == 5
    assert intruder == [0] * 5


class _Killed(BaseException):
    """Stands for a handler that kills its process: it escapes the delivery like a SIGKILL
    ends it, with nothing after it run, acknowledged or counted."""


@pytest.mark.parametrize("max_attempts", [1, 3])
def test_a_payload_that_kills_its_deliverer_reaches_the_dead_letters(
    store: Any, max_attempts: int
) -> None:
    """A reliable payload whose handler kills the process counts an attempt each time (the
    cursor names it before it runs), so after max_attempts deliveries that never returned it
    goes to the dead letters without running again, and the payloads behind it are delivered."""
    send("deadly", "poison")
    send("deadly", "fine")
    got: list[str] = []
    runs: list[str] = []

    def handler(data: str) -> None:
        runs.append(data)
        if data == "poison":
            raise _Killed
        got.append(data)

    for _ in range(max_attempts):
        with pytest.raises(_Killed):
            deliver({"deadly": handler}, reliable=True, max_attempts=max_attempts)
    assert deliver({"deadly": handler}, reliable=True, max_attempts=max_attempts) == 1
    assert runs == ["poison"] * max_attempts + ["fine"]
    assert got == ["fine"]
    assert gaesignals.dead_letters("deadly") == ["poison"]
    assert deliver({"deadly": handler}, reliable=True) == 0
