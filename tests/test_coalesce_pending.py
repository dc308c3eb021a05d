"""``pending()`` tells how many payloads wait behind a debounce, on a clock seam
(:data:`gaesignals.frames.clock`), and ``health()`` and ``/metrics`` report it."""

from __future__ import annotations

import pytest

import gaesignals
from gaesignals import declare, health, pending, send

START = 1_800_000_000.0


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """The library's one clock, moved by the test."""
    now = [START]
    monkeypatch.setattr(gaesignals.frames, "clock", lambda: now[0])
    return now


@pytest.mark.parametrize("store_kind", ["memory", "memcached", "redis"])
@pytest.mark.usefixtures("store")
def test_a_debounced_run_is_counted_until_it_goes_quiet(clock: list[float]) -> None:
    """Payloads of a run younger than its debounce count as debounced (and pending); once
    its newest is ``debounce`` old, none does."""
    declare("reindex", coalesce=True, debounce=5)
    for _ in range(3):
        send("reindex")
        clock[0] += 1
    assert (pending("reindex")["reindex"].count, pending("reindex")["reindex"].debounced) == (3, 3)
    clock[0] = START + 2 + 5  # the newest, sent at +2, is 5 s old
    assert pending("reindex")["reindex"].debounced == 0


def test_debounce_max_bounds_the_wait(clock: list[float]) -> None:
    """A run kept alive by steady sends stops counting as debounced once its first payload
    is ``debounce_max`` old; runs of different keys are counted apart."""
    declare("feed", coalesce=True, debounce=5, debounce_max=8)
    for _ in range(6):
        send("feed", coalesce="a")
        clock[0] += 1
    send("feed", coalesce="b")  # at +6
    assert pending("feed")["feed"].debounced == 7
    clock[0] = START + 8
    assert pending("feed")["feed"].debounced == 1  # a's first is 8 s old; b's is fresh


def test_payloads_without_a_debounce_and_delayed_ones_are_not_debounced(
    clock: list[float],
) -> None:
    """A coalesced payload without a debounce is due at once; a delayed one is ``waiting``."""
    declare("debounced", coalesce=True, debounce=60)
    send("plain", 1, coalesce="k")
    send("debounced", 2, delay=30)
    assert pending("plain")["plain"].debounced == 0
    report = pending("debounced")["debounced"]
    assert (report.waiting, report.debounced) == (1, 0)


def test_health_reports_debounced(clock: list[float]) -> None:
    """``health()`` carries each signal's debounced count."""
    declare("h", coalesce=True, debounce=5)
    send("h")
    assert health(["h"])["signals"]["h"]["debounced"] == 1
