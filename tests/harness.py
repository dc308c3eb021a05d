"""The parent's side of the multi-process tests (``test_concurrency.py``, ``test_faults_*.py``):
starting children and waiting for them with a deadline, and counting what became of every
payload (the children's side is :mod:`tests.concurrency_workers` and :mod:`tests.fault_workers`).
"""

from __future__ import annotations

import json
import multiprocessing
import threading
import time
from collections import Counter
from collections.abc import Callable, Collection, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from multiprocessing.process import BaseProcess
from multiprocessing.sharedctypes import Synchronized
from multiprocessing.synchronize import Event
from pathlib import Path
from typing import Any

import pytest

from gaesignals import SignalMapping, dead_letters, deliver

from . import concurrency_workers as workers

#: Extra time the parent gives a child past the child's own deadline before failing the test.
GRACE = 10.0


class Run:
    """The child processes of one test, reporting under one directory (``<name>.json``,
    ``.log``, ``.error``...), each with ``deadline`` seconds to do its part."""

    def __init__(self, tmp: Path, deadline: float) -> None:
        self.tmp = tmp
        self.deadline = deadline
        self.ctx = multiprocessing.get_context("spawn")
        self.procs: list[BaseProcess] = []
        self.exitcodes: dict[str, int | None] = {}
        self.started = time.monotonic()
        self.elapsed = 0.0

    def process(self, target: Any, name: str, *args: Any, **kwargs: Any) -> BaseProcess:
        """A process, not started, running ``target(<tmp>/<name>, deadline, *args, **kwargs)``."""
        proc = self.ctx.Process(
            target=target,
            name=name,
            args=(str(self.tmp / name), self.deadline, *args),
            kwargs=kwargs,
        )
        self.procs.append(proc)
        return proc

    @contextmanager
    def running(self, procs: Sequence[BaseProcess] | None = None) -> Iterator[None]:
        """Start ``procs`` (by default every process made so far); on the way out kill and
        release whatever still runs, and note the seconds since the run began in ``elapsed``."""
        try:
            for proc in self.procs if procs is None else procs:
                proc.start()
            yield
        finally:
            self.cleanup()
        self.elapsed = time.monotonic() - self.started

    def join(self, procs: Sequence[BaseProcess], exitcode: int = 0) -> None:
        """Wait for ``procs`` until the run's deadline; fail unless each exited with
        ``exitcode``."""
        deadline = self.started + self.deadline + GRACE
        for proc in procs:
            proc.join(max(0.0, deadline - time.monotonic()))
        late = [proc.name for proc in procs if proc.is_alive()]
        if late:
            pytest.fail(f"{', '.join(late)} still running at the deadline{self.errors()}")
        for proc in procs:
            self.exitcodes[proc.name] = proc.exitcode
            if proc.exitcode != exitcode:
                pytest.fail(
                    f"{proc.name} exited with {proc.exitcode}, expected {exitcode}{self.errors()}"
                )

    def wind_down(
        self,
        senders: Sequence[BaseProcess],
        deliverers: Sequence[BaseProcess],
        stop: Event,
        senders_stop: Event | None = None,
    ) -> None:
        """The end of a run: the senders finish (told to by ``senders_stop``, when they send
        until it is set), then ``stop`` tells the deliverers to drain what is left and exit."""
        if senders_stop is not None:
            senders_stop.set()
        self.join(senders)
        stop.set()
        self.join(deliverers)

    def until(self, what: str, ready: Callable[[], bool], procs: Sequence[BaseProcess]) -> None:
        """Poll ``ready`` until it is true; fail at the deadline or when a child of ``procs``
        has failed (its traceback is in the message)."""
        deadline = self.started + self.deadline
        while not ready():
            dead = [p.name for p in procs if p.exitcode not in (None, 0)]
            if dead:
                pytest.fail(f"{', '.join(dead)} exited while waiting for {what}{self.errors()}")
            if time.monotonic() > deadline:
                pytest.fail(f"gave up waiting for {what}{self.errors()}")
            time.sleep(0.01)

    def counter(self) -> Synchronized[int]:
        """An integer shared with the children, for the parent to step through a fault with."""
        value: Synchronized[int] = self.ctx.Value("i", 0)
        return value

    def errors(self) -> str:
        """The tracebacks of the children that failed, for a failure message."""
        reports = [f"\n--- {path.name}:\n{path.read_text()}" for path in self.tmp.glob("*.error")]
        return "".join(sorted(reports))

    def cleanup(self) -> None:
        """Kill whatever is still running (a failed test) and release every process."""
        for proc in self.procs:
            if proc.pid is None:
                continue  # never started
            if proc.is_alive():
                proc.kill()
            proc.join(5)
            if not proc.is_alive():
                proc.close()

    def report(self, name: str) -> dict[str, Any]:
        """What child ``name`` wrote to its ``<name>.json``."""
        data: dict[str, Any] = json.loads((self.tmp / f"{name}.json").read_text())
        return data

    def logs(self) -> Counter[str]:
        """The library's warnings and errors logged in every child that finished."""
        counts: Counter[str] = Counter()
        for path in self.tmp.glob("*.log"):
            counts.update(json.loads(path.read_text()))
        return counts


def proc_names(procs: Iterable[BaseProcess]) -> list[str]:
    """The names of ``procs``, which name their report files."""
    return [proc.name for proc in procs]


def drain(signal_names: Sequence[str]) -> list[int]:
    """Deliver (weakly, in this process) whatever is left under ``signal_names``; return the
    ids."""
    got: list[int] = []
    mapping = SignalMapping([(name, lambda data: got.append(data["id"])) for name in signal_names])
    while deliver(mapping):
        pass
    return got


def leftovers(url: str, cold: int, shards: int | None = 1) -> list[int]:
    """Deliver, in this process, whatever the children left in the store at ``url`` under
    :func:`tests.concurrency_workers.signal_names`; check that none is dead-lettered; return
    the ids."""
    store = workers.configure(url, shards)
    try:
        found = drain(workers.signal_names(cold))
        for name in workers.signal_names(cold):
            assert dead_letters(name) == [], f"{name} has dead letters"
        return found
    finally:
        store.close()


@dataclass
class Tally:
    """Jepsen's total-queue counts for one run."""

    lost: list[int]  # sent (the send returned normally) but never handled
    duplicated: list[int]  # handled more than once
    unexpected: list[int]  # handled, but never sent
    indeterminate: list[int]  # handled although their send raised StoreUnavailable

    @classmethod
    def of(cls, sent: Iterable[int], handled: Counter[int], failed: Collection[int] = ()) -> Tally:
        """The counts for the ids ``sent`` successfully, ``failed`` (their send raised
        StoreUnavailable, so they may or may not have been stored) and ``handled``."""
        ok, maybe = set(sent), set(failed)
        return cls(
            lost=sorted(ok - handled.keys()),
            duplicated=sorted(pid for pid, times in handled.items() if times > 1),
            unexpected=sorted(handled.keys() - ok - maybe),
            indeterminate=sorted(handled.keys() & maybe),
        )

    def line(self) -> str:
        return (
            f"lost={len(self.lost)} duplicated={len(self.duplicated)} "
            f"unexpected={len(self.unexpected)} "
            f"landed_despite_StoreUnavailable={len(self.indeterminate)}"
        )

    def check(self, *, duplicates: bool = False) -> None:
        """Nothing lost or invented and, unless ``duplicates`` may be, nothing handled twice."""
        assert self.lost == [], f"{len(self.lost)} payloads lost, e.g. {self.lost[:10]}"
        if not duplicates:
            assert self.duplicated == [], (
                f"{len(self.duplicated)} payloads handled twice, e.g. {self.duplicated[:10]}"
            )
        assert self.unexpected == [], (
            f"{len(self.unexpected)} never-sent ids handled, e.g. {self.unexpected[:10]}"
        )


class Threads:
    """Threads standing in for processes where the store lives in one process (App Engine's
    memcache stub): what any of them raises is kept, to fail the test with."""

    def __init__(self) -> None:
        self.errors: list[BaseException] = []

    def thread(self, target: Callable[..., None], *args: Any) -> threading.Thread:
        """A thread, not started, running ``target(*args)``."""

        def guarded() -> None:
            try:
                target(*args)
            except BaseException as error:
                self.errors.append(error)

        return threading.Thread(target=guarded, daemon=True)

    def run(
        self,
        senders: Sequence[threading.Thread],
        deliverers: Sequence[threading.Thread],
        stop: threading.Event,
        deadline: float,
    ) -> None:
        """Start every thread; wait for the senders, set ``stop``, wait for the deliverers,
        none past ``deadline`` (monotonic); fail if one hung or raised."""
        for thread in [*senders, *deliverers]:
            thread.start()
        for thread in senders:
            thread.join(max(0.0, deadline - time.monotonic()))
        stop.set()
        for thread in deliverers:
            thread.join(max(0.0, deadline - time.monotonic()))
        assert not any(thread.is_alive() for thread in [*senders, *deliverers]), "threads hung"
        assert self.errors == []
