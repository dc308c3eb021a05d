"""Deliverer bodies for ``test_faults_*.py``: child processes that deliver (weakly or reliably),
hold a lock, take, or fail in their handlers, reporting as :mod:`tests.fault_workers` describes
(``<path>.ids`` lines per handler event, ``<path>.json`` at the end)."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Sequence
from multiprocessing.sharedctypes import Synchronized
from multiprocessing.synchronize import Event
from pathlib import Path
from typing import Any

from gaesignals import (
    SignalMapping,
    StoreUnavailable,
    deliver,
)

from .concurrency_workers import child, wait_for
from .fault_workers import Recorder, Spec, configure, full_ring, pending_bytes, skew_clock

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
