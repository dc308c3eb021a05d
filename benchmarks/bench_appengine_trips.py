"""App Engine sends when each memcache RPC takes a fixed time: round trips, seen as latency.

Every RPC to the testbed's memcache stub sleeps ``--rpc-ms`` (2 ms) before it is served, as a
round trip to App Engine's memcache would take; RPCs issued together overlap, as they do there.
A send's time over that delay is its round trips. Rows: a send to a new signal (no queue key),
to a queue holding payloads, and to a queue just delivered (its key empty but present), each
beside the raw client doing what sends did before (a gets, then an add or a cas: two round
trips). Run: ``python benchmarks/bench_appengine_trips.py``.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from typing import Any

from common import appengine_testbed, quiet_library

import gaesignals
from gaesignals.keys import signal_keys
from gaesignals.stores.appengine import AppEngineStore, RefusingUnpickler


def slow_stub(delay: float) -> None:
    """Make every RPC to the memcache stub take ``delay`` seconds more."""
    from google.appengine.api import apiproxy_stub_map

    stub = apiproxy_stub_map.apiproxy.GetStub("memcache")
    serve = stub.MakeSyncCall

    def slow(*args: Any) -> Any:
        time.sleep(delay)
        return serve(*args)

    stub.MakeSyncCall = slow


def raw_send(key: str, frame: bytes) -> None:
    """A send as it was: a gets, then an add (a missing key) or a cas, one after the other."""
    from google.appengine.api import memcache

    client = memcache.Client(unpickler=RefusingUnpickler)
    current = client.get_multi([key], for_cas=True).get(key)
    if current is None:
        client.add(key, frame)
    else:
        client.cas(key, current + frame)


def median_ms(body: Callable[[int], None], prepare: Callable[[int], None], count: int) -> float:
    """The median time of ``body(i)`` over ``count`` runs, each after ``prepare(i)`` (untimed)."""
    times = []
    for i in range(count):
        prepare(i)
        started = time.perf_counter()
        body(i)
        times.append(time.perf_counter() - started)
    return statistics.median(times) * 1e3


def rows(count: int) -> list[tuple[str, float, float]]:
    """(case, before ms, after ms) for the three kinds of queue."""
    store = AppEngineStore()
    gaesignals.configure(store=store)
    mapping = gaesignals.SignalMapping([(f"s{i}", lambda data: None) for i in range(count)])
    frame = b"x" * 60

    def nothing(i: int) -> None:
        pass

    def pending(i: int) -> None:
        gaesignals.send(f"s{i}", {"n": 0})
        raw_send(f"raw{i}", frame)

    def delivered(i: int) -> None:
        pending(i)
        gaesignals.deliver(mapping)
        with store.connection() as conn:
            conn.set_many({f"raw{i}": b""})

    def library(prefix: str) -> Callable[[int], None]:
        return lambda i: gaesignals.send(f"{prefix}{i}", {"n": 1})

    def raw(prefix: str) -> Callable[[int], None]:
        return lambda i: raw_send(signal_keys(f"{prefix}{i}", "").queue, frame)

    cases = [("new signal", "n", nothing), ("pending queue", "s", pending)]
    cases.append(("delivered queue", "s", delivered))
    result = []
    for name, prefix, prepare in cases:
        store.memcache.flush_all()
        if prefix == "s":  # raw sends go to the keys prepare filled
            after = median_ms(library(prefix), prepare, count)
            store.memcache.flush_all()
            before = median_ms(lambda i: raw_send(f"raw{i}", frame), prepare, count)
        else:
            after = median_ms(library(prefix), prepare, count)
            before = median_ms(raw("r"), prepare, count)
        result.append((name, before, after))
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rpc-ms", type=float, default=2.0, help="each stub RPC's delay")
    parser.add_argument("--count", type=int, default=200, help="sends per row")
    args = parser.parse_args()
    quiet_library()
    with appengine_testbed():
        slow_stub(args.rpc_ms / 1e3)
        table = rows(args.count)
    print(f"App Engine stub, every RPC {args.rpc_ms:g} ms; median per send, {args.count} sends")
    print(f"{'case':<18}{'raw: gets, add or cas':>24}{'gaesignals.send':>24}{'ratio':>8}")
    for name, before, after in table:
        trips = f"{after / args.rpc_ms:.1f} trips"
        print(f"{name:<18}{before:>21.2f} ms{after:>12.2f} ms ({trips}){after / before:>7.2f}x")


if __name__ == "__main__":
    main()
