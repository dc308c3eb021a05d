"""``deliver(mapping, limit=N)`` in weak mode on every store: each signal's oldest N payloads,
the rest left for the next delivery, counted right; a bad limit is refused before anything is
taken."""

from __future__ import annotations

import asyncio

import pytest

from gaesignals import adeliver, deliver, pending, send_multi, stats
from gaesignals.stores import Store

from .support import collect


def test_a_limit_delivers_the_oldest_and_leaves_the_rest(store: Store) -> None:
    """With ``limit=3`` each delivery runs each signal's 3 oldest payloads; the rest waits,
    in send order, for the next deliveries, and the counters add up at every step."""
    send_multi([("alpha", i) for i in range(8)] + [("beta", i) for i in range(2)])
    alpha, beta = collect(), collect()
    mapping = {"alpha": alpha[1], "beta": beta[1]}
    assert deliver(mapping, limit=3) == 5
    assert (alpha[0], beta[0]) == ([0, 1, 2], [0, 1])
    assert pending("alpha")["alpha"].count == 5
    counters = stats("alpha")["alpha"]
    assert (counters["sent"], counters["delivered"], counters["lost"]) == (8, 3, 0)
    assert deliver(mapping, limit=3) == 3
    assert deliver(mapping, limit=3) == 2
    assert deliver(mapping, limit=3) == 0
    assert alpha[0] == list(range(8))
    assert stats("alpha")["alpha"]["delivered"] == 8
    assert stats("alpha")["alpha"]["lost"] == 0


def test_adeliver_takes_the_same_limit(store: Store) -> None:
    """The awaitable twin bounds its delivery as ``deliver`` does."""
    send_multi([("alpha", i) for i in range(5)])
    got, handler = collect()
    assert asyncio.run(adeliver({"alpha": handler}, limit=2)) == 2
    assert got == [0, 1]


@pytest.mark.parametrize("limit", [0, -1, True, 2.5, "3"])
def test_a_bad_limit_is_refused_before_anything_is_taken(store: Store, limit: object) -> None:
    """A limit that is not a positive int raises ValueError naming it, and every payload
    stays queued."""
    send_multi([("alpha", i) for i in range(3)])
    got, handler = collect()
    with pytest.raises(ValueError, match="limit must be a positive int"):
        deliver({"alpha": handler}, limit=limit)  # type: ignore[arg-type]
    assert got == []
    assert pending("alpha")["alpha"].count == 3


def test_no_limit_delivers_the_whole_backlog(store: Store) -> None:
    """``limit=None`` (the default) takes every payload pending."""
    send_multi([("alpha", i) for i in range(250)])
    got, handler = collect()
    assert deliver({"alpha": handler}, limit=None) == 250
    assert got == list(range(250))
