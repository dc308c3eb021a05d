"""Target 1: the cost of a send, and how it grows with the payloads already pending.

memcached: ``Signal.send`` against ``pickle.dumps`` + a raw pymemcache ``append`` (the minimal
work: serialize, one round trip). App Engine (testbed stub): against ``pickle.dumps`` + raw
``gets`` + ``cas`` through ``memcache.Client()`` (no atomic append there).

"0 pending" is a key that exists and is empty, as a weak delivery leaves it; a missing key
costs one more round trip (append refused, then add) and is counted separately. Pending
payloads are sent to the same signal first (``send_multi`` in chunks) and the key is restored
to exactly that value before every chunk of timed sends, so the level stays put. A queue past
64 KiB is kept in segments (see ``gaesignals.stores.segments``): the restored value is then
the queue key's own (its pointers, with memcached's flags, and the frames after them; the
segments stay where they are), and the raw baseline's key holds the whole joined value, as one
ever-growing key would.
"""

from __future__ import annotations

import importlib
import json
import pickle
import resource
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

from common import (
    PAYLOAD,
    PICKLE_PROTOCOL,
    Memcached,
    RoundTrips,
    Row,
    Samples,
    appengine_testbed,
    arguments,
    compare,
    emit,
    library_store,
    loop_time,
    pin_client,
    prepare,
    print_table,
    quiet_library,
    ratio_row,
    raw_client,
)

import gaesignals
from gaesignals.keys import signal_keys
from gaesignals.stores import segments

NAME = "bench_send"
SHARDED = "bench_send_sharded"
SHARDS = 16
LEVELS = (0, 1_000, 10_000)
FILL_CHUNK = 500
SHARDED_FILL_CHUNK = 100


def fill(count: int, restore: Callable[[bytes], None], read: Callable[[], bytes]) -> bytes:
    """Send ``count`` payloads to NAME (after emptying it) and return the key's value."""
    restore(b"")
    for start in range(0, count, FILL_CHUNK):
        gaesignals.send_multi([(NAME, PAYLOAD)] * min(FILL_CHUNK, count - start))
    return read()


def joined_value(key: str) -> bytes:
    """The queue at ``key`` as the library reads it: its segments joined, then its frames."""
    with gaesignals.config.get_settings().store.connection() as conn:
        item = conn.gets_many([key]).get(key)
    return b"" if item is None else item[0]


def chunked(total: int, chunk: int, reset: Callable[[], None], body: Callable[[], object]):
    """A batch of ``total`` operations in chunks, ``reset`` (untimed) before each chunk."""

    def batch() -> float:
        spent = 0.0
        for _ in range(max(1, total // chunk)):
            reset()
            spent += loop_time(body, chunk)
        return spent / (max(1, total // chunk) * chunk)

    return batch


def sharded_rows(
    args,
    bench: str,
    set_values: Callable[[dict[str, bytes]], object],
    get_value: Callable[[str], bytes],
    baseline: Samples,
    baseline_label: str,
) -> list[Row]:
    """Send to a signal declared with SHARDS shards, at 0 and 10,000 pending.

    The backlog is what one sender leaves with no deliverer running: ``send_multi`` of
    SHARDED_FILL_CHUNK payloads at a time, the library choosing the shards (a thread moves on
    once its shard holds SHARD_ROLL_BYTES), so the figures include its uneven spread. Every
    shard is restored to its filled value before each chunk of timed sends.
    """
    from gaesignals.config import get_settings
    from gaesignals.queue.routing import queues_of

    gaesignals.declare(SHARDED, shards=SHARDS)
    queues = queues_of(SHARDED, get_settings())
    signal = gaesignals.Signal(SHARDED)
    per_level: dict[int, Samples] = {}
    largest: dict[int, int] = {}
    for level in (0, 10_000):
        set_values(dict.fromkeys(queues, b""))
        for start in range(0, level, SHARDED_FILL_CHUNK):
            gaesignals.send_multi([(SHARDED, PAYLOAD)] * min(SHARDED_FILL_CHUNK, level - start))
        values = {queue: get_value(queue) for queue in queues}
        largest[level] = max(len(v) for v in values.values())
        n = 2000 if level == 0 else 500
        n = n // 4 if args.quick else n

        def send_once() -> None:
            signal.send(PAYLOAD)

        per_level[level] = compare(
            {"lib": chunked(n, 50, lambda v=values: set_values(v), send_once)}, args.reps
        )["lib"]
    label = f"sharded ({SHARDS})"
    return [
        ratio_row(bench, f"{label}: send, 0 pending", per_level[0], baseline, None,
                  baseline_label=baseline_label),
        ratio_row(bench, f"{label}: send, 10,000 pending", per_level[10_000], baseline, None,
                  baseline_label=baseline_label),
        ratio_row(bench, f"{label}: send at 10,000 vs at 0 pending", per_level[10_000],
                  per_level[0], 1.3, baseline_label="(at 0)"),
        Row(bench, f"{label}: largest shard at 10,000 pending",
            f"{largest[10_000]:,} bytes", f"{sum(1 for _ in queues)} shards"),
    ]  # fmt: skip


def memcached_rows(args, server: Memcached) -> list[Row]:
    bench = "send/memcached"
    trips = RoundTrips()
    store = library_store(server.port, trips)
    gaesignals.configure(store=store)
    raw = raw_client(server.port)
    key = signal_keys(NAME, "").queue
    raw_key = "bench_raw_append"
    signal = gaesignals.Signal(NAME)
    rows: list[Row] = []

    # Round trips of one send: key present (empty), key missing.
    raw.set(key, b"")
    signal.send(PAYLOAD)  # connect outside the count
    raw.set(key, b"")
    trips.reset()
    signal.send(PAYLOAD)
    present = trips.count
    raw.delete(key)
    trips.reset()
    signal.send(PAYLOAD)
    missing = trips.count
    rows.append(
        Row(
            bench,
            "round trips per send, key present",
            str(present),
            "1 (raw append)",
            "",
            "== 1",
            "PASS" if present == 1 else "MISS",
        )
    )
    rows.append(
        Row(
            bench,
            "round trips per send, key missing",
            str(missing),
            "",
            "",
            "== 2 (append, add)",
            "PASS" if missing == 2 else "MISS",
        )
    )

    ops = 600 if args.quick else 2000
    chunk = 100
    per_level = {}
    for level in LEVELS:
        value = fill(level, lambda v: raw.set(key, v), lambda: raw.get(key) or b"")
        joined = joined_value(key)
        raw.set(raw_key, joined)
        flags = segments.spilled_size(value) - len(value)  # what the library's cas set
        n = ops if level == 0 else ops // 4
        step = chunk if level == 0 else 50

        def send_once() -> None:
            signal.send(PAYLOAD)

        def raw_once() -> None:
            raw.append(raw_key, pickle.dumps(PAYLOAD, protocol=PICKLE_PROTOCOL))

        cases = {
            "lib": chunked(n, step, lambda v=value, f=flags: raw.set(key, v, flags=f), send_once),
            "raw": chunked(n, step, lambda v=joined: raw.set(raw_key, v), raw_once),
        }
        per_level[level] = compare(cases, args.reps)
    zero = per_level[0]
    rows += pending_rows(bench, per_level, "dumps+append", "append")
    rows += sharded_rows(
        args, bench, raw.set_many, lambda key: raw.get(key) or b"", zero["raw"], "dumps+append"
    )
    rows += diagnostics(args, server, signal, raw)
    return rows


def diagnostics(args, server: Memcached, signal, raw) -> list[Row]:
    """Evidence for the report: the same send measured in a fresh process, whose allocator
    has not yet served (and freed) a large block, and the CPU cost of a send's steps."""
    command = [sys.executable, __file__, "--cold-probe", str(server.port), str(args.reps)]
    command += ["--quick"] if args.quick else []
    probe = subprocess.run(command, capture_output=True, text=True, timeout=300)
    rows: list[Row] = []
    multi = multi_samples(raw, signal_keys(signal.name, "").queue)
    if probe.returncode == 0:
        got = {k: Samples(v) for k, v in json.loads(probe.stdout.splitlines()[-1]).items()}
        bench = "send/memcached"
        rows += [
            ratio_row(
                bench,
                "cold process: socket round trip, recv(256 KiB)",
                got["big"],
                got["small"],
                None,
                baseline_label="recv(64 KiB)",
            ),
            ratio_row(
                bench,
                "cold process: send, 0 pending, as shipped",
                got["as is"],
                got["raw"],
                None,
                baseline_label="dumps+append",
            ),
            ratio_row(
                bench,
                "cold process: send, READ_SIZE patched to 64 KiB",
                got["patched"],
                got["raw"],
                None,
                baseline_label="dumps+append",
            ),
            Row(bench, "cold process: minor page faults per round trip, recv 256 / 64 KiB",
                f"{got['faults big'].median:.2f} / {got['faults small'].median:.2f}"),
            Row(bench, "cold process: minor page faults per send, as shipped / patched",
                f"{got['faults as is'].median:.2f} / {got['faults patched'].median:.2f}"),
            ratio_row(bench, "cold process: send_multi of 8,000 to one signal, per payload",
                      got["multi 8000"], multi["8000"], None, baseline_label="(warm process)"),
        ]  # fmt: skip
    else:
        print(f"!! cold probe failed: {probe.stderr.strip()[-500:]}")
    try:
        rows += adapter_rows(args, raw, signal.name) + cpu_rows("send/memcached", signal.name)
    except Exception as error:  # these use internal names; the targets above do not
        print(f"!! adapter/CPU diagnostics skipped: {error!r}")
    rows.append(
        ratio_row("send/memcached", "diag: send_multi of 8,000 payloads to one signal, per payload",
                  multi["8000"], multi["500"], None, baseline_label="(500 payloads)")
    )  # fmt: skip
    return rows


def adapter_rows(args, raw, name: str) -> list[Row]:
    """The store adapter alone: connection + append_many of a ready frame, against a raw
    pymemcache append of the same bytes (one round trip each)."""
    from gaesignals.codec import encode_payload
    from gaesignals.config import get_settings

    settings = get_settings()
    keys = signal_keys(name, settings.namespace)
    frame = encode_payload(name, PAYLOAD, keys, settings)
    store = settings.store
    n = 600 if args.quick else 2000

    def adapter_once() -> None:
        with store.connection() as conn:
            conn.append_many({keys.queue: frame})

    got = compare(
        {
            "adapter": chunked(n, 100, lambda: raw.set(keys.queue, b""), adapter_once),
            "raw": chunked(
                n, 100, lambda: raw.set("bench_raw_append", b""),
                lambda: raw.append("bench_raw_append", frame),
            ),
        },
        args.reps,
    )  # fmt: skip
    return [
        ratio_row("send/memcached", "diag: connection() + append_many(frame), no encode",
                  got["adapter"], got["raw"], None, baseline_label="raw append(frame)")
    ]  # fmt: skip


def cold_probe(port: int, reps: int, quick: bool) -> None:
    """Run in a fresh interpreter (allocator not warmed): prints JSON samples on stdout."""
    pin_client()
    quiet_library()
    gaesignals.configure(store=library_store(port))
    raw = raw_client(port)
    signal = gaesignals.Signal(NAME)
    key = signal_keys(NAME, "").queue
    count = 500 if quick else 2000
    request = b"append bench_diag 0 0 10\r\n0123456789\r\n"
    sock = socket.create_connection(("127.0.0.1", port))
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def trip(size: int) -> Callable[[], float]:
        def batch() -> float:
            sock.sendall(b"set bench_diag 0 0 0\r\n\r\n")
            sock.recv(64)
            return loop_time(lambda: (sock.sendall(request), sock.recv(size)), count) / count

        return batch

    module = importlib.import_module("gaesignals.stores.memcached._wire")
    original = getattr(module, "READ_SIZE", None)

    def send_with(size: int | None) -> Callable[[], float]:
        def batch() -> float:
            if size is not None:
                module.READ_SIZE = size
            try:
                return chunked(count, 100, lambda: raw.set(key, b""), send_once)()
            finally:
                if size is not None:
                    module.READ_SIZE = original

        return batch

    def send_once() -> None:
        signal.send(PAYLOAD)

    def raw_once() -> None:
        raw.append("bench_raw_append", pickle.dumps(PAYLOAD, protocol=PICKLE_PROTOCOL))

    cases = {
        "big": trip(256 * 1024),
        "small": trip(64 * 1024),
        "as is": send_with(None),
        "patched": send_with(64 * 1024 if original is not None else None),
        "raw": chunked(count, 100, lambda: raw.set("bench_raw_append", b""), raw_once),
    }
    got = compare(cases, reps)
    result = {name: samples.values for name, samples in got.items()}
    # Page faults per operation: deterministic, where the time they cost is not (on a VM a
    # first touch of a guest page can cost far more than a reused one).
    for name in ("big", "small", "as is", "patched"):
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        cases[name]()
        result[f"faults {name}"] = [
            (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / count
        ]
    sock.close()
    # Last, as it warms the allocator: one send_multi of 8,000 payloads to one signal.
    raw.delete(key)
    result["multi 8000"] = [multi_send(8000)]
    print(json.dumps(result))


def multi_send(count: int) -> float:
    """Seconds per payload of one send_multi of ``count`` payloads to one signal."""
    start = time.perf_counter()
    gaesignals.send_multi([(NAME, PAYLOAD)] * count)
    return (time.perf_counter() - start) / count


def multi_samples(raw, key: str) -> dict[str, Samples]:
    def batch(count: int) -> Callable[[], float]:
        def run() -> float:
            raw.delete(key)
            return multi_send(count)

        return run

    return compare({"500": batch(500), "8000": batch(8000)}, 3)


def cpu_rows(bench: str, name: str) -> list[Row]:
    """CPU cost of a send's steps without the network, against pickle.dumps (internal API)."""
    from gaesignals.codec import encode_payload
    from gaesignals.config import get_settings

    settings = get_settings()
    keys = signal_keys(name, settings.namespace)
    store = settings.store

    def connection() -> None:
        with store.connection():
            pass

    steps = {
        "dumps": lambda: pickle.dumps(PAYLOAD, protocol=PICKLE_PROTOCOL),
        "encode": lambda: encode_payload(name, PAYLOAD, keys, settings),
        "connection": connection,
    }
    got = compare({k: lambda fn=fn: loop_time(fn, 20000) / 20000 for k, fn in steps.items()}, 5)
    return [
        ratio_row(
            bench,
            "diag: CPU, encode_payload (pickle + frame)",
            got["encode"],
            got["dumps"],
            None,
            baseline_label="pickle.dumps",
        ),
        ratio_row(
            bench,
            "diag: CPU, store.connection() enter/exit",
            got["connection"],
            got["dumps"],
            None,
            baseline_label="pickle.dumps",
        ),
    ]


class StubCalls:
    """Counts the App Engine API calls made to the memcache stub inside a ``with`` block."""

    def __enter__(self) -> StubCalls:
        from google.appengine.api import apiproxy_stub_map

        self.stub = apiproxy_stub_map.apiproxy.GetStub("memcache")
        self.count = 0
        real = self.stub.MakeSyncCall

        def counting(*args: Any, **kwargs: Any) -> Any:
            self.count += 1
            return real(*args, **kwargs)

        self.stub.MakeSyncCall = counting
        return self

    def __exit__(self, *exc: object) -> None:
        del self.stub.MakeSyncCall  # the class's method again


def appengine_rows(args) -> list[Row]:
    from google.appengine.api import memcache

    from gaesignals.stores.appengine import AppEngineStore

    bench = "send/appengine-stub"
    gaesignals.configure(store=AppEngineStore())
    client = memcache.Client()
    key = signal_keys(NAME, "").queue
    raw_key = "bench_raw_cas"
    signal = gaesignals.Signal(NAME)
    rows: list[Row] = []

    calls = StubCalls()
    client.set(key, b"")
    with calls:
        signal.send(PAYLOAD)
    present = calls.count
    client.delete(key)
    with calls:
        signal.send(PAYLOAD)
    missing = calls.count
    rows.append(
        Row(
            bench,
            "API calls per send, key present",
            str(present),
            "2 (raw gets+cas)",
            "",
            "== 2",
            "PASS" if present == 2 else "MISS",
        )
    )
    rows.append(
        Row(
            bench,
            "API calls per send, key missing",
            str(missing),
            "",
            "",
            "== 2 (gets, add)",
            "PASS" if missing == 2 else "MISS",
        )
    )

    ops = 300 if args.quick else 2000
    per_level = {}
    for level in LEVELS:
        value = fill(level, lambda v: client.set(key, v), lambda: client.get(key) or b"")
        joined = joined_value(key)
        n = ops if level == 0 else ops // 5
        step = 100 if level == 0 else 20

        def send_once() -> None:
            signal.send(PAYLOAD)

        def raw_once() -> None:
            body = pickle.dumps(PAYLOAD, protocol=PICKLE_PROTOCOL)
            current = client.gets(raw_key)
            client.cas(raw_key, current + body)

        cases = {
            "lib": chunked(n, step, lambda v=value: client.set(key, v), send_once),
            "raw": chunked(n, step, lambda v=joined: client.set(raw_key, v), raw_once),
        }
        per_level[level] = compare(cases, args.reps)
    zero = per_level[0]
    rows += pending_rows(bench, per_level, "dumps+gets+cas", "gets+cas")
    rows += sharded_rows(
        args,
        bench,
        lambda values: client.set_multi(values),
        lambda key: client.get(key) or b"",
        zero["raw"],
        "dumps+gets+cas",
    )
    return rows


def pending_rows(
    bench: str, per_level: dict[int, dict[str, Samples]], baseline: str, raw_name: str
) -> list[Row]:
    """Send cost at each pending level against the raw calls (``baseline``), and against the
    cost at 0 pending, for the library and the raw calls (``raw_name``)."""
    zero = per_level[0]
    rows = [
        ratio_row(bench, "send, 0 pending", zero["lib"], zero["raw"], 1.15, baseline_label=baseline)
    ]
    for level in LEVELS[1:]:
        got = per_level[level]
        rows.append(
            ratio_row(
                bench,
                f"send, {level:,} pending",
                got["lib"],
                got["raw"],
                None,
                baseline_label=baseline,
            )
        )
    for level in LEVELS[1:]:
        rows.append(
            ratio_row(
                bench,
                f"send at {level:,} vs at 0 pending",
                per_level[level]["lib"],
                zero["lib"],
                1.3 if level == 10_000 else None,
                baseline_label="(at 0)",
            )
        )
    rows.append(
        ratio_row(
            bench,
            f"raw {raw_name} at 10,000 vs at 0",
            per_level[10_000]["raw"],
            zero["raw"],
            None,
            baseline_label="(raw at 0)",
        )
    )
    return rows


def main() -> None:
    if sys.argv[1:2] == ["--cold-probe"]:
        cold_probe(int(sys.argv[2]), int(sys.argv[3]), "--quick" in sys.argv)
        return
    args = arguments(__doc__.splitlines()[0])
    pinning = prepare()
    quiet_library()
    rows: list[Row] = []
    with Memcached() as server:
        rows += memcached_rows(args, server)
    with appengine_testbed():
        rows += appengine_rows(args)
    notes = [
        pinning,
        f"payload {PAYLOAD!r}: {len(pickle.dumps(PAYLOAD, protocol=PICKLE_PROTOCOL))} bytes "
        f"pickled; medians of {args.reps} repetitions",
        "round trips counted as socket sendall calls; App Engine calls at the memcache stub",
    ]
    print_table("send (target 1)", rows, notes)
    emit(args, rows)


if __name__ == "__main__":
    main()
