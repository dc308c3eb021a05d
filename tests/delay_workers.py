"""Child processes of the delayed-send tests (``tests/test_delays_concurrency.py``): senders
that send payloads due 0-3 s later, deliverers that note when each one arrived."""

from __future__ import annotations

import json
import os
import random
import signal
import time
from datetime import UTC, datetime
from multiprocessing.synchronize import Event
from pathlib import Path

import gaesignals
from gaesignals import SignalMapping, deliver, pending, send
from gaesignals.config import store_from_url

from .concurrency_workers import SECRET_KEY, child, wait_for

NAME = "delayed"
#: The longest delay a sender draws, in seconds.
LONGEST = 3.0
#: How long a deliverer pauses between deliveries that found nothing.
INTERVAL = 0.02


def sender(path: str, seconds: float, url: str, index: int, count: int, go: Event) -> None:
    """Send ``count`` payloads, each due at a random time 0-3 s ahead (an ``eta``), its due
    time (Unix ms) in the payload; write the ids sent to ``<path>.json``."""
    with child(path + ".error", path + ".log"):
        deadline = time.monotonic() + seconds
        store = store_from_url(url)
        gaesignals.configure(store=store, secret_key=SECRET_KEY)
        draw = random.Random(index)
        wait_for(go, deadline, "the start")
        sent = []
        try:
            for n in range(count):
                due = (time.time() + draw.uniform(0, LONGEST)) * 1000
                pid = index * 100_000 + n
                send(NAME, {"id": pid, "due": due}, eta=datetime.fromtimestamp(due / 1000, UTC))
                sent.append(pid)
        finally:
            store.close()
        Path(path + ".json").write_text(json.dumps({"sent": sent}))


def deliverer(path: str, seconds: float, url: str, reliable: bool, stop: Event) -> None:
    """Deliver every INTERVAL until ``stop`` is set and nothing is pending, due or not; write
    each payload's id, due time and arrival (Unix ms) to ``<path>.json``."""
    with child(path + ".error", path + ".log"):
        deadline = time.monotonic() + seconds
        store = store_from_url(url)
        gaesignals.configure(store=store, secret_key=SECRET_KEY)
        arrived: list[tuple[int, float, float]] = []

        def handler(data: dict[str, float]) -> None:
            arrived.append((int(data["id"]), data["due"], time.time() * 1000))

        mapping = SignalMapping({NAME: handler})
        try:
            while not (stop.is_set() and pending(NAME)[NAME].count == 0):
                if time.monotonic() > deadline:
                    raise TimeoutError("the queue never emptied")
                if deliver(mapping, reliable=reliable, lease=30) == 0:
                    time.sleep(INTERVAL)
        finally:
            store.close()
        Path(path + ".json").write_text(json.dumps({"arrived": arrived}))


RETRIED = "retried"


def flaky_deliverer(
    path: str, seconds: float, url: str, die_at: int, start: Event | None, busy: Event
) -> None:
    """Deliver RETRIED reliably (``retry_delay=0.2``) until nothing is pending; write the ids
    handled to ``<path>.json``. With ``die_at``, this is the victim: every id divisible by 5
    fails its first attempt here (rescheduled), and the process SIGKILLs itself while handling
    its ``die_at``-th payload, with rescheduled payloads named in its cursor."""
    with child(path + ".error", path + ".log"):
        deadline = time.monotonic() + seconds
        store = store_from_url(url)
        gaesignals.configure(store=store, secret_key=SECRET_KEY)
        gaesignals.declare(RETRIED, reliable=True, retry_delay=0.2, retry_backoff=1, lease=2)
        if start is not None:
            wait_for(start, deadline, "the victim's death")
        handled: list[int] = []
        out = Path(path + ".ids").open("a", buffering=1)  # noqa: SIM115 (closed below)

        def handler(data: dict[str, int]) -> None:
            pid = data["id"]
            busy.set()
            if die_at and len(handled) + 1 == die_at:
                os.kill(os.getpid(), signal.SIGKILL)
            if die_at and pid % 5 == 0 and pid not in handled:
                handled.append(pid)
                raise RuntimeError("not yet")
            handled.append(pid)
            out.write(f"{pid}\n")
            os.fsync(out.fileno())

        try:
            while pending(RETRIED)[RETRIED].count:
                if time.monotonic() > deadline:
                    raise TimeoutError("the queue never emptied")
                if deliver({RETRIED: handler}) == 0:
                    time.sleep(INTERVAL)
        finally:
            out.close()
            store.close()
