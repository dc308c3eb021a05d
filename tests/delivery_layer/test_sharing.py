"""Bounded and shared reliable delivery: ``deliver(reliable=True, limit=N)`` handles at most N
payloads of each signal, leaves the rest, and spreads a backlog on one key over the signal's
shards for other deliverers, at least once, on every store."""

from __future__ import annotations

from typing import Any

import pytest

import gaesignals
from gaesignals import declare, deliver, frames, send
from gaesignals.config import get_settings
from gaesignals.inspection import overview
from gaesignals.keys import shard_keys, signal_keys
from gaesignals.queue import routing
from gaesignals.queue.lease import lock_value
from gaesignals.queue.routing import queues_of
from gaesignals.stores import Store

from ..conftest import RawAccess
from ..fault_stores import DiesBeforeAcknowledging, Killed
from .support import collect, queue_key


def drain(name: str, handler: Any, limit: int) -> list[int]:
    """Deliver ``name`` reliably with ``limit`` until a delivery finds nothing; each
    delivery's count, every one checked to be within the limit."""
    counts = []
    for _ in range(100):
        count = deliver({name: handler}, reliable=True, limit=limit)
        assert count <= limit
        if count == 0:
            return counts
        counts.append(count)
    raise AssertionError("the backlog never drained")


def test_limit_handles_n_payloads_and_leaves_the_rest(store: Store) -> None:
    """A bounded reliable delivery handles the first N payloads, in send order, acknowledges
    them and leaves the rest queued, for the next delivery."""
    got, handler = collect()
    for i in range(5):
        send("jobs", i)
    assert deliver({"jobs": handler}, reliable=True, limit=3) == 3
    assert got == [0, 1, 2]
    assert gaesignals.pending("jobs")["jobs"].count == 2
    assert deliver({"jobs": handler}, reliable=True, limit=3) == 2
    assert got == [0, 1, 2, 3, 4]
    assert deliver({"jobs": handler}, reliable=True, limit=3) == 0
    assert len(queues_of("jobs", get_settings())) == 1  # too little to share: not widened


def test_the_rest_is_handled_by_the_next_deliveries(store: Store) -> None:
    """A backlog many times the limit is handled, N at most per delivery, each payload once,
    by the deliveries that follow."""
    got, handler = collect()
    for i in range(40):
        send("backlog", i)
    counts = drain("backlog", handler, 6)
    assert sum(counts) == 40 and max(counts) == 6
    assert sorted(got) == list(range(40))
    assert gaesignals.stats("backlog")["backlog"]["lost"] == 0


def test_a_backlog_on_one_key_moves_to_other_shards(store: Store, raw: RawAccess) -> None:
    """A bounded deliverer whose shard holds more than another delivery's worth past what it
    handles moves that excess to the signal's other shards, widened as the backlog wants, and
    acknowledges it from its own shard: other deliverers can take it from there."""
    got, handler = collect()
    for i in range(20):
        send("wide", i)
    assert deliver({"wide": handler}, reliable=True, limit=5) == 5
    assert got == [0, 1, 2, 3, 4]
    queues = queues_of("wide", get_settings())
    assert len(queues) == 4  # 20 payloads, 5 a delivery
    assert gaesignals.pending("wide")["wide"].count == 15
    others = [raw.get(queue) for queue in queues[1:]]
    assert all(others)  # each other shard holds a part
    first, _ = frames.parse(raw.get(queues[0]) or b"", queues[0].encode())
    assert first == []  # shard 0 kept only what its deliverer handled (and the marker)


def test_another_deliverys_worth_is_enough_to_move(store: Store) -> None:
    """A shard 0 holding one more delivery's worth past what its deliverer handles shares it:
    the signal widens to two shards, the second holding that worth."""
    got, handler = collect()
    for i in range(6):
        send("pairs", i)
    assert deliver({"pairs": handler}, reliable=True, limit=3) == 3
    assert got == [0, 1, 2]
    queues = queues_of("pairs", get_settings())
    assert len(queues) == 2
    with store.connection() as conn:
        moved = conn.gets_many([queues[1]])[queues[1]].value
    assert len(frames.parse(moved, queues[0].encode())[0]) == 3


def test_a_deliverer_works_on_a_shard_another_does_not_hold(store: Store, raw: RawAccess) -> None:
    """Locks are per shard: while other deliverers hold some shards of a signal, a delivery
    works on one they do not hold."""
    got, handler = collect()
    for i in range(20):
        send("parts", i)
    assert deliver({"parts": handler}, reliable=True, limit=5) == 5
    shards = shard_keys(signal_keys("parts", get_settings().namespace), 4)
    for shard in shards[:3]:
        raw.set(shard.lock, lock_value(b"ab" * 16, 30))  # live locks of other deliverers
    assert deliver({"parts": handler}, reliable=True, limit=5) == 5
    assert sorted(got[5:]) == got[5:] and len(set(got)) == 10  # the last shard's part
    assert overview(["parts"]).signals["parts"].lock == "held"
    for shard in shards[:3]:
        raw.set(shard.lock, b"")
    drain("parts", handler, 5)
    assert sorted(got) == list(range(20))


def test_a_declared_signal_keeps_its_shards(store: Store) -> None:
    """A signal declared with shards keeps that many: a bounded delivery moves nothing."""
    declare("fixed", shards=2)
    for i in range(20):
        send("fixed", i)
    got, handler = collect()
    assert deliver({"fixed": handler}, reliable=True, limit=5) == 5
    assert len(queues_of("fixed", get_settings())) == 2
    drain("fixed", handler, 5)
    assert sorted(got) == list(range(20))


def test_the_limit_holds_across_a_signals_shards(store: Store) -> None:
    """The limit counts a signal's payloads over all its shards, each shard's in send order,
    and no payload is handled twice."""
    declare("pair", shards=2)
    queues = queues_of("pair", get_settings())
    for i in range(8):
        routing.stick(queues, queues[i % 2])
        send("pair", i)
    got, handler = collect()
    assert deliver({"pair": handler}, reliable=True, limit=3) == 3
    assert len(got) == 3
    for shard in (0, 1):
        mine = [data for data in got if data % 2 == shard]
        assert mine == sorted(mine) and all(data < 6 for data in mine)
    drain("pair", handler, 3)
    assert sorted(got) == list(range(8))


def test_a_bounded_deliverer_killed_mid_way_costs_one_repeat(store: Store) -> None:
    """A bounded deliverer that dies running a payload leaves its cursor: the next delivery
    repeats only that payload, and the bound still holds."""
    for i in range(5):
        send("crashy", i)
    seen: list[int] = []

    def dies_on_one(data: int) -> None:
        seen.append(data)
        if data == 1:
            raise Killed

    with pytest.raises(Killed):
        deliver({"crashy": dies_on_one}, reliable=True, limit=3)
    got, handler = collect()
    assert deliver({"crashy": handler}, reliable=True, limit=3) == 3
    assert seen == [0, 1] and got == [1, 2, 3]
    assert deliver({"crashy": handler}, reliable=True, limit=3) == 1
    assert got == [1, 2, 3, 4]


def test_a_deliverer_killed_between_moving_and_acknowledging_loses_nothing(
    store: Store,
) -> None:
    """A deliverer that dies after moving its excess and before acknowledging it there costs
    duplicates, never a loss: every payload is handled at least once, none counted lost."""
    for i in range(20):
        send("moving", i)
    faulty = DiesBeforeAcknowledging(store, queue_key("moving"))
    gaesignals.configure(store=faulty)  # type: ignore[arg-type]
    got, handler = collect()
    with pytest.raises(Killed):
        deliver({"moving": handler}, reliable=True, limit=5)
    assert faulty.killed and got == []
    gaesignals.configure(store=store)
    assert deliver({"moving": handler}, reliable=True) >= 20
    assert set(got) == set(range(20))
    assert len(got) > 20  # the moved payloads were still in shard 0 too
    assert gaesignals.stats("moving")["moving"]["lost"] == 0
