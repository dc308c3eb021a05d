"""Child-process bodies for ``test_concurrency.py``.

They live in their own importable module because the tests start children with the ``spawn``
method, which imports the target function by name in a fresh interpreter. Every body takes first
``path``, the base name of its report files under the test's ``tmp_path``, and ``seconds``, its
deadline; it configures gaesignals itself, writes what it did to ``<path>.json`` or
``<path>.ids``, the library's warnings to ``<path>.log`` and, if it fails, its traceback to
``<path>.error``, which the test puts in its failure message.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import time
import traceback
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from multiprocessing.synchronize import Event
from pathlib import Path
from typing import Any, TextIO

import gaesignals
from gaesignals import Contention, QueueFull, Signal, SignalMapping, deliver
from gaesignals.config import store_from_url
from gaesignals.stores.memcached import MemcachedStore
from gaesignals.stores.redis import RedisStore

#: Signed frames: no "unsigned pickles" warning in every child, and every frame is verified.
SECRET_KEY = "gaesignals-concurrency-tests-secret-key-0123456789"
HOT = "hot"
#: Payload ids are ``sender * ID_BASE + n``, so every payload of a run has its own id.
ID_BASE = 1_000_000
#: How long one payload may keep failing with Contention/QueueFull before its sender gives up.
SEND_RETRY_SECONDS = 10.0
#: A sender's ``(n, done, wait)``: once ``n`` payloads are sent, set ``done``, then wait for
#: ``wait`` before sending more (either may be None).
Step = tuple[int, Event | None, Event | None]


def cold_name(index: int) -> str:
    return f"cold-{index:02d}"


def signal_names(cold: int) -> list[str]:
    """The hot signal first (reliable deliverers handle signals in this order), then the cold."""
    return [HOT] + [cold_name(i) for i in range(cold)]


def plan(sender: int, count: int, cold: int) -> list[tuple[str, int]]:
    """``count`` (signal name, payload id) pairs: even ones on the hot signal, odd ones spread
    round-robin over the cold signals."""
    pairs = []
    for n in range(count):
        name = HOT if n % 2 == 0 else cold_name((n // 2 + sender) % cold)
        pairs.append((name, sender * ID_BASE + n))
    return pairs


def configure(url: str, shards: int | None = 1) -> MemcachedStore | RedisStore:
    """Configure this child's store at ``url`` (memcached:// or redis://); ``shards`` spreads
    the hot signal over that many keys (every child declares it, as an app's senders and
    deliverers import one declaration; None: undeclared, it spreads itself)."""
    store = store_from_url(url)
    assert isinstance(store, MemcachedStore | RedisStore)
    gaesignals.configure(store=store, secret_key=SECRET_KEY)
    if shards is not None:
        gaesignals.declare(HOT, shards=shards)
    return store


def queues_empty(names: list[str]) -> bool:
    """True if no signal in ``names`` has a pending byte (a spread signal's marker aside)."""
    return all(backlog.bytes == 0 for backlog in gaesignals.pending(names).values())


class _LogCounter(logging.Handler):
    """Counts the library's log records by level and message template."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.counts: Counter[str] = Counter()

    def emit(self, record: logging.LogRecord) -> None:
        self.counts[f"{record.levelname}: {record.msg}"] += 1


@contextmanager
def child(error_path: str, log_path: str) -> Iterator[None]:
    """The frame of every child: the library's warnings are counted into ``log_path`` (instead
    of flooding stderr), and the traceback of whatever escapes goes to ``error_path`` (the exit
    code says the child failed)."""
    counter = _LogCounter()
    library = logging.getLogger("gaesignals")
    library.addHandler(counter)
    library.propagate = False
    try:
        yield
    except BaseException:
        Path(error_path).write_text(traceback.format_exc())
        raise
    finally:
        Path(log_path).write_text(json.dumps(counter.counts))


def wait_for(event: Event, deadline: float, what: str) -> None:
    """Wait for ``event`` until ``deadline`` (monotonic); a child never waits on a guess."""
    if not event.wait(max(0.0, deadline - time.monotonic())):
        raise TimeoutError(f"gave up waiting for {what}")


class Backoff:
    """The retries of one payload whose send was refused with Contention or QueueFull.

    Such a send stored nothing (the library's contract: backpressure, not a failure), so the
    sender counts the refusal in ``refusals`` and sends the same payload again after a short,
    growing pause, until ``give_up`` (monotonic) has passed.
    """

    def __init__(self, pid: int, give_up: float, refusals: Counter[str]) -> None:
        self.pid = pid
        self.give_up = give_up
        self.refusals = refusals
        self.pause = 0.001

    def refused(self, error: Exception) -> None:
        """Count ``error`` and sleep before the next try; raise TimeoutError past ``give_up``."""
        self.refusals[type(error).__name__] += 1
        if time.monotonic() > self.give_up:
            raise TimeoutError(f"payload {self.pid} kept failing: {error}") from error
        time.sleep(self.pause)
        self.pause = min(self.pause * 2, 0.05)


def sender(
    path: str,
    seconds: float,
    url: str,
    index: int,
    count: int,
    cold: int,
    start_when: Sequence[Event] = (),
    steps: Sequence[Step] = (),
    shards: int | None = 1,
) -> None:
    """Send this sender's planned payloads once every event in ``start_when`` is set; write the
    ids sent successfully to ``<path>.json``.

    A send that raises Contention or QueueFull stored nothing (the library's contract), so its
    payload is not counted and is sent again after a short, growing sleep; one that keeps failing
    for ``SEND_RETRY_SECONDS`` fails the sender. Each ``(n, done, wait)`` in ``steps`` sets
    ``done`` once ``n`` payloads are sent, then waits for ``wait`` before sending more.
    """
    with child(path + ".error", path + ".log"):
        deadline = time.monotonic() + seconds
        store = configure(url, shards)
        sent: list[int] = []
        failures: Counter[str] = Counter()
        gates = {n: (done, wait) for n, done, wait in steps}
        try:
            for event in start_when:
                wait_for(event, deadline, "the deliverers")
            for name, pid in plan(index, count, cold):
                give_up = min(time.monotonic() + SEND_RETRY_SECONDS, deadline)
                backoff = Backoff(pid, give_up, failures)
                while True:
                    try:
                        Signal(name).send({"id": pid, "pad": "x" * (pid % 64)})
                    except (Contention, QueueFull) as error:
                        backoff.refused(error)
                        continue
                    sent.append(pid)
                    break
                done, wait = gates.get(len(sent), (None, None))
                if done is not None:
                    done.set()
                if wait is not None:
                    wait_for(wait, deadline, f"the go-ahead after {len(sent)} payloads")
        finally:
            store.close()
        Path(path + ".json").write_text(json.dumps({"sent": sent, "failures": failures}))


def _ids_file(path: str, durable: bool) -> tuple[TextIO, Callable[[dict[str, Any]], None]]:
    """Open ``path`` and return it with ``record(data)``, which appends data's id to it.

    ``durable`` records each id with flush + fsync before returning, so it survives SIGKILL.
    """
    out = open(path, "a")  # noqa: SIM115 - closed by the caller

    def record(data: dict[str, Any]) -> None:
        out.write(f"{data['id']}\n")
        if durable:
            out.flush()
            os.fsync(out.fileno())

    return out, record


def weak_deliverer(
    path: str,
    seconds: float,
    url: str,
    cold: int,
    ready: Event,
    senders_done: Event,
    shards: int | None = 1,
) -> None:
    """Deliver weakly (``ready`` is set after the first delivery) while the senders run, then
    until a delivery finds nothing; write every id delivered to ``<path>.ids``."""
    with child(path + ".error", path + ".log"):
        deadline = time.monotonic() + seconds
        store = configure(url, shards)
        out, record = _ids_file(path + ".ids", durable=False)
        try:
            mapping = SignalMapping([(name, record) for name in signal_names(cold)])
            deliver(mapping)
            ready.set()
            while not senders_done.is_set():
                if time.monotonic() > deadline:
                    raise TimeoutError("the senders did not finish in time")
                if deliver(mapping) == 0:
                    time.sleep(0.001)  # pacing only: do not starve the senders of CPU
            # Nothing is sent any more, so a weak delivery that finds nothing means every queue
            # was empty when it read them (or the other deliverer won them, and delivers them).
            while deliver(mapping) != 0:
                if time.monotonic() > deadline:
                    raise TimeoutError("the final drain did not finish in time")
        finally:
            out.close()
            store.close()


def reliable_deliverer(
    path: str,
    seconds: float,
    url: str,
    cold: int,
    lease: int,
    start_when: Sequence[Event],
    first_payload: Event,
    senders_done: Event,
    die_at: int = 0,
    shards: int | None = 1,
) -> None:
    """Deliver reliably once every event in ``start_when`` is set, while the senders run, then
    until every queue is empty; write every id handled to ``<path>.ids``, durably.

    ``first_payload`` is set when the handler gets its first payload. With ``die_at``, the
    handler SIGKILLs this process in the middle of its ``die_at``-th payload, after recording it.
    """
    with child(path + ".error", path + ".log"):
        deadline = time.monotonic() + seconds
        store = configure(url, shards)
        out, record = _ids_file(path + ".ids", durable=True)
        handled = 0

        def handler(data: dict[str, Any]) -> None:
            nonlocal handled
            record(data)
            handled += 1
            first_payload.set()
            if handled == die_at:
                os.kill(os.getpid(), signal.SIGKILL)

        try:
            names = signal_names(cold)
            mapping = SignalMapping([(name, handler) for name in names])
            for event in start_when:
                wait_for(event, deadline, "the start signal")
            while not senders_done.is_set():
                if time.monotonic() > deadline:
                    raise TimeoutError("the senders did not finish in time")
                if deliver(mapping, reliable=True, lease=lease) == 0:
                    time.sleep(0.005)  # pacing only
                if die_at and handled:
                    raise RuntimeError(
                        f"still alive after a delivery of {handled} payloads (die_at={die_at})"
                    )
            # A reliable delivery that finds nothing may only have met locks (another
            # deliverer's, or a dead one's until its lease runs out): go on until the queues
            # themselves are empty, which, with the senders done, they stay.
            while deliver(mapping, reliable=True, lease=lease) != 0 or not queues_empty(names):
                if time.monotonic() > deadline:
                    raise TimeoutError("the final drain did not finish in time")
                time.sleep(0.005)
        finally:
            out.close()
            store.close()
