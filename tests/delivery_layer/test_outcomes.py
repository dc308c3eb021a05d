"""Outcomes as events (:mod:`gaesignals.delivery.outcomes`): each payload's outcome, reported
once by the delivery that decided it, reaches the store counters, the OpenTelemetry counters
and the logs alike, for weak and reliable delivery."""

from __future__ import annotations

import logging
from typing import Any

import pytest

import gaesignals
from gaesignals import Reject, deliver, frames, send, stats
from gaesignals.config import get_settings
from gaesignals.delivery.outcomes import Outcome, Outcomes
from gaesignals.keys import signal_keys
from gaesignals.registration import SignalSpec
from gaesignals.stores import counter_value
from gaesignals.stores.memory import MemoryStore
from gaesignals.testing import CountingStore

from .support import Metrics

#: The outcomes a delivery reports, each a store counter and a metric of the same name.
REPORTED = [outcome.value for outcome in Outcome]


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """The senders' and deliverers' clock (seconds), moved by the test."""
    now = [1_800_000_000.0]
    monkeypatch.setattr(frames, "clock", lambda: now[0])
    return now


def _fail(data: object) -> None:
    raise ValueError("no")


def _reject(data: object) -> None:
    raise Reject("never")


def _noop(data: object) -> None:
    pass


def _plant_damaged(store: MemoryStore, name: str) -> None:
    """One frame of ``name`` whose CRC no longer holds: unreadable, so dropped."""
    key = signal_keys(name, get_settings().namespace).queue
    damaged = frames.encode(b"\x80\x05K\x01.", key.encode())
    store.set_raw(key, damaged[:-1] + bytes([damaged[-1] ^ 1]))


def _counters(names: list[str]) -> dict[str, dict[str, int]]:
    """Each signal's non-zero outcome counters in the store."""
    read = stats(names)
    return {
        name: {outcome: read[name][outcome] for outcome in REPORTED if read[name][outcome]}
        for name in names
    }


def _measured(metrics: Metrics, names: list[str]) -> dict[str, dict[str, int]]:
    """Each signal's non-zero outcome metrics."""
    found: dict[str, dict[str, int]] = {name: {} for name in names}
    for outcome in REPORTED:
        for name, value in metrics.of(outcome).items():
            if value:
                found[name][outcome] = value
    return found


def _scenario(store: MemoryStore, clock: list[float], reliable: bool) -> list[str]:
    """Deliver one signal per outcome: delivered, failed, expired, dropped, and (reliable)
    dead-lettered; returns their names."""
    gaesignals.declare("fine", reliable=reliable)
    gaesignals.declare("broken", reliable=reliable, max_attempts=3)
    gaesignals.declare("stale", reliable=reliable, ttl=10)
    gaesignals.declare("garbled", reliable=reliable)
    send("fine", 1)
    send("fine", 2)
    send("broken", 1)
    send("stale", 1)
    names = ["fine", "broken", "stale", "garbled"]
    handlers: dict[str, Any] = {"fine": _noop, "broken": _fail, "stale": _noop, "garbled": _noop}
    if reliable:
        gaesignals.declare("refused", reliable=True)
        send("refused", 1)
        names.append("refused")
        handlers["refused"] = _reject
    clock[0] += 60
    _plant_damaged(store, "garbled")
    deliver(handlers)
    return names


EXPECTED = {
    "fine": {"delivered": 2},
    "broken": {"failed": 1},
    "stale": {"expired": 1},
    "garbled": {"dropped": 1},
    "refused": {"failed": 1, "dead_lettered": 1},
}


@pytest.mark.parametrize("reliable", [False, True], ids=["weak", "reliable"])
def test_each_outcome_reaches_the_counters_and_the_metrics_once(
    memory: MemoryStore, metrics: Metrics, clock: list[float], reliable: bool
) -> None:
    """Every outcome a delivery decides is counted once in the store and once in the metrics,
    the same numbers in both."""
    names = _scenario(memory, clock, reliable)
    expected = {name: EXPECTED[name] for name in names}
    if reliable:  # the broken payload fails its first of three attempts: it is tried again
        expected["broken"] = {"failed": 1, "retried": 1}
    assert _counters(names) == expected
    assert _measured(metrics, names) == expected


@pytest.mark.parametrize("reliable", [False, True], ids=["weak", "reliable"])
def test_expired_payloads_are_logged_once(
    memory: MemoryStore,
    clock: list[float],
    caplog: pytest.LogCaptureFixture,
    reliable: bool,
) -> None:
    """A payload past its ttl is logged once, with the signal's ttl, by what reported it."""
    with caplog.at_level(logging.WARNING, logger="gaesignals"):
        _scenario(memory, clock, reliable)
    logged = [r for r in caplog.records if "older than its ttl" in r.getMessage()]
    assert [r.getMessage() for r in logged] == [
        "dropped 1 payload(s) of signal 'stale' older than its ttl of 10 s"
    ]


def test_a_dead_lettered_payload_is_logged_once_with_its_attempts(
    memory: MemoryStore, clock: list[float], caplog: pytest.LogCaptureFixture
) -> None:
    """Moving a payload to its dead letters is logged once, saying how often it was tried."""
    with caplog.at_level(logging.ERROR, logger="gaesignals"):
        _scenario(memory, clock, reliable=True)
    logged = [r.getMessage() for r in caplog.records if "dead letters" in r.getMessage()]
    assert logged == ["a payload of signal 'refused' failed 1 times and moved to its dead letters"]


def test_accounted_counts_every_payload_that_left_a_queue(
    memory: MemoryStore, clock: list[float]
) -> None:
    """Besides outcomes, ``accounted`` counts what left the queues: the failed reliable
    payload stays queued, so it is not among them."""
    names = _scenario(memory, clock, reliable=True)
    assert {name: _accounted(name) for name in names} == {
        "fine": 2,
        "broken": 0,
        "stale": 1,
        "garbled": 1,
        "refused": 1,
    }


def _accounted(name: str) -> int:
    """The ``accounted`` counter of ``name`` as stored (0 when missing)."""
    key = signal_keys(name, get_settings().namespace).counter("accounted")
    with get_settings().store.connection() as conn:
        item = conn.gets_many([key]).get(key)
    return 0 if item is None else counter_value(item[0]) or 0


# -- the recorder on its own ------------------------------------------------------------------


def _recorder(*, counting: bool = True, counted_by_take: bool = False) -> Outcomes:
    keys = {"orders": signal_keys("orders", get_settings().namespace)}
    return Outcomes(
        keys,
        {"orders": SignalSpec("orders", ttl=5)},
        counting=counting,
        counted_by_take=counted_by_take,
    )


def _counter(name: str) -> str:
    return signal_keys("orders", get_settings().namespace).counter(name)


def test_a_report_becomes_one_counter_change(memory: MemoryStore) -> None:
    """Each report adds to its outcome's counter; nothing is written until :meth:`write`,
    then everything in one call."""
    outcomes = _recorder()
    outcomes.report("orders", Outcome.DELIVERED, 3)
    outcomes.report("orders", Outcome.DEAD_LETTERED, attempts=4)
    outcomes.leaving("orders", 4)
    assert stats("orders")["orders"]["delivered"] == 0
    assert dict(outcomes.changes) == {
        _counter("delivered"): 3,
        _counter("dead_lettered"): 1,
        _counter("accounted"): 4,
    }
    with memory.connection() as conn:
        outcomes.write(conn)
    assert stats("orders")["orders"]["delivered"] == 3
    assert not outcomes.changes


def test_after_a_weak_take_a_failure_moves_a_payload_from_delivered_to_failed() -> None:
    """The weak take counted what it took as delivered, expired or dropped: only a failure
    changes a counter, and the others reach metrics and logs alone."""
    outcomes = _recorder(counted_by_take=True)
    outcomes.report("orders", Outcome.DELIVERED, 5)
    outcomes.report("orders", Outcome.EXPIRED, 1)
    outcomes.report("orders", Outcome.FAILED, 2)
    assert dict(outcomes.changes) == {_counter("delivered"): -2, _counter("failed"): 2}


def test_the_queue_layers_changes_are_written_with_the_outcomes() -> None:
    """A take's corrections are adopted into the same write; none when not counting."""
    outcomes = _recorder()
    outcomes.adopt({_counter("accounted"): -1})
    outcomes.report("orders", Outcome.DROPPED)
    assert dict(outcomes.changes) == {_counter("accounted"): -1, _counter("dropped"): 1}
    silent = _recorder(counting=False)
    silent.adopt({_counter("accounted"): -1})
    silent.report("orders", Outcome.DROPPED)
    silent.leaving("orders", 1)
    assert not silent.changes


def test_nothing_is_reported_for_no_payloads(metrics: Metrics) -> None:
    """A report of zero payloads changes no counter and no metric."""
    outcomes = _recorder()
    outcomes.report("orders", Outcome.FAILED, 0)
    assert not outcomes.changes
    assert metrics.of("failed") == {}


def test_forgotten_changes_are_never_written(memory: MemoryStore) -> None:
    """After :meth:`forget` (the store went away) a write writes nothing."""
    outcomes = _recorder()
    outcomes.report("orders", Outcome.DELIVERED)
    outcomes.forget()
    with memory.connection() as conn:
        outcomes.write(conn)
    assert stats("orders")["orders"]["delivered"] == 0


def _weak_round_trips(failing: int) -> int:
    """The calls a weak delivery of 10 signals, one payload each, makes when the handlers of
    the first ``failing`` of them raise."""
    counting = CountingStore(MemoryStore())
    gaesignals.configure(store=counting)
    names = [f"s{i}" for i in range(10)]
    handlers = {name: _fail if i < failing else _noop for i, name in enumerate(names)}
    deliver(handlers)  # the first delivery checks for lost payloads
    for name in names:
        send(name, 1)
    counting.calls.clear()
    deliver(handlers)
    return counting.total


def test_a_weak_deliverys_failures_are_written_in_one_call(memory: MemoryStore) -> None:
    """What failures change in the counters is written in one call after the handlers ran,
    however many signals failed; a delivery without failures has nothing left to write."""
    succeeding = _weak_round_trips(0)
    assert succeeding > 0
    assert _weak_round_trips(1) == _weak_round_trips(10) == succeeding + 1
    read = stats(["s0", "s9"])
    assert [(read[name]["failed"], read[name]["delivered"]) for name in read] == [(1, 0)] * 2
