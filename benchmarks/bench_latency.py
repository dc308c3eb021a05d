"""No target: end-to-end latency from send to handler start, with a polling worker.

A worker process loops ``deliver()`` with a short sleep between calls (a 1 ms and a 10 ms
poll); this process sends payloads carrying ``time.monotonic()`` (system-wide on Linux) at
random gaps of 0.5-4 ms, so sends land at every phase of the poll. The handler records
``monotonic() - sent`` as its first statement. memcached, the sender and the worker share the
benchmark CPU (see common.py).
"""

from __future__ import annotations

import multiprocessing as mp
import random
import time
from typing import Any

from common import (
    Memcached,
    Row,
    arguments,
    emit,
    percentile,
    prepare,
    print_table,
    quiet_library,
)

import gaesignals

NAME = "bench_latency"


def worker(url: str, poll: float, expected: int, ready: Any, out: Any) -> None:
    quiet_library()
    gaesignals.configure(store=url)
    latencies: list[float] = []

    def handler(data: dict[str, float]) -> None:
        latencies.append(time.monotonic() - data["t"])

    mapping = gaesignals.SignalMapping({NAME: handler})
    gaesignals.deliver(mapping)  # connect
    ready.put(True)
    deadline = time.monotonic() + 120
    while len(latencies) < expected and time.monotonic() < deadline:
        gaesignals.deliver(mapping)
        time.sleep(poll)
    out.put(latencies)


def measure(url: str, poll: float, count: int) -> list[float]:
    ctx = mp.get_context("fork")
    ready, out = ctx.Queue(), ctx.Queue()
    proc = ctx.Process(target=worker, args=(url, poll, count, ready, out))
    proc.start()
    try:
        ready.get(timeout=60)
        rng = random.Random(5)
        for i in range(count):
            gaesignals.send(NAME, {"i": i, "t": time.monotonic()})
            time.sleep(rng.uniform(0.0005, 0.004))
        latencies: list[float] = out.get(timeout=150)
    finally:
        proc.join(timeout=30)
        if proc.is_alive():
            proc.kill()
            proc.join()
    return latencies


def main() -> None:
    args = arguments(__doc__.splitlines()[0])
    pinning = prepare()
    quiet_library()
    count = 300 if args.quick else 1500
    rows: list[Row] = []
    with Memcached() as server:
        gaesignals.configure(store=server.url)
        gaesignals.send(NAME, {"i": -1, "t": time.monotonic()})
        gaesignals.deliver({NAME: lambda data: None})
        for poll in (0.001, 0.010):
            got = measure(server.url, poll, count)
            bench = "latency/memcached"
            label = f"poll {poll * 1000:.0f} ms"
            rows.append(
                Row(bench, f"send -> handler, {label}: p50 / p90 / p99 / max",
                    " / ".join(f"{percentile(got, q) * 1e3:.2f}" for q in (50, 90, 99, 100))
                    + " ms", f"{len(got)} of {count} delivered")
            )  # fmt: skip
    notes = [pinning, "a weak deliver() then time.sleep(poll), in a loop; no target"]
    print_table("end-to-end latency (no target)", rows, notes)
    emit(args, rows)


if __name__ == "__main__":
    main()
