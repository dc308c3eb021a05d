"""Retries with backoff, no head-of-line blocking, ``Retry`` and ``Reject``, and dead letters
that keep why, on every store. Time comes from the library's one clock seam, set by the tests."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

import gaesignals
from gaesignals import (
    Reject,
    Retry,
    SignalMapping,
    dead_letter_details,
    dead_letters,
    deliver,
    frames,
    pending,
    requeue_dead_letters,
    send,
)
from gaesignals.registration import RetryPolicy
from gaesignals.stores import Store

from ..conftest import RawAccess

START = 1_800_000_000.0


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[float]]:
    """The library's clock (frame ids, what is due), set by the test."""
    now = [START]
    monkeypatch.setattr(frames, "clock", lambda: now[0])
    yield now


def failing(times: int, into: list[Any], error: Exception | None = None) -> Any:
    """A handler that fails on payload "bad" its first ``times`` calls, noting every call."""
    calls = {"bad": 0}

    def handler(data: Any) -> None:
        if data == "bad" and calls["bad"] < times:
            calls["bad"] += 1
            into.append(("failed", data))
            raise error or RuntimeError("not yet")
        into.append(data)

    return handler


def test_a_failing_payload_does_not_hold_back_the_ones_behind_it(
    store: Store, raw: RawAccess, clock: list[float]
) -> None:
    """A payload failing twice with ``retry_delay=1`` waits 1 s, then 2 s (backoff 2, jitter
    lengthening up to 10 %), while the 100 payloads sent after it are all delivered by the
    first delivery, in order."""
    gaesignals.declare("jobs", reliable=True, retry_delay=1)
    send("jobs", "bad")
    for n in range(100):
        send("jobs", n)
    got: list[Any] = []
    handler = failing(2, got)
    assert deliver({"jobs": handler}) == 100
    assert got == [("failed", "bad"), *range(100)]
    assert pending("jobs")["jobs"].waiting == 1
    clock[0] += 0.999
    assert deliver({"jobs": handler}) == 0  # not before 1 s
    clock[0] += 0.101
    assert deliver({"jobs": handler}) == 0  # failed again: next wait 2 s
    assert got[-1] == ("failed", "bad")
    clock[0] += 1.999
    assert deliver({"jobs": handler}) == 0
    clock[0] += 0.201
    assert deliver({"jobs": handler}) == 1
    assert got[-1] == "bad" and pending("jobs")["jobs"].count == 0


def test_backoff_is_capped_and_jitter_only_lengthens() -> None:
    """``retry_delay * retry_backoff ** (attempt - 1)``, at most ``retry_max_delay``, each wait
    lengthened by 0-10 %; ``retry_delay=0`` waits nothing."""
    policy = RetryPolicy(2, 3, 10)
    for attempt, base in ((1, 2), (2, 6), (3, 10), (9, 10)):
        waits = [policy.wait(attempt) for _ in range(200)]
        assert base <= min(waits) and max(waits) <= base * 1.1
    assert RetryPolicy(0).wait(3) == 0
    for bad in ({"delay": -1}, {"backoff": 0.5}, {"max_delay": float("inf")}):
        with pytest.raises(ValueError):
            RetryPolicy(**bad)
    with pytest.raises(ValueError):
        gaesignals.declare("x", retry_delay=-1)
    with pytest.raises(ValueError):
        SignalMapping({"x": print}, retry_backoff=0)
    with pytest.raises(ValueError):
        deliver({"x": print}, reliable=True, retry_max_delay=-2)


def test_retry_with_a_delay_waits_that_long(
    store: Store, raw: RawAccess, clock: list[float]
) -> None:
    """``raise Retry(delay=5)`` retries after 5 s (not the backoff), counting an attempt."""
    got: list[Any] = []
    handler = failing(1, got, Retry(delay=5))
    send("steer", "bad")
    assert deliver({"steer": handler}, reliable=True) == 0
    clock[0] += 4.9
    assert deliver({"steer": handler}, reliable=True) == 0
    clock[0] += 0.1
    assert deliver({"steer": handler}, reliable=True) == 1
    assert got == [("failed", "bad"), "bad"]


def test_reject_dead_letters_at_once_and_keeps_why(
    store: Store, raw: RawAccess, clock: list[float]
) -> None:
    """``raise Reject(reason)`` sends the payload straight to the dead letters with the reason
    and one attempt; a requeue keeps the reason and resets the attempts."""
    send("steer", "bad")
    send("steer", "good")
    got: list[Any] = []
    assert deliver({"steer": failing(9, got, Reject("malformed order"))}, reliable=True) == 1
    (letter,) = dead_letter_details("steer")
    assert (letter.data, letter.attempts) == ("bad", 1)
    assert letter.error is not None and letter.error.startswith("Reject: malformed order")
    assert requeue_dead_letters("steer") == 1
    value = raw.get(gaesignals.keys.signal_keys("steer", "").queue) or b""
    (frame,) = frames.parse(value, gaesignals.keys.signal_keys("steer", "").queue.encode())[0]
    assert frame.attempts == 0 and b"malformed order" in frame.meta


def test_a_dead_letter_says_what_failed_it_last(
    store: Store, raw: RawAccess, clock: list[float]
) -> None:
    """After ``max_attempts`` failures the dead letter holds the last error's type, message
    and innermost traceback line, and its attempts."""
    send("dies", "bad")
    got: list[Any] = []
    handler = failing(3, got, KeyError("order 7"))
    for _ in range(3):
        deliver({"dies": handler}, reliable=True, max_attempts=3, retry_delay=0.5)
        clock[0] += 5
    (letter,) = dead_letter_details("dies")
    assert letter.attempts == 3 and letter.sent_at == int(START)
    assert letter.error is not None and letter.error.startswith("KeyError: 'order 7' (")
    assert "test_retries.py:" in letter.error
    assert dead_letters("dies") == ["bad"]


def test_weak_delivery_logs_retry_and_reject_and_the_payload_is_gone(
    store: Store, raw: RawAccess, clock: list[float], caplog: pytest.LogCaptureFixture
) -> None:
    """In weak mode ``Retry`` and ``Reject`` are failures like any: logged, payload gone."""
    send("weak", "bad")
    send("weak", "bad")
    got: list[Any] = []
    assert deliver({"weak": failing(1, got, Retry(delay=1))}) == 1
    clock[0] += 2
    assert deliver({"weak": failing(1, got, Reject("no"))}) == 0
    assert "Retry" in caplog.text or "retry requested" in caplog.text
    assert pending("weak")["weak"].count == 0 and dead_letters("weak") == []


def test_retry_delay_zero_keeps_the_failed_payload_first(
    store: Store, raw: RawAccess, clock: list[float]
) -> None:
    """With ``retry_delay=0`` a failed payload stays at the head of its shard, retried first
    by the next delivery, and the payloads behind it wait: the shard's order holds."""
    send("ordered", "bad")
    send("ordered", "next")
    got: list[Any] = []
    handler = failing(1, got)
    assert deliver({"ordered": handler}, reliable=True, retry_delay=0) == 0
    assert deliver({"ordered": handler}, reliable=True, retry_delay=0) == 2
    assert got == [("failed", "bad"), "bad", "next"]


class _Killed(BaseException):
    """Stands for a handler that kills its process (see test_delivery)."""


def test_a_killed_deliverer_leaves_its_rescheduled_payloads_rescheduled(
    store: Store, raw: RawAccess, clock: list[float]
) -> None:
    """A deliverer that rescheduled a failed payload and then died (its acknowledgement never
    written) leaves a cursor that says so: its successor keeps that payload waiting with the
    attempt counted, rather than taking it as done, and it is delivered once due."""
    send("k", "bad")
    send("k", "deadly")
    send("k", "fine")
    got: list[Any] = []
    state = {"killed": False}

    def handler(data: Any) -> None:
        if data == "bad" and not got.count(("failed", "bad")):
            got.append(("failed", "bad"))
            raise RuntimeError("later")
        if data == "deadly" and not state["killed"]:
            state["killed"] = True
            raise _Killed
        got.append(data)

    with pytest.raises(_Killed):
        deliver({"k": handler}, reliable=True)
    assert deliver({"k": handler}, reliable=True) == 2  # deadly (again) and fine, not bad
    assert pending("k")["k"].waiting == 1
    clock[0] += 1.2
    assert deliver({"k": handler}, reliable=True) == 1
    assert sorted(map(str, got)) == sorted(map(str, [("failed", "bad"), "deadly", "fine", "bad"]))
    assert dead_letters("k") == []
