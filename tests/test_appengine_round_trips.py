"""App Engine sends in round trips: one to a missing queue key, at most two to an existing one,
and threads sending at once lose nothing and count each payload once."""

from __future__ import annotations

import threading
from collections import Counter
from typing import Any

import pytest

from gaesignals import SignalMapping, configure, deliver, send, stats
from gaesignals.stores.appengine import AppEngineStore

from .roundtrip_support import RoundTrips, install

SECRET_KEY = b"round trips of App Engine sends, counted"


@pytest.fixture
def trips(gaesignals_testbed: Any, monkeypatch: pytest.MonkeyPatch) -> RoundTrips:
    """App Engine's memcache stub as the store, its round trips counted."""
    configure(store=AppEngineStore(), secret_key=SECRET_KEY)
    return install(monkeypatch)


def _delivered(names: list[str]) -> Counter[int]:
    got: Counter[int] = Counter()
    mapping = SignalMapping([(name, lambda data: got.update([data["id"]])) for name in names])
    while deliver(mapping):
        pass
    return got


def test_a_send_to_a_new_signal_takes_one_round_trip(trips: RoundTrips) -> None:
    """The first send of a signal stores its payload in one round trip (add and gets together)."""
    with trips.counting():
        send("fresh", {"id": 1})
        assert trips.trips == 1
    assert _delivered(["fresh"]) == Counter({1: 1})


def test_a_send_to_a_pending_queue_takes_at_most_two_round_trips(trips: RoundTrips) -> None:
    """A send to a queue holding payloads takes the add and gets together, then one cas."""
    send("busy", {"id": 1})
    for pid in range(2, 6):
        with trips.counting():
            send("busy", {"id": pid})
            assert trips.trips <= 2
    assert _delivered(["busy"]) == Counter(range(1, 6))


def test_a_send_to_a_delivered_queue_takes_at_most_two_round_trips(trips: RoundTrips) -> None:
    """A delivery leaves the queue key empty but present, so a send finds it in two round trips."""
    send("again", {"id": 1})
    assert _delivered(["again"]) == Counter({1: 1})
    with trips.counting():
        send("again", {"id": 2})
        assert trips.trips <= 2
    assert _delivered(["again"]) == Counter({2: 1})


def test_the_counter_counts_each_round_trip_batch_once(trips: RoundTrips) -> None:
    """RPCs issued before any wait are one round trip; a wait starts the next (the test's ruler)."""
    from google.appengine.api import memcache

    client = memcache.Client()
    with trips.counting():
        first = client.get_multi_async(["a"])
        second = client.get_multi_async(["b"])
        first.get_result(), second.get_result()
        assert trips.trips == 1
        client.get_multi(["c"])
        assert trips.trips == 2


def test_threads_sending_at_once_lose_nothing_and_count_each_payload_once(
    trips: RoundTrips,
) -> None:
    """Eight threads sending to new and shared signals at once: every payload is delivered once
    and ``sent`` counts each once."""
    names = ["shared", *(f"own-{i}" for i in range(8))]
    per_thread = 40

    def sender(index: int) -> None:
        for n in range(per_thread):
            name = "shared" if n % 2 else f"own-{index}"
            send(name, {"id": index * 1000 + n})

    threads = [threading.Thread(target=sender, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not any(thread.is_alive() for thread in threads)
    expected = Counter(i * 1000 + n for i in range(8) for n in range(per_thread))
    assert _delivered(names) == expected
    assert sum(counts["sent"] for counts in stats(names).values()) == len(expected)
