"""Coalescing and cancelling without a cache: a capture tells what a delivery would run
(``CapturedSignals.pending``, ``coalesced``, ``cancelled``), and eager mode runs every send."""

from __future__ import annotations

from typing import Any

import pytest

import gaesignals
from gaesignals import CancelResult, cancel, declare, send, send_multi
from gaesignals.testing import CapturedSignals, captured_signals, eager_signals


def test_a_capture_tells_what_a_delivery_would_run() -> None:
    """Ten sends of one coalesced signal leave one payload to run, the newest; the other
    nine are coalesced; nothing reaches a store with ``keep=False``."""
    declare("user_54274_profile_changed", coalesce=True)
    with captured_signals(keep=False) as sent:
        for n in range(10):
            send("user_54274_profile_changed", {"version": n})
    name = "user_54274_profile_changed"
    assert len(sent.data(name)) == 10
    assert sent.pending(name) == [{"version": 9}]
    assert sent.coalesced(name) == [{"version": n} for n in range(9)]
    assert gaesignals.pending(name)[name].count == 0


def test_keys_stay_apart_and_uncoalesced_payloads_all_run() -> None:
    """Payloads with different keys stay apart, in send order; those sent without a key to
    an undeclared signal all run."""
    with captured_signals(keep=False) as sent:
        send_multi([("s", "a1"), ("s", "b1")], coalesce="a")
        send("s", "b2", coalesce="b")
        send("s", "plain")
        send("s", "a2", coalesce="a")
    assert sent.pending("s") == ["b2", "plain", "a2"]
    assert sent.coalesced("s") == ["a1", "b1"]


def test_a_capture_sees_cancellations() -> None:
    """A cancelled payload is listed by ``cancelled`` and not by ``pending``; an older one of
    its key then runs instead (cancellations leave first, then keys coalesce)."""
    with captured_signals(keep=False) as sent:
        send("s", "older", coalesce="k")
        newer = send("s", "newer", coalesce="k")
        doomed = send("s", "doomed")
        assert newer.cancel() is CancelResult.CANCELLED
        assert cancel("s", doomed.id) is CancelResult.CANCELLED
    assert sent.pending("s") == ["older"]
    assert sent.cancelled("s") == ["newer", "doomed"]
    assert sent.coalesced("s") == []


def test_the_plugin_fixture_captures_coalescing(gaesignals_captured: CapturedSignals) -> None:
    """The pytest plugin's ``gaesignals_captured`` answers the same questions."""
    for n in range(3):
        send("reindex", n, coalesce="shop-1")
    assert gaesignals_captured.pending("reindex") == [2]
    gaesignals_captured.clear()
    assert gaesignals_captured.pending("reindex") == [] and gaesignals_captured == []


@pytest.mark.parametrize("how", ["settings", "block"])
def test_eager_mode_runs_every_send_at_once(how: str) -> None:
    """Eager sends run the handlers at once, so nothing is pending to coalesce: each send
    runs; a cancel after it changes nothing."""
    got: list[Any] = []
    if how == "settings":
        gaesignals.configure(eager=True)
        gaesignals.connect("e", got.append)
        receipts = [send("e", n, coalesce="k") for n in range(3)]
        assert [r.cancel() for r in receipts] == [CancelResult.DELIVERED] * 3
    else:
        with eager_signals({"e": got.append}) as delivered:
            for n in range(3):
                send("e", n, coalesce="k")
        assert delivered.data("e") == [0, 1, 2]
    assert got == [0, 1, 2]
