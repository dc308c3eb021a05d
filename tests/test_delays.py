"""Delayed sends (``delay=``, ``eta=``): held back from every delivery until their time, on
every store and in both modes, kept in the same round trips, and refused when they cannot be
honoured. Time comes from the library's one clock seam, set by the tests."""

from __future__ import annotations

import math
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

import gaesignals
from gaesignals import InvalidDelay, deliver, frames, pending, send, send_multi, stats
from gaesignals.codec import encode_payload
from gaesignals.config import get_settings
from gaesignals.keys import signal_keys
from gaesignals.stores import Store
from gaesignals.stores.memory import MemoryStore
from gaesignals.timing import MAX_DELAY

from .conftest import RawAccess

START = 1_800_000_000.0
MODES = pytest.mark.parametrize("reliable", [False, True], ids=["weak", "reliable"])


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[float]]:
    """The library's clock (frame ids, ttl, what is due), set by the test."""
    now = [START]
    monkeypatch.setattr(frames, "clock", lambda: now[0])
    yield now


def queue(name: str) -> str:
    return signal_keys(name, get_settings().namespace).queue


@MODES
def test_a_delayed_payload_waits_for_its_time(
    store: Store, raw: RawAccess, clock: list[float], reliable: bool
) -> None:
    """A payload sent with a delay goes to no handler before its time and to the first
    delivery after it; the payloads around it are delivered meanwhile, once each."""
    send("later", "soon", delay=10)
    send("later", "now")
    got: list[str] = []
    assert deliver({"later": got.append}, reliable=reliable) == 1
    assert got == ["now"]
    clock[0] += 9.999
    assert deliver({"later": got.append}, reliable=reliable) == 0
    clock[0] += 0.002
    assert deliver({"later": got.append}, reliable=reliable) == 1
    assert got == ["now", "soon"]
    assert deliver({"later": got.append}, reliable=reliable) == 0
    counters = stats("later")["later"]
    assert (counters["sent"], counters["delivered"], counters["lost"]) == (2, 2, 0)


@MODES
def test_eta_is_an_aware_datetime(
    store: Store, raw: RawAccess, clock: list[float], reliable: bool
) -> None:
    """``eta=`` holds a payload until that moment, whatever its time zone; an eta already
    past is due at once."""
    east = timezone_plus(5)
    send("eta", "at", eta=datetime.fromtimestamp(START + 30, tz=east))
    send("eta", "past", eta=datetime.fromtimestamp(START - 30, tz=UTC))
    got: list[str] = []
    assert deliver({"eta": got.append}, reliable=reliable) == 1
    clock[0] += 30
    assert deliver({"eta": got.append}, reliable=reliable) == 1
    assert got == ["past", "at"]


def timezone_plus(hours: int) -> Any:
    from datetime import timezone

    return timezone(timedelta(hours=hours))


def test_waiting_payloads_do_not_hold_back_the_others(
    store: Store, raw: RawAccess, clock: list[float]
) -> None:
    """A hundred payloads sent after a delayed one are all delivered by the first delivery,
    in send order, and the delayed one still waits in the signal's key."""
    send("busy", -1, delay=timedelta(minutes=5))
    for n in range(100):
        send("busy", n)
    got: list[int] = []
    assert deliver({"busy": got.append}) == 100
    assert got == list(range(100))
    backlog = pending("busy")["busy"]
    assert (backlog.count, backlog.waiting, backlog.next_due) == (1, 1, START + 300)
    assert backlog.oldest_age is None  # nothing due is late
    report = gaesignals.health(["busy"])["signals"]["busy"]
    assert (report["waiting"], report["next_due"]) == (1, START + 300)


@MODES
def test_send_multi_delays_every_payload(
    store: Store, raw: RawAccess, clock: list[float], reliable: bool
) -> None:
    """``send_multi(..., delay=)`` holds back each payload of the batch."""
    send_multi([("a", 1), ("b", 2)], delay=1.5)
    got: list[int] = []
    mapping = {"a": got.append, "b": got.append}
    assert deliver(mapping, reliable=reliable) == 0
    clock[0] += 1.5
    assert deliver(mapping, reliable=reliable) == 2
    assert sorted(got) == [1, 2]


@pytest.mark.parametrize(
    ("kwargs", "says"),
    [
        ({"delay": -1}, "0 or more"),
        ({"delay": math.nan}, "0 or more"),
        ({"delay": True}, "seconds or a timedelta"),
        ({"delay": "5"}, "seconds or a timedelta"),
        ({"delay": MAX_DELAY + 1}, "at most"),
        ({"delay": timedelta(days=8)}, "at most"),
        ({"delay": 1, "eta": datetime.now(UTC)}, "not both"),
        ({"eta": datetime(2030, 1, 1)}, "aware"),
        ({"eta": START + 5}, "must be a datetime"),
        ({"eta": datetime.fromtimestamp(START + MAX_DELAY + 60, tz=UTC)}, "at most"),
    ],
)
def test_a_delay_that_cannot_be_honoured_is_refused(
    store: Store, raw: RawAccess, clock: list[float], kwargs: dict[str, Any], says: str
) -> None:
    """A negative, past-the-maximum, naive or ill-typed delay or eta raises InvalidDelay (a
    ValueError) and stores nothing, through every send function."""
    for call in (
        lambda: send("bad", 1, **kwargs),
        lambda: gaesignals.Signal("bad").send(1, **kwargs),
        lambda: send_multi([("bad", 1)], **kwargs),
    ):
        with pytest.raises(InvalidDelay, match=says) as caught:
            call()
        assert isinstance(caught.value, ValueError)
    assert raw.get(queue("bad")) is None


def test_a_delay_of_zero_is_no_delay(store: Store, raw: RawAccess, clock: list[float]) -> None:
    """``delay=0`` sends a plain payload (no metadata in its frame)."""
    send("zero", 1, delay=0)
    value = raw.get(queue("zero")) or b""
    (frame,) = frames.parse(value, queue("zero").encode())[0]
    assert frame.meta == b""


def test_ttl_counts_from_when_a_payload_is_due(
    store: Store, raw: RawAccess, clock: list[float]
) -> None:
    """A signal's ttl starts when a delayed payload is due, not when it was sent: a delay
    longer than the ttl does not expire it."""
    gaesignals.declare("fresh", ttl=60)
    send("fresh", "delayed", delay=300)
    clock[0] += 330
    got: list[str] = []
    assert deliver({"fresh": got.append}) == 1
    send("fresh", "stale", delay=10)
    clock[0] += 100
    assert deliver({"fresh": got.append}) == 0
    assert got == ["delayed"]


class _Killed(BaseException):
    """Stands for a handler that kills its process (see test_delivery)."""


def test_a_killed_reliable_delivery_never_takes_a_waiting_payload_as_done(
    store: Store, raw: RawAccess, clock: list[float]
) -> None:
    """A deliverer killed after skipping a payload not due yet leaves a cursor past it; the
    next deliverer, even once that payload is due, decides as its predecessor did: the
    payload stays (and is delivered later), it is never removed as done."""
    send("kill", "waits", delay=5)
    send("kill", "first")
    send("kill", "deadly")
    got: list[str] = []

    def handler(data: str) -> None:
        if data == "deadly" and "deadly" not in got:
            got.append(data)
            raise _Killed
        got.append(data)

    with pytest.raises(_Killed):
        deliver({"kill": handler}, reliable=True)
    clock[0] += 10
    while deliver({"kill": handler}, reliable=True):
        pass
    assert sorted(got) == ["deadly", "deadly", "first", "waits"]
    assert pending("kill")["kill"].count == 0


@MODES
def test_garbage_beside_a_delayed_payload_loses_nothing(
    store: Store, raw: RawAccess, clock: list[float], reliable: bool
) -> None:
    """Bytes that are not a frame between payloads (one delayed) are dropped and counted,
    and the delayed payload after them still waits, then arrives."""
    due = frames.encode(b"\x80\x05K\x01.", queue("g").encode())
    later = frames.encode(
        b"\x80\x05K\x02.",
        queue("g").encode(),
        meta=frames.meta_entry(frames.META_NOT_BEFORE, int((START + 5) * 1000).to_bytes(8, "big")),
    )
    raw.set(queue("g"), due + b"garbage!" * 4 + later)
    got: list[int] = []
    assert deliver({"g": got.append}, reliable=reliable) == 1
    clock[0] += 5
    assert deliver({"g": got.append}, reliable=reliable) == 1
    assert got == [1, 2]


class _TakenMeanwhile(MemoryStore):
    """A store without append where, before this process's first reset, another deliverer
    (whose clock says the delayed payload is due) takes the key, and a sender appends."""

    def __init__(self) -> None:
        super().__init__(append=False)
        self.then: bytes | None = None

    def cas_many(self, items: Any, expire: int = 0, counters: Any = None) -> Any:
        if self.then is not None:
            for key in items:
                self.set_raw(key, self.then)
            self.then = None
        return super().cas_many(items, expire, counters)


def test_a_payload_taken_by_another_deliverer_between_rounds_is_not_put_back(
    clock: list[float],
) -> None:
    """A weak delivery whose reset lost reads the key again: a delayed payload it held back in
    the first round, but that another deliverer took meanwhile, is not written back by its
    next reset (it would be delivered twice)."""
    store = _TakenMeanwhile()
    gaesignals.configure(store=store)
    send("t", "waits", delay=10)
    send("t", "first")
    store.then = encode_payload("t", "later", signal_keys("t", ""), get_settings())
    got: list[str] = []
    assert deliver({"t": got.append}) == 1
    assert got == ["later"]
    assert pending("t")["t"].count == 0
