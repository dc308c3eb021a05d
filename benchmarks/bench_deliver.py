"""Targets 2 and 3: a weak delivery of 100 signals, and the per-payload cost of a drain.

Target 2: ``deliver`` of 100 non-empty signals (one payload each) on memcached, against a raw
pymemcache ``get_many`` of the same 100 keys holding the same bytes, and the same delivery when
it is a sweep (once per ``lost_check_interval``: all 16 keys each signal's senders may use).
Round trips are socket ``sendall`` calls.

Target 3: one signal holding many small payloads, drained by a weak ``deliver`` with a no-op
handler, per payload, against a bare ``pickle.loads`` of the same pickles; on the memory store
and on memcached, with and without a secret key. Then where the time goes: cProfile of the
drain, and the drain split into ``frames.parse`` and the decode + handler step.

Hostile values: reading 1 MB of repeated frame magic, or of a plausible frame header over and
over, against reading 1 MB of random garbage (``frames.parse_queue``, with a secret key).
"""

from __future__ import annotations

import cProfile
import hashlib
import hmac
import pickle
import pstats
import random
import time
import zlib
from collections.abc import Callable
from typing import Any

from common import (
    PAYLOAD,
    PICKLE_PROTOCOL,
    SECRET,
    Memcached,
    Redis,
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
from gaesignals import frames
from gaesignals.config import get_settings
from gaesignals.delivery.runner import Runner
from gaesignals.keys import signal_keys
from gaesignals.queue import spread
from gaesignals.registration import registry
from gaesignals.stores.memory import MemoryStore
from gaesignals.stores.redis import RedisStore
from gaesignals.stores.redis._router import Router

SIGNALS = 100
FILL_CHUNK = 500


def noop(data: Any) -> None:
    return None


# -- target 2 -------------------------------------------------------------------------------------


def weak_rows(args: Any, server: Memcached) -> list[Row]:
    bench = "deliver/memcached"
    trips = RoundTrips()
    gaesignals.configure(store=library_store(server.port, trips))
    raw = raw_client(server.port)
    names = [f"bench_many_{i}" for i in range(SIGNALS)]
    keys = [signal_keys(name, "").queue for name in names]
    mapping = gaesignals.SignalMapping({name: noop for name in names})
    batch = [(name, PAYLOAD) for name in names]

    def fill() -> None:
        gaesignals.send_multi(batch)

    fill()
    gaesignals.deliver(mapping)  # connect; every key now exists, empty
    fill()
    trips.reset()
    delivered = gaesignals.deliver(mapping)
    deliver_trips = trips.count
    fill()
    raw.get_many(keys)
    trips.reset()
    fill()
    fill_trips = trips.count

    per_rep = 10 if args.quick else 40

    def lib() -> float:
        spent = 0.0
        for _ in range(per_rep):
            fill()
            start = time.perf_counter()
            gaesignals.deliver(mapping)
            spent += time.perf_counter() - start
        return spent / per_rep

    # A delivery is a sweep (every key a hot signal may use: 16 per signal) when the sweep
    # clock has moved an interval on since the last: here it jumps before each timed one.
    ahead = [0.0]
    spread._monotonic = lambda: time.monotonic() + ahead[0]

    def sweeping() -> float:
        spent = 0.0
        for _ in range(per_rep):
            fill()
            ahead[0] += 3600
            start = time.perf_counter()
            gaesignals.deliver(mapping)
            spent += time.perf_counter() - start
        return spent / per_rep

    def base() -> float:
        spent = 0.0
        for _ in range(per_rep):
            gaesignals.deliver(mapping)  # untimed: the keys then hold what lib() reads, one
            fill()  # payload each (without it they would grow on every repetition)
            start = time.perf_counter()
            raw.get_many(keys)
            spent += time.perf_counter() - start
        return spent / per_rep

    got = compare({"lib": lib, "sweep": sweeping, "raw": base}, args.reps)
    ok = deliver_trips == 2 and delivered == SIGNALS
    gaesignals.deliver(mapping)  # empties what the timed runs left
    fill()
    ahead[0] += 3600
    trips.reset()
    swept = gaesignals.deliver(mapping)
    sweep_trips = trips.count
    sweep_ok = sweep_trips == 2 and swept == SIGNALS
    spread._monotonic = time.monotonic
    # One signal on 16 shards, a payload on each: still one batched read and one reset.
    from gaesignals.queue.routing import queues_of

    gaesignals.declare("bench_sharded", shards=16)
    sharded = queues_of("bench_sharded", get_settings())
    gaesignals.send("bench_sharded", PAYLOAD)
    gaesignals.deliver({"bench_sharded": noop})  # a signal's first delivery creates its counters
    gaesignals.send("bench_sharded", PAYLOAD)
    frame = next(v for v in (raw.get(key) for key in sharded) if v)
    raw.set_many(dict.fromkeys(sharded, frame))
    trips.reset()
    sharded_delivered = gaesignals.deliver({"bench_sharded": noop})
    sharded_trips = trips.count
    sharded_ok = sharded_trips == 2 and sharded_delivered == 16
    # Half the signals hold a payload due in an hour beside one due now: the same two round
    # trips, the delayed ones kept by the resets.
    gaesignals.deliver(mapping)
    gaesignals.send_multi(batch[: SIGNALS // 2], delay=3600)
    fill()
    trips.reset()
    delayed_delivered = gaesignals.deliver(mapping)
    delayed_trips = trips.count
    delayed_ok = delayed_trips == 2 and delayed_delivered == SIGNALS
    return [
        Row(bench, f"round trips, weak deliver of {SIGNALS} non-empty signals",
            f"{deliver_trips} ({delivered} delivered)", "1 (raw get_many)", "", "== 2 (gets, cas)",
            "PASS" if ok else "MISS"),
        Row(bench, f"round trips, send_multi to {SIGNALS} signals", str(fill_trips), "", "",
            "== 1", "PASS" if fill_trips == 1 else "MISS"),
        Row(bench, "round trips, weak deliver of one signal with 16 non-empty shards",
            f"{sharded_trips} ({sharded_delivered} delivered)", "", "", "== 2 (gets, cas)",
            "PASS" if sharded_ok else "MISS"),
        Row(bench, f"round trips, weak deliver of {SIGNALS} signals, half with a delayed payload",
            f"{delayed_trips} ({delayed_delivered} delivered)", "", "", "== 2 (gets, cas)",
            "PASS" if delayed_ok else "MISS"),
        ratio_row(bench, f"weak deliver of {SIGNALS} signals", got["lib"], got["raw"], 2.5,
                  baseline_label="get_many"),
        Row(bench, f"round trips, a sweep of {SIGNALS} signals (16 keys each)",
            f"{sweep_trips} ({swept} delivered)", "", "", "== 2 (gets, cas)",
            "PASS" if sweep_ok else "MISS"),
        ratio_row(bench, f"a sweep of {SIGNALS} signals, once per lost_check_interval",
                  got["sweep"], got["raw"], None, baseline_label="get_many"),
    ]  # fmt: skip


class _CountingRouter(Router):
    """Counts the pipelines a Redis store sends: one per server per round trip."""

    pipelines = 0

    def _pipeline(self, node: Any, group: list[Any]) -> list[Any]:
        self.pipelines += 1
        return super()._pipeline(node, group)


class _CountedRedis(RedisStore):
    Router = _CountingRouter


def weak_rows_redis(args: Any, server: Redis) -> list[Row]:
    """Weak delivery of 100 signals on Redis (one script per signal, one pipeline) against
    the raw atomic take: a pipeline of GETDEL, one per key."""
    bench = "deliver/redis"
    store = _CountedRedis(RedisStore.from_url(server.url).client)
    router = store.router
    assert isinstance(router, _CountingRouter)
    gaesignals.configure(store=store, secret_key=None)
    raw = store.client
    names = [f"bench_many_{i}" for i in range(SIGNALS)]
    keys = [signal_keys(name, "").queue for name in names]
    mapping = gaesignals.SignalMapping({name: noop for name in names})
    batch = [(name, PAYLOAD) for name in names]
    gaesignals.send_multi(batch)
    gaesignals.deliver(mapping)  # the scripts loaded, every signal's counters made
    gaesignals.send_multi(batch)
    router.pipelines = 0
    delivered = gaesignals.deliver(mapping)
    trips = router.pipelines
    per_rep = 10 if args.quick else 40

    def lib() -> float:
        spent = 0.0
        for _ in range(per_rep):
            gaesignals.send_multi(batch)
            start = time.perf_counter()
            gaesignals.deliver(mapping)
            spent += time.perf_counter() - start
        return spent / per_rep

    def base() -> float:
        spent = 0.0
        for _ in range(per_rep):
            gaesignals.send_multi(batch)
            start = time.perf_counter()
            pipe = raw.pipeline(transaction=False)
            for key in keys:
                pipe.getdel(key)
            pipe.execute()
            spent += time.perf_counter() - start
        return spent / per_rep

    got = compare({"lib": lib, "raw": base}, args.reps)
    store.close()
    return [
        Row(bench, f"round trips, weak deliver of {SIGNALS} non-empty signals",
            f"{trips} ({delivered} delivered)", "1 (raw GETDEL pipeline)", "", "== 1",
            "PASS" if trips == 1 and delivered == SIGNALS else "MISS"),
        ratio_row(bench, f"weak deliver of {SIGNALS} signals", got["lib"], got["raw"], 2.5,
                  baseline_label="GETDEL x100"),
    ]  # fmt: skip


# -- target 3 -------------------------------------------------------------------------------------


class Drain:
    """One signal with ``count`` pending payloads, refilled to the same bytes before a drain."""

    name = "bench_drain"

    def __init__(self, store: Any, count: int, secret: bool) -> None:
        gaesignals.configure(store=store, secret_key=SECRET if secret else None)
        self.store = store
        self.count = count
        self.key = signal_keys(self.name, "").queue
        self.mapping = gaesignals.SignalMapping({self.name: noop})
        for start in range(0, count, FILL_CHUNK):
            gaesignals.send_multi([(self.name, PAYLOAD)] * min(FILL_CHUNK, count - start))
        with store.connection() as conn:
            self.value = conn.gets_many([self.key])[self.key][0]
        self.bodies = [pickle.dumps(PAYLOAD, protocol=PICKLE_PROTOCOL)] * count
        self.delivered = 0

    def refill(self) -> None:
        with self.store.connection() as conn:
            conn.set_many({self.key: self.value})

    def drain(self) -> float:
        self.refill()
        start = time.perf_counter()
        self.delivered = gaesignals.deliver(self.mapping)
        return (time.perf_counter() - start) / self.count

    def loads(self) -> float:
        loads = pickle.loads
        start = time.perf_counter()
        for body in self.bodies:
            loads(body)
        return (time.perf_counter() - start) / self.count

    def parse(self) -> float:
        """What weak delivery parses: frames.pickled_bodies (internal API), else frames.parse."""
        settings = get_settings()
        start = time.perf_counter()
        if frames.pickled_bodies(self.value, self.key.encode(), settings.secret_keys) is None:
            frames.parse(self.value, self.key.encode(), settings.secret_keys)
        return (time.perf_counter() - start) / self.count

    def run(self) -> float:
        """Decode + handlers for every payload, as weak delivery does after parsing (internal
        API: the runner's drain of the parsed bodies or frames)."""
        settings = get_settings()
        runner = Runner(
            self.name, self.mapping.handlers(self.name), settings, registry.spec(self.name)
        )
        bodies = frames.pickled_bodies(self.value, runner.signature_name, settings.secret_keys)
        found = (
            bodies
            if bodies is not None and runner.bodies_suffice
            else runner.parse_all(self.value)[0]
        )
        start = time.perf_counter()
        runner.drain(found)
        return (time.perf_counter() - start) / self.count


def repeat(fn: Callable[[], float], times: int) -> Callable[[], float]:
    def batch() -> float:
        return sum(fn() for _ in range(times)) / times

    return batch


def drain_rows(args: Any, server: Memcached) -> tuple[list[Row], list[str]]:
    count = 1000 if args.quick else 2000
    times = 3 if args.quick else 5
    rows: list[Row] = []
    profile_lines: list[str] = []
    stores: list[tuple[str, Callable[[], Any]]] = [
        ("memory", MemoryStore),
        ("memcached", lambda: library_store(server.port)),
    ]
    for label, make in stores:
        for secret in (False, True):
            setup = Drain(make(), count, secret)
            got = compare(
                {
                    "drain": repeat(setup.drain, times),
                    "loads": repeat(setup.loads, times),
                    "parse": repeat(setup.parse, times),
                    "run": repeat(setup.run, times),
                },
                args.reps,
            )
            if setup.delivered != count:
                print(f"!! {label}: delivered {setup.delivered} of {count}")
            what = f"drain per payload, {label}, {'signed' if secret else 'unsigned'}"
            bench = f"drain/{label}"
            rows.append(
                ratio_row(bench, what, got["drain"], got["loads"], 2.0,
                          baseline_label="pickle.loads", fmt=ns)
            )  # fmt: skip
            rows.append(
                ratio_row(bench, "  of which parsing", got["parse"], got["loads"], None,
                          baseline_label="pickle.loads", fmt=ns)
            )  # fmt: skip
            rows.append(
                ratio_row(bench, "  of which decode+handler (Runner.drain)", got["run"],
                          got["loads"], None, baseline_label="pickle.loads", fmt=ns)
            )  # fmt: skip
            rest = Samples(
                [
                    max(d - p - r, 1e-12)
                    for d, p, r in zip(
                        got["drain"].values, got["parse"].values, got["run"].values, strict=True
                    )
                ]
            )
            rows.append(
                ratio_row(bench, "  rest (store calls, logging, loop)", rest, got["loads"],
                          None, baseline_label="pickle.loads", fmt=ns)
            )  # fmt: skip
            if label == "memcached" or not secret:
                profile_lines += profile(setup, f"{label}, {'signed' if secret else 'unsigned'}")
    return rows, profile_lines


#: Values of hostile garbage read against random garbage of the same size.
GARBAGE = {
    "repeated frame magic": frames.MAGIC,
    "a plausible header repeated (length past the end)": frames.MAGIC + b"\x03\x00",
    "a plausible header repeated (seal fails)": frames.MAGIC + b"\x03\x00" + bytes(8),
}


def garbage_rows(args: Any) -> list[Row]:
    """Reading 1 MB of each hostile pattern against reading 1 MB of random garbage."""
    size = 1 << 20
    key = signal_keys("bench_garbage", "").queue.encode()

    def reading(value: bytes) -> Callable[[], float]:
        def once() -> float:
            start = time.perf_counter()
            frames.parse_queue(value, key, (SECRET.encode(),))
            return time.perf_counter() - start

        return once

    values = {"random": random.Random(27).randbytes(size)}
    for name, pattern in GARBAGE.items():
        values[name] = (pattern * (size // len(pattern) + 1))[:size]
    got = compare({name: reading(value) for name, value in values.items()}, args.reps)
    return [
        ratio_row("garbage", f"read 1 MB of {name}", got[name], got["random"], 2.0,
                  baseline_label="1 MB random")
        for name in GARBAGE
    ]  # fmt: skip


def ns(seconds: float) -> str:
    return f"{seconds * 1e9:.0f} ns" if seconds < 1e-5 else us(seconds)


def profile(setup: Drain, label: str, top: int = 8) -> list[str]:
    """cProfile of a few drains: the functions with the most own time, per payload."""
    drains = 5
    profiler = cProfile.Profile()
    for _ in range(drains):
        setup.refill()
        profiler.enable()
        gaesignals.deliver(setup.mapping)
        profiler.disable()
    stats = pstats.Stats(profiler)
    entries = []
    for (filename, line, func), (_, calls, own, cumulative, _) in stats.stats.items():  # type: ignore[attr-defined]
        where = func if filename == "~" else f"{filename.rsplit('/', 2)[-1]}:{line}({func})"
        entries.append((own, cumulative, calls, where))
    entries.sort(reverse=True)
    payloads = drains * setup.count
    total = sum(e[0] for e in entries)
    lines = [f"profile of the drain ({label}), own time per payload under cProfile:"]
    for own, cumulative, calls, where in entries[:top]:
        lines.append(
            f"  {own / payloads * 1e9:7.0f} ns  {own / total:5.1%}  "
            f"(cum {cumulative / payloads * 1e9:6.0f} ns, {calls / payloads:.2f} calls/payload)"
            f"  {where}"
        )
    return lines


def primitive_lines() -> list[str]:
    """What the steps of frames.parse and the drain cost in isolation, per payload."""

    body = pickle.dumps(PAYLOAD, protocol=PICKLE_PROTOCOL)
    key = b"gs::q:bench_drain"
    secret = SECRET.encode()
    value = frames.encode(body, key, (secret,))
    header = frames.HEADER
    ident = value[10:18]
    tag = value[18:50]
    version_flags = value[2:4]
    inner = hmac.new(secret, digestmod=hashlib.sha256)
    steps: list[tuple[str, Callable[[], object]]] = [
        ("pickle.loads (the baseline)", lambda: pickle.loads(body)),
        ("header unpack_from", lambda: header.unpack_from(value, 0)),
        ("zlib.crc32 over the frame (the seal check, one call per value)", lambda: zlib.crc32(
            value, frames.SEALED)),
        ("3 slices (version_flags, tag, body)", lambda: (value[2:4], value[18:50], value[50:-4])),
        ("Frame(...) NamedTuple", lambda: frames.Frame(0, 1, 0, 0, ident, body)),
        ("  tuple.__new__(Frame, ...) (the library's fast path)", lambda: tuple.__new__(
            frames.Frame, (0, 1, 0, 0, ident, body))),
        ("the library's tag: copied keyed BLAKE2b state (frames.signing._tag; signed only)",
         lambda: frames.signing._tag(secret, key, version_flags + ident + body)),
        ("  alternative: hmac.digest sha256", lambda: hmac.digest(
            secret, key + b"\x00" + version_flags + ident + body, hashlib.sha256)),
        ("  alternative: precomputed hmac .copy()",
         lambda: _hmac_copy(inner, key, version_flags, ident, body)),
        ("  alternative: blake2b(key=...) from scratch", lambda: hashlib.blake2b(
            key + b"\x00" + version_flags + ident + body, key=secret, digest_size=32).digest()),
        ("hmac.compare_digest", lambda: hmac.compare_digest(tag, tag)),
        ("getattr(handler, '__gaesignals_pass_name__')", lambda: getattr(
            noop, "__gaesignals_pass_name__", False)),
        ("handler call (no-op)", lambda: noop(body)),
    ]  # fmt: skip
    lines = ["cost of the steps of frames.parse and the drain per payload, in isolation:"]
    for label, fn in steps:
        best = min(loop_time(fn, 20000) for _ in range(5)) / 20000
        lines.append(f"  {best * 1e9:7.0f} ns  {label}")
    return lines


def _hmac_copy(inner: Any, key: bytes, version_flags: bytes, ident: bytes, body: bytes) -> bytes:
    mac = inner.copy()
    mac.update(key + b"\x00" + version_flags + ident + body)
    digest: bytes = mac.digest()
    return digest


def main() -> None:
    args = arguments(__doc__.splitlines()[0])
    pinning = prepare()
    quiet_library()
    with Memcached() as server:
        rows = weak_rows(args, server)
        drain, profile_lines = drain_rows(args, server)
        rows += drain
    rows += garbage_rows(args)
    with Redis() as redis_server:
        rows += weak_rows_redis(args, redis_server)
    count = 1000 if args.quick else 2000
    notes = [
        pinning,
        f"medians of {args.reps} repetitions; drains of {count} payloads of {PAYLOAD!r}",
        "parse/run split: weak delivery's parsing of the whole value (frames.pickled_bodies, "
        "else frames.parse) and its runner's drain of what that gave, timed apart from the "
        "drain; 'rest' = drain - parse - run",
    ]
    print_table("weak delivery and drain (targets 2, 3)", rows, notes)
    print()
    try:
        profile_lines += primitive_lines()
    except Exception as error:  # internal names moved: the figures above still stand
        profile_lines.append(f"(step costs skipped: {error!r})")
    for line in profile_lines:
        print(line)
    emit(args, rows)


if __name__ == "__main__":
    main()
