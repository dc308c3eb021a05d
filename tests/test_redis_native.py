"""Redis's native queue operations: the weak take and the reliable acknowledgement as scripts.

Run on a single Redis and on a three-node cluster. Round trips are counted as pipelines sent
(one per server per batch).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

import gaesignals
from gaesignals import deliver, frames, send, stats
from gaesignals.keys import signal_keys
from gaesignals.stores import TakeGroup
from gaesignals.stores.redis import RedisStore
from gaesignals.stores.redis._router import Router, Sent

from .conftest import REDIS_FIXTURES, redis_store_of


class _CountingRouter(Router):
    """Counts the pipelines sent, i.e. the network round trips."""

    pipelines = 0

    def _pipeline(self, node: Any, group: list[Sent]) -> list[Any]:
        self.pipelines += 1
        return super()._pipeline(node, group)


class _Counted(RedisStore):
    Router = _CountingRouter


@pytest.fixture(params=list(REDIS_FIXTURES))
def redis_store(request: pytest.FixtureRequest) -> Iterator[RedisStore]:
    """A counting store on the session's Redis or Valkey server or cluster, flushed and
    configured."""
    plain = redis_store_of(request.param, request)
    store = _Counted(plain.client)
    gaesignals.configure(store=store)
    yield store
    store.close()


def _pipelines(store: RedisStore) -> int:
    assert isinstance(store.router, _CountingRouter)
    return store.router.pipelines


def _reset(store: RedisStore) -> None:
    assert isinstance(store.router, _CountingRouter)
    store.router.pipelines = 0


def _servers(store: RedisStore) -> int:
    return len(store.client.get_nodes()) if store.clustered else 1


def test_a_weak_delivery_of_100_signals_is_one_round_trip_per_server(
    redis_store: RedisStore,
) -> None:
    """100 signals with pending payloads are taken, counted and emptied in one pipeline per
    server, with no compare-and-set; the handlers get every payload once."""
    names = [f"many-{i:03d}" for i in range(100)]
    mapping = {name: (lambda data: got.append(data)) for name in names}
    got: list[Any] = []
    for name in names:
        send(name, name)
    deliver(mapping)  # the servers learn the scripts, the lost check's first visit is done
    for name in names:
        send(name, name)
    got.clear()
    _reset(redis_store)
    gaesignals.configure(store=redis_store, lost_check_interval=3600)
    assert deliver(mapping) == 100
    assert sorted(got) == names
    assert _pipelines(redis_store) == _servers(redis_store)


def test_the_take_counts_exactly_the_frames_it_took(redis_store: RedisStore) -> None:
    """The script walks the frames it empties and bumps accounted and delivered by that count,
    so stats match what the handlers got, with a payload that fails counted as failed."""
    for i in range(5):
        send("counted", i)

    def handler(data: int) -> None:
        if data == 3:
            raise RuntimeError("three")

    assert deliver({"counted": handler}) == 4
    counts = stats("counted")["counted"]
    assert (counts["sent"], counts["delivered"], counts["failed"], counts["lost"]) == (5, 4, 1, 0)


def test_garbage_in_a_queue_is_counted_as_no_frame(redis_store: RedisStore) -> None:
    """Bytes before and between frames stop the script's walk (it counts whole frames from the
    start only); Python's parse then finds the frames after them and drops the garbage, and
    the counters come out right all the same."""
    keys = signal_keys("dirty", "")
    send("dirty", "first")
    redis_store.client.append(keys.queue, b"\x00garbage\x00")
    send("dirty", "second")
    got: list[Any] = []
    assert deliver({"dirty": got.append}) == 2
    assert got == ["first", "second"]
    counts = stats("dirty")["dirty"]
    assert (counts["delivered"], counts["dropped"]) == (2, 1)
    assert not redis_store.client.get(keys.queue)


def test_a_counter_of_another_type_loses_no_taken_payload(redis_store: RedisStore) -> None:
    """A signal's delivered counter turned into a list: the take still empties and returns
    every queue (the bump of that counter alone is skipped), so every handler runs and no
    delivery fails for it, the other signals' included."""
    keys = signal_keys("listed", "")
    redis_store.client.lpush(keys.counter("delivered"), b"not a counter")
    for i in range(3):
        send("listed", i)
        send("other", i)
    got: list[Any] = []
    assert deliver({"listed": got.append, "other": got.append}) == 6
    assert sorted(got) == [0, 0, 1, 1, 2, 2]
    assert stats("other")["other"]["delivered"] == 3
    assert redis_store.client.lrange(keys.counter("delivered"), 0, -1) == [b"not a counter"]


def test_take_many_reads_the_lost_check_counters_with_the_take(redis_store: RedisStore) -> None:
    """A group's ``read`` keys come back from the same atomic step, read before the queues."""
    keys = signal_keys("read", "")
    send("read", 1)
    assert redis_store.native is not None
    taken = redis_store.native.take_many(
        [TakeGroup((keys.queue,), None, (keys.counter("sent"), keys.counter("lost")))]
    )
    assert taken.read == {keys.counter("sent"): b"1"}
    assert list(taken.values) == [keys.queue] and taken.counted == {keys.queue: 1}
    assert taken.failure is None


def _frame(name: str, body: bytes) -> bytes:
    return frames.encode(body, signal_keys(name, "").queue.encode())


def test_acknowledge_keeps_what_senders_appended(redis_store: RedisStore) -> None:
    """Replacing the head taken by what stays keeps every byte appended after it."""
    key = signal_keys("ack", "").queue
    head, later = _frame("ack", b"a") + _frame("ack", b"b"), _frame("ack", b"c")
    redis_store.client.set(key, head + later)
    assert redis_store.native is not None
    kept = _frame("ack", b"b")
    assert redis_store.native.acknowledge(key, head, kept) is True
    assert redis_store.client.get(key) == kept + later


def test_acknowledge_refuses_a_changed_head(redis_store: RedisStore) -> None:
    """When the head is no longer what was taken (another deliverer acknowledged after our
    lease ran out), nothing is written."""
    key = signal_keys("moved", "").queue
    assert redis_store.native is not None
    other = _frame("moved", b"z")
    redis_store.client.set(key, other)
    assert redis_store.native.acknowledge(key, _frame("moved", b"a"), b"") is False
    assert redis_store.client.get(key) == other
    redis_store.client.delete(key)
    assert redis_store.native.acknowledge(key, _frame("moved", b"a"), b"rest") is True
    assert redis_store.client.get(key) == b"rest"  # a vanished queue gets what stays


def test_reliable_delivery_acknowledges_natively(redis_store: RedisStore) -> None:
    """A reliable delivery removes what it delivered with the acknowledge script, keeping the
    payload whose handler failed at the head for the next try."""
    gaesignals.declare("rel", retry_delay=0)  # a failed payload is retried at once
    for i in range(3):
        send("rel", i)
    got: list[Any] = []

    def handler(data: int) -> None:
        if data == 1 and 1 not in got:
            got.append(1)
            raise RuntimeError("once")
        got.append(data)

    deliver({"rel": handler}, reliable=True)
    deliver({"rel": handler}, reliable=True)
    assert got == [0, 1, 1, 2]
    assert not redis_store.client.get(signal_keys("rel", "").queue)
