"""Reliable delivery's locks judged by their signal's declared lease, on every store.

A cache writer can plant a lock in our own format, claiming the longest lease and kept with
any expiry. It must cost no more than the signal's declared lease allows a lock to live (plus
the clock-skew allowance), in a fresh process too (the command line, a cron run), and be
reported by ``health()`` meanwhile; a live holder renewing within its lease is never taken
over. Time is a clock seam here (the lease module's monotonic clock and the library's wall
clock, moved together): nothing sleeps.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import gaesignals
from gaesignals import declare, deliver, frames, health, send
from gaesignals.config import get_settings
from gaesignals.keys import signal_keys
from gaesignals.queue import lease
from gaesignals.queue.lease import CLOCK_SKEW, MAX_LEASE, LockState, lock_expiry
from gaesignals.registration import DEFAULT_LEASE

from ..cli_support import Process, app, got, memcached_url, process, run  # noqa: F401 (fixtures)
from ..conftest import STORES, VALKEY_STORES, RawAccess

#: The lease the signals here declare, in seconds.
LEASE = 5
#: The longest a lock of theirs may be honoured after it was written, by its timestamp.
HONOURED = lock_expiry(LEASE) + CLOCK_SKEW


@pytest.fixture(params=STORES + VALKEY_STORES)
def store_kind(request: pytest.FixtureRequest) -> str:
    """Every store, Valkey's too: the ``raw`` fixture is built for this kind."""
    kind: str = request.param
    return kind


class _Clock:
    """Both clocks a lock is judged by, moved by hand (monotonic and wall read the same)."""

    def __init__(self) -> None:
        self.now = float(int(frames.clock()))

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> _Clock:
    fake = _Clock()
    monkeypatch.setattr(lease, "_clock", fake)
    monkeypatch.setattr(frames, "clock", fake)
    monkeypatch.setattr(lease, "_sightings", {})
    return fake


def planted(lease_seconds: int, written: float, owner: bytes = b"ef" * 16) -> bytes:
    """A lock value in our own format, as a cache writer could write it."""
    return b"%s:%d:%d:7" % (owner, lease_seconds, int(written))


def fresh_deliver(mapping: dict[str, Any]) -> int:
    """A reliable delivery by a process that never saw the lock before (a cron run, the CLI)."""
    lease._sightings.clear()
    return deliver(mapping, reliable=True)


def test_a_planted_lock_claiming_fourteen_days_costs_only_the_declared_lease(
    raw: RawAccess, clock: _Clock
) -> None:
    """A lock claiming the 14-day lease, kept with no expiry, holds a signal declared with a
    5 s lease only until a lock of that lease would have expired (plus the skew allowance);
    then a fresh process delivers, and everything is delivered once."""
    declare("planted", reliable=True, lease=LEASE)
    send("planted", 1)
    lock = signal_keys("planted", "").lock
    raw.set(lock, planted(MAX_LEASE, clock.now))
    got: list[Any] = []
    written = clock.now
    while clock.now <= written + HONOURED:
        assert fresh_deliver({"planted": got.append}) == 0
        clock.now += 10
    clock.now = written + HONOURED + 1
    assert fresh_deliver({"planted": got.append}) == 1
    assert got == [1]
    assert raw.get(lock) == b""  # released by its new holder
    assert fresh_deliver({"planted": got.append}) == 0
    assert got == [1]


def test_health_reports_a_planted_lock_until_it_is_taken_over(
    raw: RawAccess, clock: _Clock
) -> None:
    """While a planted lock claiming more than its signal's lease holds the signal, ``health()``
    says so: ``ok`` False and a problem line naming the signal; once it is past the declared
    lease it reads as foreign, and after the takeover all is well again."""
    declare("watched", reliable=True, lease=LEASE)
    send("watched", 1)
    raw.set(signal_keys("watched", "").lock, planted(MAX_LEASE, clock.now))
    report = health(["watched"])
    assert report["ok"] is False
    assert report["signals"]["watched"]["lock"] == "overlong"
    assert len(report["problems"]) == 1
    assert "'watched'" in report["problems"][0]
    assert f"{LEASE} s" in report["problems"][0]
    clock.now += HONOURED + 1
    lease._sightings.clear()
    report = health(["watched"])
    assert report["ok"] is False
    assert report["signals"]["watched"]["lock"] == "foreign"
    assert "takes it over" in report["problems"][0]
    assert fresh_deliver({"watched": lambda data: None}) == 1
    report = health(["watched"])
    assert report["ok"] is True
    assert report["problems"] == []
    assert report["signals"]["watched"]["lock"] == "free"


@pytest.mark.parametrize("claimed", [1, LEASE, MAX_LEASE], ids=lambda c: f"lease{c}")
def test_a_fresh_process_judges_a_planted_lock_by_its_timestamp(
    raw: RawAccess, clock: _Clock, claimed: int
) -> None:
    """Whatever lease a planted lock claims, a process that never saw it takes it over once its
    timestamp is older than the shorter of that lease and the declared one lets a lock live,
    plus the skew allowance, and not a second earlier."""
    declare("dated", reliable=True, lease=LEASE)
    send("dated", 1)
    raw.set(signal_keys("dated", "").lock, planted(claimed, clock.now))
    written = clock.now
    clock.now = written + lock_expiry(min(claimed, LEASE)) + CLOCK_SKEW
    assert fresh_deliver({"dated": lambda data: None}) == 0
    clock.now += 1
    assert fresh_deliver({"dated": lambda data: None}) == 1


def test_a_lock_dated_ahead_is_honoured_only_within_the_skew_allowance(
    raw: RawAccess, clock: _Clock
) -> None:
    """A lock dated up to the skew allowance ahead is honoured as if written then (a writer's
    clock may run that far ahead); one dated further ahead is not a lock of ours."""
    declare("ahead", reliable=True, lease=LEASE)
    send("ahead", 1)
    lock = signal_keys("ahead", "").lock
    raw.set(lock, planted(MAX_LEASE, clock.now + CLOCK_SKEW + 1))
    assert health(["ahead"])["signals"]["ahead"]["lock"] == "foreign"
    raw.set(lock, planted(MAX_LEASE, clock.now + CLOCK_SKEW))
    written = clock.now + CLOCK_SKEW
    clock.now = written + HONOURED
    assert fresh_deliver({"ahead": lambda data: None}) == 0
    clock.now += 1
    assert fresh_deliver({"ahead": lambda data: None}) == 1


def test_a_long_lived_process_needs_no_skew_allowance(raw: RawAccess, clock: _Clock) -> None:
    """A process that has seen a planted lock unchanged for longer than the declared lease lets
    a lock live takes it over by its own clock, before the skew allowance runs out."""
    declare("watched", reliable=True, lease=LEASE)
    send("watched", 1)
    raw.set(signal_keys("watched", "").lock, planted(MAX_LEASE, clock.now + CLOCK_SKEW))
    got: list[Any] = []
    assert deliver({"watched": got.append}, reliable=True) == 0
    clock.now += lock_expiry(LEASE) + 1
    assert deliver({"watched": got.append}, reliable=True) == 0
    clock.now += 1
    assert deliver({"watched": got.append}, reliable=True) == 1
    assert got == [1]


def test_a_fresh_command_line_process_takes_over_a_planted_lock(
    raw: RawAccess,
    clock: _Clock,
    app: Path,  # noqa: F811
    capsys: pytest.CaptureFixture[str],
) -> None:
    """``gaesignals deliver --reliable`` run once, as cron would, delivers nothing while a
    planted 14-day lock is within the signal's lease, and delivers once it is past it."""
    gaesignals.configure(store=raw.store)
    send("a", "waiting")
    raw.set(signal_keys("a", "").lock, planted(MAX_LEASE, clock.now))
    lease._sightings.clear()
    assert run(capsys, "deliver", "cliapp:pairs", "--reliable", "--lease", "5")[0] == 0
    assert got() == []
    clock.now += lock_expiry(gaesignals.registry.spec("a").lease) + CLOCK_SKEW + 1
    lease._sightings.clear()
    code, out, _ = run(capsys, "deliver", "cliapp:pairs", "--reliable", "--lease", "5")
    assert code == 0
    assert "delivered 1" in out
    assert got() == ["waiting"]


def test_a_new_command_line_process_takes_over_an_old_planted_lock(
    app: Path,  # noqa: F811
    process: Callable[..., Process],  # noqa: F811
    memcached_url: str,  # noqa: F811
) -> None:
    """A real ``python -m gaesignals deliver --reliable`` process, with no clock seam, leaves a
    freshly planted 14-day lock (with a 28-day expiry) alone, and takes over one planted
    longer ago than the signal's lease allows, the way a cron run would."""
    send("a", "waiting")
    lock = signal_keys("a", "").lock
    store = get_settings().store
    too_old = time.time() - lock_expiry(DEFAULT_LEASE) - CLOCK_SKEW - 2
    for written, delivered in ((time.time(), 0), (too_old, 1)):
        with store.connection() as conn:
            conn.set_many({lock: planted(MAX_LEASE, written)}, expire=lock_expiry(MAX_LEASE))
        cron = process("--store", memcached_url, "deliver", "cliapp:pairs", "--reliable")
        assert cron.finish() == 0, cron.lines
        assert f"delivered {delivered} payload(s)" in "\n".join(cron.lines["out"]), cron.lines


def test_a_live_holder_renewing_within_its_lease_is_never_taken_over(
    raw: RawAccess, clock: _Clock
) -> None:
    """A deliverer whose handlers each take most of the lease renews its lock as it goes, so a
    second deliverer (a fresh process trying during every handler) takes nothing, long after
    the first lock's timestamp would have expired: every payload is handled exactly once."""
    declare("busy", reliable=True, lease=LEASE)
    for i in range(30):
        send("busy", i)
    first: list[Any] = []
    second: list[Any] = []
    tries: list[int] = []

    def slow(data: Any) -> None:
        first.append(data)
        clock.now += LEASE - 1  # shorter than the lease, longer than half of it
        tries.append(fresh_deliver({"busy": second.append}))

    started = clock.now
    assert deliver({"busy": slow}, reliable=True) == 30
    assert clock.now - started > HONOURED  # long past what its first write alone allowed
    assert first == list(range(30))
    assert second == []
    assert tries == [0] * 30


def test_a_holder_with_a_longer_lease_than_declared_is_honoured_for_its_own(
    raw: RawAccess, clock: _Clock
) -> None:
    """A deliverer told a longer lease than the signal declares honours a lock of that lease,
    not only the declared one: the longer of the two is what it allows."""
    declare("long", reliable=True, lease=LEASE)
    send("long", 1)
    raw.set(signal_keys("long", "").lock, planted(60, clock.now))
    clock.now += lock_expiry(LEASE) + CLOCK_SKEW + 1
    lease._sightings.clear()
    assert deliver({"long": lambda data: None}, reliable=True, lease=60) == 0
    assert fresh_deliver({"long": lambda data: None}) == 1


GARBAGE = {
    "word": b"x",
    "binary": b"\xff" * 64,
    "bare-token": b"ab" * 16,
    "three-fields": b"ab" * 16 + b":30:1",
    "lease-past-max": b"ab" * 16 + b":%d:1:1" % (MAX_LEASE + 1),
    "uppercase": b"AB" * 16 + b":30:1:1",
}


@pytest.mark.parametrize("value", list(GARBAGE.values()), ids=list(GARBAGE))
def test_garbage_in_the_lock_key_is_taken_over_at_once(
    raw: RawAccess, clock: _Clock, value: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    """A lock value not in our format is foreign: ``health()`` says so, and the next reliable
    delivery takes it over at once with a warning, as before locks carried a timestamp."""
    declare("junk", reliable=True, lease=LEASE)
    send("junk", 1)
    raw.set(signal_keys("junk", "").lock, value)
    assert health(["junk"])["signals"]["junk"]["lock"] == "foreign"
    with caplog.at_level(logging.WARNING, logger="gaesignals"):
        assert fresh_deliver({"junk": lambda data: None}) == 1
    assert any("taken over" in r.getMessage() for r in caplog.records)


def test_a_lock_reads_as_its_state(clock: _Clock) -> None:
    """``lock_state`` names each case: free, held, overlong (claims more than declared),
    foreign (not ours, or too old by its timestamp)."""
    state = lease.lock_state
    assert state("k", None, LEASE) is LockState.FREE
    assert state("k", b"", LEASE) is LockState.FREE
    assert state("k", planted(LEASE, clock.now), LEASE) is LockState.HELD
    assert state("k", planted(LEASE + 1, clock.now), LEASE) is LockState.OVERLONG
    assert state("k", planted(LEASE, clock.now - HONOURED - 1), LEASE) is LockState.FOREIGN
    assert state("k", b"garbage", LEASE) is LockState.FOREIGN
    assert lease.LockValue.parse(lease.lock_value(b"01" * 16, LEASE)) == lease.LockValue(
        b"01" * 16, LEASE, int(clock.now)
    )
