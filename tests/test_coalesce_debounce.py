"""Debounce through the public API, on the library's clock seam (:data:`gaesignals.frames.clock`):
a declared run waits until it goes quiet, or until ``debounce_max``, then one delivery runs the
newest; weak and reliable, on stores with and without append and the native take."""

from __future__ import annotations

from typing import Any

import pytest

import gaesignals
from gaesignals import declare, deliver, pending, send, stats
from gaesignals.stores import Store

START = 1_800_000_000.0

pytestmark = pytest.mark.parametrize("store_kind", ["memory", "memory-cas", "memcached", "redis"])


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """The library's one clock, moved by the test."""
    now = [START]
    monkeypatch.setattr(gaesignals.frames, "clock", lambda: now[0])
    return now


def test_a_run_is_delivered_once_it_goes_quiet(
    store: Store, reliable: bool, clock: list[float]
) -> None:
    """Three sends a second apart with a 5 s debounce: nothing runs until the newest is 5 s
    old, then the handler runs once with it; the others are coalesced."""
    declare("reindex", coalesce=True, debounce=5, reliable=reliable)
    got: list[Any] = []
    for n in range(3):
        send("reindex", n)
        clock[0] += 1
    assert deliver({"reindex": got.append}) == 0 and got == []
    assert pending("reindex")["reindex"].debounced > 0
    clock[0] = START + 2 + 5
    assert deliver({"reindex": got.append}) == 1 and got == [2]
    counts = stats("reindex")["reindex"]
    assert (counts["sent"], counts["delivered"], counts["coalesced"]) == (3, 1, 2)
    assert pending("reindex")["reindex"].count == 0


def test_a_steady_stream_is_delivered_by_debounce_max(
    store: Store, reliable: bool, clock: list[float]
) -> None:
    """A send every second never goes quiet for a 5 s debounce, yet the run is delivered once
    its first payload is ``debounce_max`` (8 s) old, with the newest sent so far."""
    declare("feed", coalesce=True, debounce=5, debounce_max=8, reliable=reliable)
    got: list[Any] = []
    for n in range(8):
        send("feed", n)
        assert deliver({"feed": got.append}) == 0
        clock[0] += 1
    send("feed", 8)  # at +8: the run's first is 8 s old
    assert deliver({"feed": got.append}) == 1 and got == [8]
    counts = stats("feed")["feed"]
    assert counts["delivered"] + counts["coalesced"] == counts["sent"] == 9
