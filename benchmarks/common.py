"""Shared pieces of the benchmark scripts: servers, CPU pinning, timing, tables.

Every figure is a median over repetitions; the library and its raw baseline are timed in the
same repetition, one after the other (the order alternates), so drift on a noisy machine hits
both alike. The client and the servers are pinned to one and the same CPU, as issue #5 asks:
a round trip then costs two context switches on that CPU, not a wake-up of an idle other CPU
(which on a VM adds noise to every round trip; see BENCHMARKS.md, Method), and the server's
work shows in the figures instead of hiding on an otherwise idle core.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import logging
import os
import shutil
import socket
import statistics
import subprocess
import sys
import time
import types
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # so "python benchmarks/x.py" imports the checkout
    sys.path.insert(0, str(ROOT))

from gaesignals.testing import MemcachedServer, RedisServer  # noqa: E402

#: The CPU the client, its forked children and the servers all run on.
BENCH_CPU = 1
#: The CPUs this process may run on before it pins itself.
_ALLOWED = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else set()
#: A small payload, as a web app would signal: 69 bytes pickled (protocol 5).
PAYLOAD = {"user_id": 54274, "event": "password_change", "ts": 1700000000.25}
PICKLE_PROTOCOL = 5  # what gaesignals uses
SECRET = "k" * 32


# -- CPU pinning ----------------------------------------------------------------------------------


def can_pin() -> bool:
    return (
        hasattr(os, "sched_setaffinity")
        and BENCH_CPU in _ALLOWED
        and shutil.which("taskset") is not None
        and not os.environ.get("BENCH_NO_PIN")
    )


def pin_client() -> str:
    """Pin this process (and the children it forks later) to the benchmark CPU."""
    if can_pin():
        os.sched_setaffinity(0, {BENCH_CPU})
        return f"client and servers pinned to CPU {BENCH_CPU}"
    return f"not pinned (no CPU {BENCH_CPU}, no taskset, or BENCH_NO_PIN set)"


def warm_allocator() -> None:
    """Serve and free one large block, as any long-running process soon has: glibc then raises
    its mmap threshold, and later 128 KiB+ buffers come from the heap instead of a fresh mmap
    (plus mremap and munmap) each. Without this the first figures of a fresh process differ
    from the later ones; bench_send measures the fresh ("cold") case on its own."""
    block = bytearray(4 << 20)
    del block


def prepare() -> str:
    """Pin the client and warm the allocator; returns a note for the table."""
    note = pin_client()
    if os.environ.get("BENCH_COLD_MALLOC"):
        return note + "; allocator left cold (BENCH_COLD_MALLOC)"
    warm_allocator()
    return note + "; allocator warmed (see common.warm_allocator)"


def _pinned(command: list[str]) -> list[str]:
    return ["taskset", "-c", str(BENCH_CPU), *command] if can_pin() else command


# -- servers --------------------------------------------------------------------------------------


class Memcached(MemcachedServer):
    """memcached on 127.0.0.1 for benchmarks: one worker thread, 512 MB, pinned to the
    benchmark CPU (gaesignals.testing's runner with a pinned command line)."""

    def __init__(self, memory_mb: int = 512, threads: int = 1) -> None:
        super().__init__(memory_mb=memory_mb, threads=threads)

    def _command(self) -> list[str]:
        return _pinned(super()._command())


class Redis(RedisServer):
    """redis-server on 127.0.0.1 without persistence, pinned to the benchmark CPU."""

    def _command(self) -> list[str]:
        return _pinned(super()._command())


def memcached_version() -> str:
    binary = shutil.which("memcached")
    if binary is None:
        return "not installed"
    return subprocess.run([binary, "-V"], capture_output=True, text=True).stdout.strip()


# -- clients --------------------------------------------------------------------------------------


class RoundTrips:
    """Counts ``sendall`` calls on the sockets a pymemcache client opens: one per round trip
    for gaesignals' pipelined adapter and for pymemcache's own commands."""

    def __init__(self) -> None:
        self.count = 0
        counter = self

        class CountingSocket(socket.socket):
            def sendall(self, data: Any, *args: Any) -> None:
                counter.count += 1
                super().sendall(data, *args)

        names = {k: getattr(socket, k) for k in dir(socket) if not k.startswith("__")}
        self.module = types.SimpleNamespace(**{**names, "socket": CountingSocket})

    def reset(self) -> None:
        self.count = 0


def library_store(port: int, trips: RoundTrips | None = None) -> Any:
    """A ``MemcachedStore`` built as ``from_url`` builds it, optionally counting round trips."""
    from pymemcache.client.base import PooledClient

    from gaesignals.stores.memcached import MemcachedStore

    if trips is None:
        return MemcachedStore.from_url(f"memcached://127.0.0.1:{port}")
    client = PooledClient(
        ("127.0.0.1", port),
        connect_timeout=3,
        timeout=3,
        no_delay=True,
        default_noreply=False,
        socket_module=trips.module,
    )
    return MemcachedStore(client)


def raw_client(port: int) -> Any:
    """The raw baseline: a plain pymemcache Client doing the minimal calls."""
    from pymemcache.client.base import Client

    return Client(("127.0.0.1", port), default_noreply=False, no_delay=True, timeout=3)


@contextlib.contextmanager
def appengine_testbed(taskqueue: bool = False) -> Iterator[Any]:
    """App Engine's testbed with the memcache stub (and the task queue stub if asked)."""
    import warnings

    warnings.filterwarnings("ignore", category=DeprecationWarning)
    warnings.filterwarnings("ignore", category=UserWarning)
    from google.appengine.ext import testbed

    bed = testbed.Testbed()
    bed.activate()
    try:
        bed.init_memcache_stub()
        if taskqueue:
            bed.init_taskqueue_stub(root_path=str(ROOT / "benchmarks"))
        yield bed
    finally:
        bed.deactivate()


def quiet_library() -> None:
    """Hide the library's "no secret key" warning; benchmarks run without one on purpose."""
    logging.getLogger("gaesignals").setLevel(logging.ERROR)


# -- timing ---------------------------------------------------------------------------------------


@dataclass
class Samples:
    values: list[float] = field(default_factory=list)

    @property
    def median(self) -> float:
        return statistics.median(self.values)

    @property
    def low(self) -> float:
        return min(self.values)

    @property
    def high(self) -> float:
        return max(self.values)


def timed(fn: Callable[[], float]) -> float:
    """Run one batch with the collector off (as timeit does); the batch returns s/op."""
    gc.collect()
    gc.disable()
    try:
        return fn()
    finally:
        gc.enable()


def compare(cases: dict[str, Callable[[], float]], reps: int) -> dict[str, Samples]:
    """Run every case once per repetition, alternating the order; each case returns the
    seconds per operation of its batch (it does its own untimed setup)."""
    names = list(cases)
    result = {name: Samples() for name in names}
    for rep in range(reps):
        order = names if rep % 2 == 0 else names[::-1]
        for name in order:
            result[name].values.append(timed(cases[name]))
    return result


def ratio_samples(a: Samples, b: Samples) -> Samples:
    """Per-repetition ratios when a and b were timed in the same repetitions, else each of a
    against the median of b."""
    if len(a.values) != len(b.values):
        return Samples([x / b.median for x in a.values])
    return Samples([x / y for x, y in zip(a.values, b.values, strict=True)])


def loop_time(body: Callable[[], object], count: int) -> float:
    """Seconds for ``count`` calls of ``body``."""
    start = time.perf_counter()
    for _ in range(count):
        body()
    return time.perf_counter() - start


def percentile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[index]


# -- output ---------------------------------------------------------------------------------------


def us(seconds: float) -> str:
    return f"{seconds * 1e6:.1f} us" if seconds * 1e6 < 10_000 else f"{seconds * 1e3:.1f} ms"


@dataclass
class Row:
    bench: str
    metric: str
    value: str
    baseline: str = ""
    ratio: str = ""
    target: str = ""
    result: str = "info"


def ratio_row(
    bench: str,
    metric: str,
    value: Samples,
    baseline: Samples,
    limit: float | None,
    *,
    baseline_label: str = "",
    fmt: Callable[[float], str] = us,
    higher_is_better: bool = False,
) -> Row:
    """A row comparing two sample sets: ratio of medians, with the per-repetition range."""
    ratio = value.median / baseline.median
    spread = ratio_samples(value, baseline)
    ratio_text = f"{ratio:.2f}x ({spread.low:.2f}-{spread.high:.2f})"
    target, result = "", "info"
    if limit is not None:
        if higher_is_better:
            target, result = f">= {limit:.2f}x", "PASS" if ratio >= limit else "MISS"
        else:
            target, result = f"<= {limit:.2f}x", "PASS" if ratio <= limit else "MISS"
    label = f"{fmt(baseline.median)}" + (f" {baseline_label}" if baseline_label else "")
    return Row(bench, metric, fmt(value.median), label, ratio_text, target, result)


def print_table(title: str, rows: Sequence[Row], notes: Sequence[str] = ()) -> None:
    headers = ["metric", "value (median)", "baseline (median)", "ratio (range)", "target", ""]
    cells = [[r.metric, r.value, r.baseline, r.ratio, r.target, r.result] for r in rows]
    widths = [max([len(h), *(len(c[i]) for c in cells)]) for i, h in enumerate(headers)]
    line = "  ".join("-" * w for w in widths)
    print(f"\n== {title}")
    print("  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)))
    print(line)
    for c in cells:
        print("  ".join(x.ljust(w) for x, w in zip(c, widths, strict=True)).rstrip())
    for note in notes:
        print(f"   * {note}")
    sys.stdout.flush()


def arguments(description: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--quick", action="store_true", help="fewer repetitions and operations")
    parser.add_argument("--reps", type=int, default=None, help="repetitions (default 7, quick 3)")
    parser.add_argument("--json", type=Path, default=None, help="also write the rows here")
    args = parser.parse_args()
    if args.reps is None:
        args.reps = 3 if args.quick else 7
    return args


def emit(args: argparse.Namespace, rows: Sequence[Row]) -> None:
    if args.json is not None:
        args.json.write_text(json.dumps([asdict(r) for r in rows], indent=1))


def machine() -> dict[str, str]:
    model = "unknown"
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as info:
        for line in info:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    from importlib import metadata

    versions = []
    for package in ("gaesignals", "pymemcache", "appengine-python-standard", "redis", "huey",
                    "rq", "celery"):  # fmt: skip
        try:
            versions.append(f"{package} {metadata.version(package)}")
        except metadata.PackageNotFoundError:
            versions.append(f"{package} (not installed)")
    redis = shutil.which("redis-server")
    redis_version = (
        subprocess.run([redis, "--version"], capture_output=True, text=True).stdout.split()[2]
        if redis
        else "not installed"
    )
    return {
        "cpus": str(os.cpu_count()),
        "cpu model": model,
        "kernel": os.uname().release,
        "python": sys.version.split()[0],
        "memcached": memcached_version(),
        "redis-server": redis_version,
        "packages": ", ".join(versions),
    }


def noop(data: Any = None) -> None:
    """A handler / task that does nothing (importable, so task queues can name it)."""
    return None
