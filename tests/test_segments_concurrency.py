"""Segments under concurrency: a hot signal's long queue, sent and delivered by several processes
(or threads, on the App Engine stub) at once, arrives whole, once each and in each sender's
order, and leaves no segment behind."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections import Counter
from multiprocessing.synchronize import Event
from pathlib import Path
from typing import Any

import pytest

import gaesignals
from gaesignals import Contention, QueueFull, SignalMapping, configure, deliver, send
from gaesignals.stores import segments
from gaesignals.testing import MemcachedServer

from . import concurrency_workers as workers
from .harness import GRACE, Run, Tally, Threads, leftovers
from .segments_support import queue

# -- concurrency ----------------------------------------------------------------------------------

#: The first sender sends this many alone, so its appends cross a segment's worth with no one
#: else writing: the move to a segment cannot lose its cas, whatever the timing. The others
#: then start, and the deliverer once each has sent PRIMED.
SOLO, PRIMED = 600, 300


def send_hot(
    index: int, count: int, start: Any, mark: Any, deadline: float, refused: Counter[str]
) -> list[int]:
    """Once ``start`` is set (if given), send sender ``index``'s ``count`` payloads to the hot
    signal, setting ``mark`` after SOLO (sender 0) or PRIMED (the others); a refused send
    (QueueFull, Contention: nothing stored) is counted and retried. Returns the ids sent."""
    if start is not None and not start.wait(max(0.0, deadline - time.monotonic())):
        raise TimeoutError("the first sender never finished its solo")
    sent: list[int] = []
    for n in range(count):
        pid = index * workers.ID_BASE + n
        give_up = min(time.monotonic() + workers.SEND_RETRY_SECONDS, deadline)
        backoff = workers.Backoff(pid, give_up, refused)
        while True:
            try:
                send(workers.HOT, {"id": pid, "pad": "x" * 60})
            except (Contention, QueueFull) as error:
                backoff.refused(error)
                continue
            sent.append(pid)
            break
        if len(sent) == (PRIMED if index else SOLO):
            mark.set()
    return sent


def segment_sender(
    path: str, seconds: float, url: str, index: int, count: int, start: Event | None, mark: Event
) -> None:
    """:func:`send_hot` in a child process; the ids sent go to ``<path>.json``."""
    with workers.child(path + ".error", path + ".log"):
        store = workers.configure(url)
        refused: Counter[str] = Counter()
        try:
            sent = send_hot(index, count, start, mark, time.monotonic() + seconds, refused)
        finally:
            store.close()
        Path(path + ".json").write_text(json.dumps({"sent": sent, "refused": refused}))


def segment_deliverer(
    path: str, seconds: float, url: str, watch: Any, primed: list[Event], done: Event, pause: float
) -> None:
    """Once every sender is primed, deliver weakly every ``pause`` seconds, noting each time the
    raw queue value (read at ``watch``) held pointers; after ``done``, drain. Ids go to
    ``<path>.ids``."""
    from pymemcache.client.base import Client

    with workers.child(path + ".error", path + ".log"):
        deadline = time.monotonic() + seconds
        store = workers.configure(url)
        watcher = Client(watch, default_noreply=False)
        key = queue(workers.HOT)
        seen = most = largest = 0
        with open(path + ".ids", "w") as out:
            mapping = SignalMapping({workers.HOT: lambda data: out.write(f"{data['id']}\n")})
            try:
                for event in primed:
                    workers.wait_for(event, deadline, "the senders' backlog")
                while not done.is_set():
                    if time.monotonic() > deadline:
                        raise TimeoutError("the senders did not finish in time")
                    value = watcher.get(key) or b""
                    largest = max(largest, len(value))
                    if value.startswith(segments.POINTER_MAGIC):
                        seen += 1
                        most = max(most, len(segments.pointers(value)[0]))
                    deliver(mapping)
                    time.sleep(pause)
                while deliver(mapping):
                    if time.monotonic() > deadline:
                        raise TimeoutError("the final drain did not finish in time")
            finally:
                watcher.close()
                store.close()
        report = {"spilled": seen, "pointers": most, "largest_raw": largest}
        Path(path + ".json").write_text(json.dumps(report))


def segments_left(server: MemcachedServer) -> list[bytes]:
    """Every segment key the server holds, whatever its queue (``lru_crawler metadump``)."""
    with socket.create_connection(server.address) as sock:
        sock.sendall(b"lru_crawler metadump all\r\n")
        data = b""
        while not data.endswith(b"END\r\n"):
            chunk = sock.recv(65536)
            assert chunk, "memcached closed the connection"
            data += chunk
    return [line.split()[0] for line in data.splitlines() if line.startswith(b"key=gs~")]


def in_sender_order(delivered: list[int]) -> None:
    for sender in {pid // workers.ID_BASE for pid in delivered}:
        mine = [pid for pid in delivered if pid // workers.ID_BASE == sender]
        assert mine == sorted(mine), f"sender {sender}'s payloads were delivered out of order"


@pytest.mark.slow
def test_hot_signal_segments_under_concurrency(
    gaesignals_memcached: MemcachedServer, tmp_path: Path
) -> None:
    """Four processes sending 2,500 payloads each to one signal while one delivers it every
    0.1 s, so backlogs are moved to segments as they grow: each payload sent is delivered
    exactly once, in its sender's order, and segments were in use."""
    gaesignals_memcached.flush()
    url = gaesignals_memcached.url
    n_senders, per_sender = 4, 2500
    run = Run(tmp_path, 30.0)
    primed = [run.ctx.Event() for _ in range(n_senders)]
    done = run.ctx.Event()
    senders = [
        run.process(
            segment_sender, f"sender-{i}", url, i, per_sender, primed[0] if i else None, primed[i]
        )
        for i in range(n_senders)
    ]
    deliverer = run.process(
        segment_deliverer, "deliverer", url, gaesignals_memcached.address, primed, done, 0.1
    )
    with run.running():
        run.wind_down(senders, [deliverer], done)
    sent: list[int] = []
    refused: Counter[str] = Counter()
    for proc in senders:
        report = run.report(proc.name)
        sent += report["sent"]
        refused.update(report["refused"])
    delivered = [int(line) for line in (tmp_path / "deliverer.ids").read_text().split()]
    watched = run.report("deliverer")
    leftover = leftovers(url, 0)
    tally = Tally.of(sent, Counter(delivered))
    print(
        f"\nsegments: {run.elapsed:.1f}s sent={len(sent)} refused={dict(refused)} "
        f"{tally.line()} {watched} left={len(leftover)} logged={dict(run.logs())}"
    )
    assert len(sent) == n_senders * per_sender
    tally.check()
    assert leftover == []
    in_sender_order(delivered)
    assert watched["spilled"] >= 1, "no delivery ever found the queue in segments"
    assert segments_left(gaesignals_memcached) == [], "segments outlived their queue's delivery"


@pytest.mark.slow
def test_hot_signal_segments_on_the_app_engine_stub() -> None:
    """The same with threads on App Engine's memcache stub, where a send moves frames to a
    segment inside its own gets + cas: exactly once, in each sender's order."""
    from google.appengine.api import memcache
    from google.appengine.ext import testbed

    from gaesignals.stores.appengine import AppEngineStore

    bed = testbed.Testbed()
    bed.activate()
    bed.init_memcache_stub()
    try:
        configure(store=AppEngineStore(), secret_key=workers.SECRET_KEY)
        gaesignals.declare(workers.HOT, shards=1)  # one key, never spread: senders' order holds
        n_senders, per_sender = 4, 1500
        sent: list[list[int]] = [[] for _ in range(n_senders)]
        delivered: list[int] = []
        refused: Counter[str] = Counter()
        seen = [0]
        primed = [threading.Event() for _ in range(n_senders)]
        done = threading.Event()
        deadline = time.monotonic() + 30.0

        def sender(i: int) -> None:
            start = primed[0] if i else None
            sent[i] = send_hot(i, per_sender, start, primed[i], deadline, refused)

        def deliverer() -> None:
            mapping = SignalMapping({workers.HOT: lambda data: delivered.append(data["id"])})
            client = memcache.Client()
            for event in primed:
                assert event.wait(max(0.0, deadline - time.monotonic()))
            while not done.is_set() and time.monotonic() < deadline:
                value = client.get(queue(workers.HOT), namespace="")
                if isinstance(value, bytes) and value.startswith(segments.POINTER_MAGIC):
                    seen[0] += 1
                deliver(mapping)
                time.sleep(0.05)
            while deliver(mapping) and time.monotonic() < deadline:
                pass

        threads = Threads()
        threads.run(
            [threads.thread(sender, i) for i in range(n_senders)],
            [threads.thread(deliverer)],
            done,
            deadline + GRACE,
        )
        leftover: list[int] = []
        while deliver({workers.HOT: lambda data: leftover.append(data["id"])}):
            pass
        tally = Tally.of([pid for ids in sent for pid in ids], Counter(delivered))
        print(f"\nappengine segments: refused={dict(refused)} {tally.line()} spilled={seen[0]}")
        assert sum(map(len, sent)) == n_senders * per_sender
        tally.check()
        assert leftover == []
        in_sender_order(delivered)
        assert seen[0] >= 1, "no delivery ever found the queue in segments"
    finally:
        bed.deactivate()
