"""Issue 28: a request's delivery under a 100,000-payload backlog, bounded by default.

One signal holds 100,000 payloads (no-op handler). ``SignalsMiddleware`` with its default
``limit`` (a request takes at most that many payloads of each signal) against ``limit=None``
(the request takes the whole backlog), on memcached and on Redis, the WSGI app called
in-process. Figures: the time of a request that meets the backlog (the median of the first 20
requests when bounded; the first request when unbounded, which delivers everything), and for
the bounded middleware how many requests, and how long, it takes requests alone to drain the
backlog. The signal is undeclared; if the store refuses the backlog on one key (``QueueFull``:
this gaesignals does not spread a signal under size) it is declared with ``shards=16``, and the
table says so.
"""

from __future__ import annotations

import contextlib
import inspect
import time
from collections.abc import Callable

from bench_middleware import app, request
from common import (
    Row,
    Samples,
    arguments,
    emit,
    noop,
    print_table,
    quiet_library,
    ratio_row,
    warm_allocator,
)

import gaesignals
from gaesignals.exceptions import QueueFull
from gaesignals.testing import MemcachedServer, RedisServer

BACKLOG = 100_000
SIGNAL = "bench_mw_backlog"
FIRST_REQUESTS = 20


def bounded_by_default() -> bool:
    """Whether this gaesignals' middleware takes ``limit`` (issue 28)."""
    return "limit" in inspect.signature(gaesignals.SignalsMiddleware).parameters


def fill(flush: Callable[[], object], count: int, notes: list[str]) -> None:
    """``count`` payloads on one signal, undeclared unless the store refuses them on one key."""
    flush()
    gaesignals.registry.clear()
    try:
        _send(count)
    except QueueFull as error:
        note = f"QueueFull undeclared ({error}); declared with shards=16"
        if note not in notes:
            notes.append(note)
        flush()
        gaesignals.declare(SIGNAL, shards=16)
        _send(count)


def _send(count: int) -> None:
    for start in range(0, count, 1_000):
        gaesignals.send_multi([(SIGNAL, n) for n in range(start, min(count, start + 1_000))])


def timed_request(middleware: Callable[..., object]) -> float:
    start = time.perf_counter()
    request(middleware)  # type: ignore[arg-type]
    return time.perf_counter() - start


def measure(flush: Callable[[], object], count: int, notes: list[str]) -> dict[str, float]:
    """One repetition: the bounded middleware's first requests and its drain, then the
    unbounded one's first request."""
    mapping = {SIGNAL: noop}
    got: dict[str, float] = {}
    if bounded_by_default():
        fill(flush, count, notes)
        bounded = gaesignals.SignalsMiddleware(app, mapping)
        firsts = [timed_request(bounded) for _ in range(FIRST_REQUESTS)]
        got["bounded"] = Samples(firsts).median
        got["bounded max"] = max(firsts)
        start, requests = time.perf_counter(), FIRST_REQUESTS
        while bounded.deliver_if_due():  # the requests' delivery alone, until nothing is left
            requests += 1
        got["drain requests"] = requests
        got["drain seconds"] = time.perf_counter() - start + sum(firsts)
    fill(flush, count, notes)
    options = {"limit": None} if bounded_by_default() else {}
    unbounded = gaesignals.SignalsMiddleware(app, mapping, **options)
    got["unbounded"] = timed_request(unbounded)
    return got


def main() -> None:
    args = arguments(__doc__.splitlines()[0])
    warm_allocator()
    quiet_library()
    count = BACKLOG // 10 if args.quick else BACKLOG
    rows: list[Row] = []
    notes: list[str] = []
    with contextlib.ExitStack() as stack:
        memcached = stack.enter_context(MemcachedServer(memory_mb=512))
        redis = stack.enter_context(RedisServer())
        for label, url in (("memcached", memcached.url), ("redis", redis.url)):
            gaesignals.configure(store=url)
            flush = _flusher(label, url)
            reps = [measure(flush, count, notes) for _ in range(args.reps)]
            rows += _rows(f"middleware-backlog/{label}", reps, count)
    notes = [
        "not pinned (2 cores shared with other processes); allocator warmed",
        f"{count:,} payloads pending on one signal; medians of {args.reps} repetitions",
        "bounded: SignalsMiddleware(app, mapping), its default limit; unbounded: limit=None",
        *notes,
    ]
    if not bounded_by_default():
        notes.append("this gaesignals' middleware has no limit: the unbounded rows only")
    print_table("a request's delivery under a backlog (issue 28)", rows, notes)
    emit(args, rows)


def _flusher(label: str, url: str) -> Callable[[], object]:
    from pymemcache.client.base import Client
    from redis import Redis as RedisClient

    host, port = url.rsplit("/", 1)[-1].split(":")
    if label == "memcached":
        return Client((host, int(port))).flush_all
    return RedisClient(host=host, port=int(port)).flushall


def _rows(bench: str, reps: list[dict[str, float]], count: int) -> list[Row]:
    unbounded = Samples([r["unbounded"] for r in reps])
    rows = [Row(bench, "request meeting the backlog, unbounded (limit=None)", _ms(unbounded))]
    if "bounded" in reps[0]:
        bounded = Samples([r["bounded"] for r in reps])
        rows.append(ratio_row(bench, "request under the backlog, default limit (median of "
                              f"{FIRST_REQUESTS})", bounded, unbounded, None,
                              baseline_label="unbounded", fmt=_ms_value))  # fmt: skip
        worst = Samples([r["bounded max"] for r in reps])
        rows.append(Row(bench, "slowest of those requests, default limit", _ms(worst)))
        drained = Samples([r["drain requests"] for r in reps])
        seconds = Samples([r["drain seconds"] for r in reps])
        rows.append(Row(bench, f"requests to drain {count:,} by requests alone",
                        f"{drained.median:,.0f} in {seconds.median:.1f} s"))  # fmt: skip
    return rows


def _ms_value(seconds: float) -> str:
    return f"{seconds * 1e3:.2f} ms"


def _ms(samples: Samples) -> str:
    return _ms_value(samples.median)


if __name__ == "__main__":
    main()
