"""Child-process bodies for ``test_faults_*.py``, the fault-injection suite (issue #6): the
stores and the senders here, the deliverers in :mod:`tests.fault_deliverers`.

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
"timeout": s, "dead_timeout": s}`` for a pooling ``HashClient`` with a short dead timeout."""

from __future__ import annotations

import json
import os
import time
from collections import Counter
from collections.abc import Sequence
from contextlib import suppress
from multiprocessing.sharedctypes import Synchronized
from multiprocessing.synchronize import Event
from pathlib import Path
from typing import Any

import gaesignals
from gaesignals import (
    Contention,
    QueueFull,
    StoreUnavailable,
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
