"""In-process helpers of the fault-injection suite: store wrappers that hook or count each
connection call, and a sender run as a thread (the App Engine stub, where "processes" are
threads)."""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from gaesignals import (
    Contention,
    QueueFull,
    send,
)
from gaesignals.stores import Store

from .concurrency_workers import ID_BASE, Backoff
from .fault_workers import SEND_CALLS, SEND_RETRY_SECONDS, name_of

# -- in-process helpers (store wrappers; the App Engine stub, where "processes" are threads) ----


class PassThroughStore:
    """Wraps a store and passes every call through, first to :meth:`before` (which does
    nothing here): a subclass counts particular calls, or breaks something just before one."""

    def __init__(self, inner: Store) -> None:
        self.inner = inner
        self.max_value_size = inner.max_value_size
        self.supports_append = inner.supports_append
        self.shared = inner.shared
        self.sizes = inner.sizes
        self.fast_send = None  # every send goes through the hooked connection
        self.native = None

    def before(self, method: str, args: tuple[Any, ...]) -> None:
        """Called with the name and positional arguments of each connection method call."""

    @contextmanager
    def connection(self) -> Iterator[Any]:
        with self.inner.connection() as conn:
            yield _HookedConnection(conn, self.before)


class _HookedConnection:
    def __init__(self, inner: Any, before: Callable[[str, tuple[Any, ...]], None]) -> None:
        self._inner = inner
        self._before = before

    def __getattr__(self, name: str) -> Any:
        method = getattr(self._inner, name)
        if not callable(method):
            return method

        def hooked(*args: Any, **kwargs: Any) -> Any:
            self._before(name, args)
            return method(*args, **kwargs)

        return hooked


class ThreadCountingStore(PassThroughStore):
    """Counts each thread's batched calls in :func:`thread_calls`, so a sender thread can tell
    how many calls (and gets + cas rounds) each of its sends made."""

    _local = threading.local()

    def before(self, method: str, args: tuple[Any, ...]) -> None:
        thread_calls()[method] += 1


def thread_calls() -> Counter[str]:
    """The calls the current thread made through a :class:`ThreadCountingStore`."""
    counts: Counter[str] | None = getattr(ThreadCountingStore._local, "counts", None)
    if counts is None:
        counts = ThreadCountingStore._local.counts = Counter()
    return counts


def thread_sender(
    index: int, names: Sequence[str], count: int, hot_every: int, report: dict[str, Any]
) -> None:
    """A sender thread (for the App Engine stub, one process): :func:`sender`'s plan and
    retries; fills ``report`` (its own dict) with the ids stored and the calls per send."""
    ok: list[int] = []
    retried: Counter[str] = Counter()
    rounds: Counter[int] = Counter()
    calls: Counter[int] = Counter()
    counts = thread_calls()
    for n in range(count):
        pid = index * ID_BASE + n
        name = name_of(pid, names, hot_every)
        backoff = Backoff(pid, time.monotonic() + SEND_RETRY_SECONDS, retried)
        while True:
            counts.clear()
            try:
                send(name, {"id": pid, "pad": "x" * (pid % 64)})
            except (Contention, QueueFull) as error:
                backoff.refused(error)
                continue
            rounds[counts["gets_many"]] += 1
            calls[sum(counts[c] for c in SEND_CALLS)] += 1
            ok.append(pid)
            break
    report.update(ok=ok, retried=retried, rounds_per_send=rounds, calls_per_send=calls)
