"""Item 6: a send side by side with other deferred-work libraries' enqueue calls.

gaesignals ``send`` on memcached against huey (``RedisHuey``) task enqueue, RQ
``Queue.enqueue`` and Celery ``apply_async`` on a Redis broker, each library as it comes;
gaesignals ``send`` on the App Engine testbed against ``deferred.defer`` on its task queue
stub. The raw minimal calls (pymemcache ``append``, redis-py ``rpush``) are there for scale.
redis-server runs on a free loopback port started here. A peer that cannot be imported is
skipped with a message. Every call enqueues the same small payload for a no-op function.
"""

from __future__ import annotations

import contextlib
import pickle
import shutil
import socket
from collections.abc import Callable

from common import (
    PAYLOAD,
    PICKLE_PROTOCOL,
    Memcached,
    Redis,
    Row,
    appengine_testbed,
    arguments,
    compare,
    emit,
    library_store,
    loop_time,
    noop,
    prepare,
    print_table,
    quiet_library,
    ratio_row,
    raw_client,
)

import gaesignals


def calibrated(fn: Callable[[], object], budget: float) -> Callable[[], float]:
    """A batch of calls of ``fn`` sized to take about ``budget`` seconds (at most 2,000 calls,
    so appended values stay small); returns s/call."""
    trial = loop_time(fn, 20) / 20
    count = max(20, min(2_000, int(budget / max(trial, 1e-7))))
    return lambda: loop_time(fn, count) / count


def redis_commands(port: int) -> int:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(b"INFO stats\r\n")
        data = b""
        while b"total_commands_processed" not in data or not data.endswith(b"\r\n"):
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
    for line in data.decode().splitlines():
        if line.startswith("total_commands_processed:"):
            return int(line.split(":")[1])
    return -1


def commands_per_call(port: int, fn: Callable[[], object], calls: int = 50) -> float:
    before = redis_commands(port)
    for _ in range(calls):
        fn()
    return (redis_commands(port) - before - 1) / calls  # the second INFO counts itself


def redis_peers(port: int, skipped: list[str]) -> dict[str, Callable[[], object]]:
    peers: dict[str, Callable[[], object]] = {}
    try:
        from redis import Redis as RedisClient

        client = RedisClient(host="127.0.0.1", port=port)
        peers["raw redis-py rpush (dumps+rpush)"] = lambda: client.rpush(
            "bench_raw", pickle.dumps(PAYLOAD, protocol=PICKLE_PROTOCOL)
        )
    except ImportError as error:
        skipped.append(f"redis-py: {error}")
    try:
        from huey import RedisHuey

        huey = RedisHuey("bench", host="127.0.0.1", port=port)
        task = huey.task()(noop)
        peers["huey task() enqueue"] = lambda: task(PAYLOAD)
    except ImportError as error:
        skipped.append(f"huey: {error}")
    try:
        from redis import Redis as RedisClient
        from rq import Queue

        queue = Queue("bench", connection=RedisClient(host="127.0.0.1", port=port))
        peers["RQ Queue.enqueue"] = lambda: queue.enqueue(noop, PAYLOAD)
    except ImportError as error:
        skipped.append(f"rq: {error}")
    try:
        from celery import Celery

        app = Celery("bench", broker=f"redis://127.0.0.1:{port}/0")
        celery_task = app.task(noop, name="bench.noop")
        peers["Celery apply_async"] = lambda: celery_task.apply_async((PAYLOAD,))
    except ImportError as error:
        skipped.append(f"celery: {error}")
    return peers


def main() -> None:
    args = arguments(__doc__.splitlines()[0])
    pinning = prepare()
    quiet_library()
    budget = 0.03 if args.quick else 0.1
    skipped: list[str] = []
    rows: list[Row] = []
    extra: list[str] = []
    with contextlib.ExitStack() as stack:
        server = stack.enter_context(Memcached())
        redis: Redis | None = None
        if shutil.which("redis-server"):
            redis = stack.enter_context(Redis())
        else:
            skipped.append("huey, RQ, Celery: redis-server is not installed")
        gaesignals.configure(store=library_store(server.port))
        raw = raw_client(server.port)
        raw.set("bench_raw", b"")
        signal = gaesignals.Signal("bench_peers")

        def raw_append() -> None:
            raw.append("bench_raw", pickle.dumps(PAYLOAD, protocol=PICKLE_PROTOCOL))

        calls: dict[str, Callable[[], object]] = {
            "gaesignals send (memcached)": lambda: signal.send(PAYLOAD),
            "raw pymemcache (dumps+append)": raw_append,
            **(redis_peers(redis.port, skipped) if redis else {}),
        }
        for fn in calls.values():  # connect, import, warm up
            for _ in range(5):
                fn()
        for name, fn in calls.items():
            if redis and ("redis" in name or name.split()[0] in ("huey", "RQ", "Celery")):
                extra.append(f"{name}: {commands_per_call(redis.port, fn):.1f} Redis commands")

        def reset() -> None:
            raw.set("bench_raw", b"")
            raw.set("gs::q:bench_peers", b"")
            if redis:
                redis_flush(redis.port)

        batches = {name: calibrated(fn, budget) for name, fn in calls.items()}
        got = compare({name: with_reset(reset, batch) for name, batch in batches.items()},
                      args.reps)  # fmt: skip
    reference = got["gaesignals send (memcached)"]
    for name, samples in got.items():
        rows.append(ratio_row("peers/redis+memcached", name, samples, reference, None,
                              baseline_label="gaesignals send"))  # fmt: skip

    with appengine_testbed(taskqueue=True) as bed:
        from gaesignals.stores.appengine import AppEngineStore

        gaesignals.configure(store=AppEngineStore())
        ae_calls: dict[str, Callable[[], object]] = {
            "gaesignals send (App Engine stub)": lambda: signal.send(PAYLOAD)
        }
        try:
            from google.appengine.ext import deferred

            ae_calls["deferred.defer (task queue stub)"] = lambda: deferred.defer(noop, PAYLOAD)
        except ImportError as error:
            skipped.append(f"deferred: {error}")
        for fn in ae_calls.values():
            fn()
        taskqueue = bed.get_stub("taskqueue")

        def ae_reset() -> None:
            from google.appengine.api import memcache

            memcache.flush_all()
            taskqueue.FlushQueue("default")

        ae_batches = {name: calibrated(fn, budget) for name, fn in ae_calls.items()}
        ae_got = compare(
            {name: with_reset(ae_reset, batch) for name, batch in ae_batches.items()}, args.reps
        )
    ae_reference = ae_got["gaesignals send (App Engine stub)"]
    for name, samples in ae_got.items():
        rows.append(ratio_row("peers/appengine-stub", name, samples, ae_reference, None,
                              baseline_label="gaesignals send"))  # fmt: skip
    notes = [
        pinning,
        f"per call, medians of {args.reps} repetitions; ratio = peer / gaesignals send on the "
        "same backend kind",
        *extra,
        *(f"skipped {s}" for s in skipped),
    ]
    print_table("send vs other libraries' enqueue (item 6)", rows, notes)
    emit(args, rows)


def with_reset(reset: Callable[[], None], batch: Callable[[], float]) -> Callable[[], float]:
    def run() -> float:
        reset()
        return batch()

    return run


def redis_flush(port: int) -> None:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(b"FLUSHALL\r\n")
        sock.recv(64)


if __name__ == "__main__":
    main()
