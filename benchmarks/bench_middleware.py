"""Target 5: what ``SignalsMiddleware`` adds to a request when nothing is pending.

The WSGI app is called in-process (no HTTP server). Cases: the bare app; the middleware with
``interval=0`` (a weak delivery, i.e. one batched read, on every request); the middleware with
``interval=1`` (at most one delivery per second per process); and, as the raw baseline for the
added cost, the bare app plus a raw pymemcache ``get_many`` of the same keys. The mapping has
10 signals; memcached holds nothing for them.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from typing import Any

from common import (
    Memcached,
    RoundTrips,
    Row,
    Samples,
    arguments,
    compare,
    emit,
    library_store,
    loop_time,
    prepare,
    print_table,
    quiet_library,
    ratio_row,
    raw_client,
    us,
)

import gaesignals
from gaesignals.keys import signal_keys

SIGNALS = 10
ENVIRON = {
    "REQUEST_METHOD": "GET",
    "PATH_INFO": "/",
    "SERVER_NAME": "localhost",
    "SERVER_PORT": "80",
    "SERVER_PROTOCOL": "HTTP/1.1",
    "wsgi.url_scheme": "http",
}


def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "2")])
    return [b"ok"]


def start_response(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> None:
    return None


def request(wsgi: Callable[..., Iterable[bytes]]) -> None:
    body = wsgi(dict(ENVIRON), start_response)
    for _ in body:
        pass


def handler(data: Any) -> None:
    return None


def main() -> None:
    args = arguments(__doc__.splitlines()[0])
    pinning = prepare()
    quiet_library()
    bench = "middleware/memcached"
    names = [f"bench_mw_{i}" for i in range(SIGNALS)]
    keys = [signal_keys(name, "").queue for name in names]
    mapping = {name: handler for name in names}
    count = 500 if args.quick else 4000
    with Memcached() as server:
        trips = RoundTrips()
        gaesignals.configure(store=library_store(server.port, trips))
        raw = raw_client(server.port)
        every = gaesignals.SignalsMiddleware(app, mapping)
        timed = gaesignals.SignalsMiddleware(app, mapping, interval=1)

        def raw_then_app(environ: dict[str, Any], respond: Callable[..., Any]) -> Iterable[bytes]:
            raw.get_many(keys)
            return app(environ, respond)

        request(every)
        request(raw_then_app)
        trips.reset()
        for _ in range(100):
            request(every)
        every_trips = trips.count / 100
        trips.reset()
        timed_requests = 0
        window = time.monotonic() + (1.2 if args.quick else 2.5)
        while time.monotonic() < window:  # bounded by the clock
            for _ in range(100):
                request(timed)
            timed_requests += 100
        timed_trips = trips.count

        def case(wsgi: Callable[..., Iterable[bytes]]) -> Callable[[], float]:
            return lambda: loop_time(lambda: request(wsgi), count) / count

        got = compare(
            {
                "bare": case(app),
                "every": case(every),
                "timed": case(timed),
                "raw": case(raw_then_app),
            },
            args.reps,
        )

    def added(samples: Samples) -> Samples:
        return Samples([x - b for x, b in zip(samples.values, got["bare"].values, strict=True)])

    def rps(samples: Samples) -> str:
        return f"{1 / samples.median:,.0f} req/s"

    raw_added = added(got["raw"])
    rows = [
        Row(bench, "bare app", rps(got["bare"]), "", "", "", "info"),
        Row(bench, "middleware, interval=0", rps(got["every"]), "", "", "", "info"),
        Row(bench, "middleware, interval=1", rps(got["timed"]), "", "", "", "info"),
        Row(bench, "bare app + raw get_many", rps(got["raw"]), "", "", "", "info"),
        Row(bench, "round trips per request, interval=0", f"{every_trips:.2f}",
            "1 (raw get_many)", "", "== 1", "PASS" if every_trips == 1 else "MISS"),
        Row(bench, "round trips, interval=1", f"{timed_trips} in {timed_requests:,} requests",
            "", "", "<= 1 per second",
            "PASS" if timed_trips <= 3 else "MISS"),
        ratio_row(bench, "added per request, interval=0", added(got["every"]), raw_added, None,
                  baseline_label="raw get_many"),
        ratio_row(bench, "added per request, interval=1", added(got["timed"]), raw_added, None,
                  baseline_label="raw get_many"),
    ]  # fmt: skip
    notes = [
        pinning,
        f"{SIGNALS} signals mapped, none pending; {count} requests per batch, medians of "
        f"{args.reps} repetitions; bare app {us(got['bare'].median)} per request",
        "'added' = per-request time minus the bare app's, per repetition",
    ]
    print_table("middleware (target 5)", rows, notes)
    emit(args, rows)


if __name__ == "__main__":
    main()
