"""Shared pieces of the backlog benchmarks: a backlog enqueued, then drained by worker processes.

A queue under test is a way to enqueue one job and the command lines of its workers. The
benchmark enqueues the backlog from this process, starts the workers (their own command lines,
as a user would), and waits until every job has written its record (see
``backlog_jobs/__init__.py``): the drain's time runs from the workers' launch to the last
record, start-up included, as the public benchmark (steventen/python_queue_benchmark) times
it; the records' pids say how the jobs were split between the workers.

Nothing here is pinned to a CPU: the point is several workers at once.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType

import backlog_jobs
from backlog_jobs.deliverer import limit_supported
from common import ROOT

import gaesignals
from gaesignals.exceptions import QueueFull
from gaesignals.testing import MemcachedServer, RedisServer

HERE = Path(__file__).resolve().parent
SIGNAL = "bench_backlog"
PEERS = ("huey", "rq", "dramatiq", "celery")
PEER_NAMES = {"huey": "huey", "rq": "RQ", "dramatiq": "Dramatiq", "celery": "Celery"}


@dataclass
class Queue:
    """A queue under test: how to enqueue a job, and its workers' command lines."""

    name: str
    enqueue: Callable[[int], object]
    workers: Callable[[int], list[list[str]]]
    before_enqueue: Callable[[], object] = lambda: None


@dataclass
class Enqueued:
    accepted: int
    seconds: float
    refused: str = ""  # why the enqueue stopped early, if it did


@dataclass
class Drain:
    """One drain: jobs done, seconds from launch to the first and the last, the split."""

    done: int
    startup: float
    seconds: float
    shares: list[int]


@dataclass
class Runs:
    """The repetitions of one queue in one scenario."""

    enqueued: list[Enqueued] = field(default_factory=list)
    drains: list[Drain] = field(default_factory=list)

    @property
    def enqueue_seconds(self) -> float:
        return statistics.median(e.seconds for e in self.enqueued)

    @property
    def drain_seconds(self) -> float:
        return statistics.median(d.seconds for d in self.drains)

    @property
    def startup(self) -> float:
        return statistics.median(d.startup for d in self.drains)

    @property
    def done(self) -> int:
        return int(statistics.median(d.done for d in self.drains))


class Servers:
    """memcached and redis-server on free loopback ports, and the workers' environment."""

    def __init__(self, stack: contextlib.ExitStack) -> None:
        signal.signal(signal.SIGTERM, _exit)  # so the workers and servers are stopped
        self.memcached = stack.enter_context(MemcachedServer(memory_mb=512))
        self.redis = stack.enter_context(RedisServer())
        os.environ[backlog_jobs.REDIS_PORT] = str(self.redis.port)
        self.log = Path(stack.enter_context(tempfile.TemporaryDirectory())) / "jobs.log"

    def flush(self) -> None:
        from pymemcache.client.base import Client
        from redis import Redis

        Client(("127.0.0.1", self.memcached.port)).flush_all()
        Redis(port=self.redis.port).flushall()

    def env(self, job_seconds: float) -> dict[str, str]:
        path = os.pathsep.join([str(ROOT), str(HERE), os.environ.get("PYTHONPATH", "")])
        return {
            **os.environ,
            "PYTHONPATH": path,
            backlog_jobs.LOG: str(self.log),
            backlog_jobs.JOB_SECONDS: repr(job_seconds),
        }


def _exit(number: int, frame: object) -> None:
    sys.exit(128 + number)


def gaesignals_queue(store: str, url: str, reliable: bool, limit: int = 0) -> Queue:
    """gaesignals on ``url``: one undeclared signal, ``deliver`` loops as the workers."""
    signal_ = gaesignals.Signal(SIGNAL)
    command = [sys.executable, "-m", "backlog_jobs.deliverer", url, SIGNAL]
    command += ["--reliable"] if reliable else []
    command += ["--limit", str(limit)] if limit and limit_supported() else []
    mode = "reliable" if reliable else "weak"
    return Queue(
        f"gaesignals {store}, {mode}",
        signal_.send,
        lambda workers: [command] * workers,
        lambda: gaesignals.configure(store=url),
    )


def peer_queues(skipped: list[str]) -> list[Queue]:
    """The peers that import here (a missing one is skipped with the reason)."""
    queues = []
    for peer in PEERS:
        try:
            module: ModuleType = importlib.import_module(f"backlog_jobs.{peer}_tasks")
        except ImportError as error:
            skipped.append(f"{PEER_NAMES[peer]}: {error}")
            continue
        command = module.command

        def workers(count: int, command: Callable[[int], list[str]] = command) -> list[list[str]]:
            return [[sys.executable, *command(count)]]

        version = _version(peer)
        queues.append(Queue(f"{PEER_NAMES[peer]} {version} (Redis)", module.enqueue, workers))
    return queues


def _version(package: str) -> str:
    from importlib import metadata

    return metadata.version(package)


def enqueue(queue: Queue, count: int) -> Enqueued:
    """Enqueue ``count`` jobs one call each, as the public benchmark does."""
    queue.before_enqueue()
    start = time.perf_counter()
    for number in range(count):
        try:
            queue.enqueue(number)
        except QueueFull:
            return Enqueued(number, time.perf_counter() - start, f"QueueFull at job {number}")
    return Enqueued(count, time.perf_counter() - start)


def drain(
    commands: Sequence[list[str]], env: dict[str, str], log: Path, expected: int, timeout: float
) -> Drain:
    """Start the workers, wait for ``expected`` records (or ``timeout`` seconds), stop them."""
    log.write_bytes(b"")
    launched = time.time()
    with _workers(commands, env) as processes:
        deadline = time.monotonic() + timeout
        while log.stat().st_size < expected * backlog_jobs.RECORD_SIZE:
            if time.monotonic() > deadline or all(p.poll() is not None for p in processes):
                break
            time.sleep(0.005)
    return _read(log, launched, len(commands) if len(commands) > 1 else _pool(commands[0]))


def _pool(command: list[str]) -> int:
    """How many workers one command line starts (its ``-w``/``-n``/``-p``/``-c``)."""
    for flag in ("-w", "-n", "-p", "-c"):
        if flag in command:
            return int(command[command.index(flag) + 1])
    return 1


@contextlib.contextmanager
def _workers(
    commands: Sequence[list[str]], env: dict[str, str]
) -> Iterator[list[subprocess.Popen[bytes]]]:
    processes: list[subprocess.Popen[bytes]] = []
    with tempfile.TemporaryFile() as errors:
        try:
            for command in commands:
                processes.append(
                    subprocess.Popen(
                        command,
                        env=env,
                        cwd=HERE,
                        stdout=subprocess.DEVNULL,
                        stderr=errors,
                        start_new_session=True,  # its own group: its forked workers stop with it
                    )
                )
            yield processes
        finally:
            for process in processes:
                _stop(process)
            if os.environ.get("BENCH_SHOW_WORKER_ERRORS"):
                errors.seek(0)
                print(errors.read().decode(errors="replace")[-4000:], file=sys.stderr)


def _stop(process: subprocess.Popen[bytes]) -> None:
    """Terminate the process group this benchmark started, then kill what is left of it."""
    for sig, wait in ((signal.SIGTERM, 10.0), (signal.SIGKILL, 5.0)):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, sig)
        try:
            process.wait(wait)
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)  # forked workers left behind
            return
        except subprocess.TimeoutExpired:
            continue


def _read(log: Path, launched: float, workers: int) -> Drain:
    counts: Counter[int] = Counter()
    first = last = launched
    for index, line in enumerate(log.read_bytes().splitlines()):
        worker, stamp = line.split()
        counts[int(worker)] += 1
        first = float(stamp) if index == 0 else min(first, float(stamp))
        last = max(last, float(stamp))
    shares = sorted(counts.values(), reverse=True)
    shares += [0] * (workers - len(shares))
    return Drain(sum(shares), first - launched, last - launched, shares)


def split_text(drains: Sequence[Drain]) -> str:
    """Each run's jobs per worker, largest first: "20000+0 | 20000+0"."""
    return " | ".join("+".join(str(n) for n in d.shares) for d in drains)


def seconds(value: float) -> str:
    return f"{value:.2f} s" if value < 100 else f"{value:.0f} s"


def rate(count: float, elapsed: float) -> str:
    return f"{count / elapsed:,.0f}/s" if elapsed > 0 else "-"


def print_runs(title: str, results: dict[str, Runs], reference: str, notes: Sequence[str]) -> None:
    """One line per queue: enqueue, start-up, drain, jobs/s, the drain against ``reference``."""
    headers = ["queue", "enqueue", "enq rate", "start-up", "drain", "jobs/s", "vs ref", "split"]
    cells = []
    base = results[reference].drain_seconds if reference in results else 0.0
    for name, runs in results.items():
        enqueued = runs.enqueued[0].accepted
        ratio = f"{runs.drain_seconds / base:.2f}x" if base else "-"
        cells.append(
            [
                name,
                seconds(runs.enqueue_seconds),
                rate(enqueued, runs.enqueue_seconds),
                seconds(runs.startup),
                seconds(runs.drain_seconds) + ("" if runs.done >= enqueued else " (cut)"),
                rate(runs.done, runs.drain_seconds),
                ratio,
                split_text(runs.drains),
            ]
        )
    widths = [max([len(h), *(len(c[i]) for c in cells)]) for i, h in enumerate(headers)]
    print(f"\n== {title}")
    print("  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip())
    print("  ".join("-" * w for w in widths))
    for c in cells:
        print("  ".join(x.ljust(w) for x, w in zip(c, widths, strict=True)).rstrip())
    for note in notes:
        print(f"   * {note}")
    sys.stdout.flush()
