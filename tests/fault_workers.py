"""Child-process bodies for ``test_faults_*.py``, the fault-injection suite (issue #6).

Like :mod:`tests.concurrency_workers` (whose frame ``child()``, ``Backoff`` and ``wait_for``
they reuse), every body takes first ``path``, the base name of its report files under the
test's ``tmp_path``, and ``seconds``, its own deadline. What a child did goes to files the
parent counts afterwards:

* ``<path>.json``: a sender's outcome per payload id (stored, or the exception it raised, with
  the phase of the fault it was sent in and returned in and, on a cluster, the server that
  stored it) and its store calls per send;
* ``<path>.ids``: one line per handler event, written with one unbuffered ``os.write`` on an
  ``O_APPEND`` file, so a line is complete and in the page cache the moment the call returns,
  even if the process is SIGKILLed right after. ``S <id>`` is written when a handler starts and
  ``D <id> <phase>`` when it returns, so a payload whose handler was running when its process
  died shows an ``S`` without a ``D``;
* ``<path>.log`` and ``<path>.error``: the library's warnings and the child's traceback.

Store specs: ``{"url": "memcached://..."}``, or ``{"cluster": [[host, port], ...],
"timeout": s, "dead_timeout": s}`` for a pooling ``HashClient`` with a short dead timeout.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from multiprocessing.sharedctypes import Synchronized
from multiprocessing.synchronize import Event
from pathlib import Path
from typing import Any

import gaesignals
from gaesignals import (
    Contention,
    QueueFull,
    SignalMapping,
    StoreUnavailable,
    deliver,
    send,
)
from gaesignals.config import get_settings
from gaesignals.keys import signal_keys
from gaesignals.stores import Store
from gaesignals.stores.memcached import MemcachedStore
from gaesignals.testing import CountingStore

from .concurrency_workers import ID_BASE, SECRET_KEY, Backoff, child, wait_for

#: How long one payload may keep failing with Contention/QueueFull before its sender gives up.
# How long a sender retries one payload refused with QueueFull or Contention (backpressure,
# not a failure). The long scenario 2 kills the hot signal's lock holder every few seconds, and
# each kill keeps that signal locked for up to 2 x lease + 1 s: on this 2-core machine senders
# then wait more than 30 s at times (seen at the session 1 commit da89e95 as well), so the long
# runs allow more.
SEND_RETRY_SECONDS = 120.0 if os.environ.get("GAESIGNALS_FAULTS_SCALE") == "long" else 30.0
#: The store calls a send makes (the rest are delivery's).
SEND_CALLS = ("append_one", "append_many", "add_many", "gets_many", "cas_many", "incr_many")

Spec = dict[str, Any]


# -- stores ---------------------------------------------------------------------------------------


def memcached_store(spec: Spec) -> MemcachedStore:
    """The MemcachedStore a spec describes (see the module docstring)."""
    if "url" in spec:
        return MemcachedStore.from_url(spec["url"])
    from pymemcache.client.hash import HashClient

    timeout = spec.get("timeout", 1)
    client = HashClient(
        [tuple(server) for server in spec["cluster"]],
        use_pooling=True,
        retry_attempts=0,
        dead_timeout=spec.get("dead_timeout", 1),
        connect_timeout=timeout,
        timeout=timeout,
        no_delay=True,
        default_noreply=False,
    )
    return MemcachedStore(client)


def configure(spec: Spec, *, counting: bool = False) -> tuple[MemcachedStore, Store]:
    """Configure gaesignals in this child; returns the memcached store and the one in use (the
    same, or a CountingStore around it)."""
    store = memcached_store(spec)
    used: Store = CountingStore(store) if counting else store
    gaesignals.configure(store=used, secret_key=SECRET_KEY)
    return store, used


def node_of(store: MemcachedStore, name: str) -> str | None:
    """The server a cluster sends ``name`` to right now, read from the hash ring without
    touching it (pymemcache's ``_get_client`` would bring dead servers back)."""
    if not store.hashed:
        return None
    key = signal_keys(name, get_settings().namespace).queue
    node: str | None = store.client.hasher.get_node(key)
    return node


def full_ring(store: MemcachedStore, size: int, deadline: float) -> None:
    """Wait until this process's hash ring holds ``size`` servers again (pymemcache retries a
    dead server after its dead timeout, on the next key lookup)."""
    while store.hashed and len(store.live_clients()) < size:
        if time.monotonic() > deadline:
            raise TimeoutError("the cluster never came back to full size in this process")
        with suppress(StoreUnavailable):
            store.client_for("probe")
        time.sleep(0.05)


def pending_bytes(names: Sequence[str]) -> int:
    """How many bytes the queues of ``names`` hold, every shard and stranded cluster copy
    included, a spread signal's marker not."""
    return sum(backlog.bytes for backlog in gaesignals.pending(names).values())


# -- recording ------------------------------------------------------------------------------------


class Recorder:
    """Lines appended to a file with one ``os.write`` each: complete and visible to the parent
    as soon as the call returns, whatever happens to this process afterwards."""

    def __init__(self, path: str) -> None:
        self.fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)

    def line(self, text: str) -> None:
        os.write(self.fd, text.encode() + b"\n")

    def close(self) -> None:
        os.close(self.fd)


def skew_clock(seconds: float) -> None:
    """Make this process's ``time.time`` and ``time.monotonic`` run ``seconds`` off (the
    library and pymemcache read both through the ``time`` module)."""
    if not seconds:
        return
    real_time, real_monotonic = time.time, time.monotonic
    time.time = lambda: real_time() + seconds
    time.monotonic = lambda: real_monotonic() + seconds


# -- senders --------------------------------------------------------------------------------------


def name_of(pid: int, names: Sequence[str], hot_every: int) -> str:
    """The signal a :func:`sender` sends payload ``pid`` to: ``names[0]`` (the hot one) for
    every ``hot_every``-th payload and round-robin over the rest otherwise, or round-robin over
    all the names when ``hot_every`` is 0; shifted by the sender's index."""
    index, n = divmod(pid, ID_BASE)
    if not hot_every:
        return names[(n + index) % len(names)]
    if n % hot_every == 0:
        return names[0]
    rest = names[1:]
    return rest[(n - n // hot_every - 1 + index) % len(rest)]


def sender(
    path: str,
    seconds: float,
    spec: Spec,
    index: int,
    names: Sequence[str],
    *,
    count: int | None = None,
    stop: Event | None = None,
    start_when: Sequence[Event] = (),
    pace: float = 0.0,
    phase: Synchronized[int] | None = None,
    stored: Synchronized[int] | None = None,
    failed: Synchronized[int] | None = None,
    hot_every: int = 0,
    counting: bool = False,
) -> None:
    """Send payloads ``{"id": index * ID_BASE + n}``, ``count`` of them or until ``stop``.

    Payload ``n`` goes to ``names[0]`` (the hot signal) when ``hot_every`` divides ``n``, else
    round-robin over the rest (every name in turn when ``hot_every`` is 0). A send that raises
    QueueFull or Contention stored nothing, so the same id is sent again after a short, growing
    pause; one that raises StoreUnavailable is recorded as failed and the sender moves on to the
    next id. ``phase`` (read before each send) and ``stored``/``failed`` (counts) are shared
    with the parent, which steps through a fault with them.
    """
    with child(path + ".error", path + ".log"):
        deadline = time.monotonic() + seconds
        store, used = configure(spec, counting=counting)
        ok: list[list[Any]] = []
        errors: list[list[Any]] = []
        retried: Counter[str] = Counter()
        calls_per_send: Counter[int] = Counter()
        rounds_per_send: Counter[int] = Counter()
        slowest = 0.0
        # An append round is an append_many call or the one-send fast path's append_one.
        rounds_of = ("append_one", "append_many") if store.supports_append else ("gets_many",)

        def calls_to(methods: Sequence[str]) -> int:
            """The store calls to ``methods`` so far (0 unless they are counted)."""
            return sum(used.calls[c] for c in methods) if isinstance(used, CountingStore) else 0

        try:
            for event in start_when:
                wait_for(event, deadline, "the start signal")
            n = 0
            while (count is None or n < count) and not (stop is not None and stop.is_set()):
                if time.monotonic() > deadline:
                    raise TimeoutError(f"still sending at the deadline ({n} payloads)")
                pid = index * ID_BASE + n
                name = name_of(pid, names, hot_every)
                give_up = min(time.monotonic() + SEND_RETRY_SECONDS, deadline)
                backoff = Backoff(pid, give_up, retried)
                while True:
                    at = phase.value if phase is not None else 0
                    before, rounds_before = calls_to(SEND_CALLS), calls_to(rounds_of)
                    started = time.monotonic()
                    try:
                        send(name, {"id": pid, "pad": "x" * (pid % 64)})
                    except (Contention, QueueFull) as error:
                        backoff.refused(error)
                        continue
                    except StoreUnavailable as error:
                        took = time.monotonic() - started
                        slowest = max(slowest, took)
                        errors.append([pid, type(error).__name__, at, round(took, 3)])
                        if failed is not None:
                            with failed.get_lock():
                                failed.value += 1
                        time.sleep(0.005)
                        break
                    slowest = max(slowest, time.monotonic() - started)
                    if isinstance(used, CountingStore):
                        calls_per_send[calls_to(SEND_CALLS) - before] += 1
                        rounds_per_send[calls_to(rounds_of) - rounds_before] += 1
                    ended = phase.value if phase is not None else 0
                    ok.append([pid, at, node_of(store, name), ended])
                    if stored is not None:
                        with stored.get_lock():
                            stored.value += 1
                    break
                n += 1
                if pace:
                    time.sleep(pace)
        finally:
            store.close()
        report = {
            "ok": ok,
            "failed": errors,
            "retried": retried,
            "calls_per_send": calls_per_send,
            "rounds_per_send": rounds_per_send,
            "slowest_send": slowest,
        }
        Path(path + ".json").write_text(json.dumps(report))


# -- deliverers -----------------------------------------------------------------------------------


def deliverer(
    path: str,
    seconds: float,
    spec: Spec,
    names: Sequence[str],
    *,
    reliable: bool,
    stop: Event,
    lease: int = 2,
    start_when: Sequence[Event] = (),
    ready: Event | None = None,
    busy: Event | None = None,
    hold: Event | None = None,
    holding: Event | None = None,
    release: Event | None = None,
    phase: Synchronized[int] | None = None,
    errors: Synchronized[int] | None = None,
    handler_sleep: float = 0.0,
    skew: float = 0.0,
    ring: int = 0,
    shared: str | None = None,
) -> None:
    """Deliver ``names`` until ``stop`` is set, then until their queues are empty.

    The handler records ``S <id>`` and then ``D <id> <phase>`` (see the module docstring),
    sets ``busy`` and sleeps ``handler_sleep``. A delivery that raises StoreUnavailable is
    counted in ``errors`` and tried again. With ``hold``, the deliverer stops delivering once
    it is set, sets ``holding``, and waits for ``release``. With ``ring``, the final drain
    waits until this process's hash ring holds that many servers. ``skew`` offsets this
    process's clocks (time.time and time.monotonic) by that many seconds. With ``shared``, the
    ``D`` lines also go to that file, one for every deliverer, whose line order is the order
    the handlers returned in.
    """
    skew_clock(skew)
    with child(path + ".error", path + ".log"):
        deadline = time.monotonic() + seconds
        store, _ = configure(spec)
        out = Recorder(path + ".ids")
        common = Recorder(shared) if shared else None
        outages = 0

        def handler(data: dict[str, Any]) -> None:
            out.line(f"S {data['id']}")
            if busy is not None:
                busy.set()
            if handler_sleep:
                time.sleep(handler_sleep)
            out.line(f"D {data['id']} {phase.value if phase is not None else 0}")
            if common is not None:
                common.line(f"D {data['id']} 0")

        mapping = SignalMapping([(name, handler) for name in names])

        def once() -> int:
            nonlocal outages
            try:
                return deliver(mapping, reliable=reliable, lease=lease)
            except StoreUnavailable:
                outages += 1
                if errors is not None:
                    with errors.get_lock():
                        errors.value += 1
                time.sleep(0.01)
                return -1

        try:
            for event in start_when:
                wait_for(event, deadline, "the start signal")
            once()
            if ready is not None:
                ready.set()
            while not stop.is_set():
                if time.monotonic() > deadline:
                    raise TimeoutError("stop was never set")
                if hold is not None and hold.is_set() and release is not None:
                    if holding is not None:
                        holding.set()
                    wait_for(release, deadline, "the release of the hold")
                if once() == 0:
                    time.sleep(0.002)  # pacing only: do not starve the senders of CPU
            # Nothing is sent any more: deliver until every queue is empty, which it then stays
            # (a delivery that finds nothing may have met another deliverer's locks).
            while True:
                if time.monotonic() > deadline:
                    raise TimeoutError("the final drain did not finish in time")
                full_ring(store, ring, deadline)
                if once() == 0 and pending_bytes(names) == 0:
                    break
                time.sleep(0.005)
        finally:
            out.close()
            if common is not None:
                common.close()
            store.close()
            Path(path + ".json").write_text(json.dumps({"outages": outages}))


def slow_holder(
    path: str,
    seconds: float,
    spec: Spec,
    name: str,
    lease: int,
    sleeps: dict[str, float],
    started: Event,
    released: Event,
) -> None:
    """One reliable delivery of ``name`` whose handler sleeps ``sleeps[str(id)]`` seconds for
    the ids listed; sets ``started`` when the first handler starts and ``released`` once the
    delivery (and so its lock release) has returned."""
    with child(path + ".error", path + ".log"):
        store, _ = configure(spec)
        out = Recorder(path + ".ids")

        def handler(data: dict[str, Any]) -> None:
            out.line(f"S {data['id']}")
            started.set()
            time.sleep(sleeps.get(str(data["id"]), 0.0))
            out.line(f"D {data['id']} 0")

        try:
            delivered = deliver({name: handler}, reliable=True, lease=lease)
            released.set()
        finally:
            out.close()
            store.close()
        Path(path + ".json").write_text(json.dumps({"delivered": delivered}))


def taker(
    path: str,
    seconds: float,
    spec: Spec,
    name: str,
    lease: int,
    start_when: Event,
    block_on: int,
    blocked: Event,
    go_on: Event,
    until: int,
) -> None:
    """Deliver ``name`` reliably in a loop once ``start_when`` is set, until ``until`` payloads
    are handled and the queue is empty. The handler of payload ``block_on`` sets ``blocked``
    and waits for ``go_on``, so this process holds the signal's lock while the parent looks."""
    with child(path + ".error", path + ".log"):
        deadline = time.monotonic() + seconds
        store, _ = configure(spec)
        out = Recorder(path + ".ids")
        handled = 0

        def handler(data: dict[str, Any]) -> None:
            nonlocal handled
            out.line(f"S {data['id']}")
            if data["id"] == block_on:
                blocked.set()
                wait_for(go_on, deadline, "the parent's go-ahead")
            handled += 1
            out.line(f"D {data['id']} 0")

        try:
            wait_for(start_when, deadline, "the first holder's handler")
            while handled < until or pending_bytes([name]):
                if time.monotonic() > deadline:
                    raise TimeoutError(f"handled {handled} of {until} payloads")
                if deliver({name: handler}, reliable=True, lease=lease) == 0:
                    time.sleep(0.01)
        finally:
            out.close()
            store.close()


def failing_deliverer(
    path: str,
    seconds: float,
    spec: Spec,
    name: str,
    shared_log: str,
    poison: Sequence[int],
    flaky: Sequence[int],
    max_attempts: int,
    senders_done: Event,
) -> None:
    """Deliver ``name`` reliably until its handler has raised once (then exit), or until the
    senders are done and the queue is empty (then write ``<path>.json``: drained).

    The handler always raises for ``poison`` ids and raises for a ``flaky`` id the first time
    any process handles it. Every event goes to ``shared_log``, one ``O_APPEND`` file for all
    the deliverers, so its line order is the order the signal's lock serialized them in:
    ``D <id> <pid>`` for a delivery, ``F <id> <pid>`` for a failure.
    """
    with child(path + ".error", path + ".log"):
        deadline = time.monotonic() + seconds
        store, _ = configure(spec)
        log = Recorder(shared_log)
        me = os.getpid()
        failures = 0

        def handler(data: dict[str, Any]) -> None:
            nonlocal failures
            pid = data["id"]
            fail = pid in poison
            if pid in flaky:
                text = Path(shared_log).read_text()
                fail = f"F {pid} " not in text
            if fail:
                log.line(f"F {pid} {me}")
                failures += 1
                raise RuntimeError(f"payload {pid} refused by process {me}")
            log.line(f"D {pid} {me}")

        drained = False
        try:
            while not failures:
                if time.monotonic() > deadline:
                    raise TimeoutError("neither failed nor drained in time")
                got = deliver(
                    {name: handler},
                    reliable=True,
                    lease=5,
                    max_attempts=max_attempts,
                    retry_delay=0,
                )
                if failures:
                    break
                if senders_done.is_set() and pending_bytes([name]) == 0:
                    drained = True
                    break
                if got == 0:
                    time.sleep(0.005)
        finally:
            log.close()
            store.close()
        Path(path + ".json").write_text(json.dumps({"drained": drained, "failures": failures}))


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
