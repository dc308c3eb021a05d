"""Child-process bodies for ``test_coalesce_processes.py``: senders of coalesced payloads, a
sender that cancels what it sends, and deliverers, against a real memcached or Redis.

As in :mod:`tests.concurrency_workers` (whose frame, waits and backoff these reuse), every
body takes first ``path``, the base name of its report files, and ``seconds``, its deadline;
it configures gaesignals itself and writes what it did to ``<path>.json`` (senders) or
``<path>.ids`` (deliverers: one JSON payload a line), its warnings to ``<path>.log`` and, if
it fails, its traceback to ``<path>.error``.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from multiprocessing.synchronize import Event
from pathlib import Path
from typing import Any

import gaesignals
from gaesignals import Contention, QueueFull, SignalMapping, deliver, send
from gaesignals.config import store_from_url
from gaesignals.stores.memcached import MemcachedStore
from gaesignals.stores.redis import RedisStore

from .concurrency_workers import SECRET_KEY, SEND_RETRY_SECONDS, Backoff, child, wait_for

#: The signal every body sends to and delivers.
SIGNAL = "user_profile_changed"


def key_of(sender: int, n: int, keys: int) -> str:
    """The coalesce key of payload ``n`` of ``sender``: the keys in turn, each sender from its
    own start."""
    return f"user-{(n + sender) % keys}"


def configure(url: str, reliable: bool) -> MemcachedStore | RedisStore:
    """Configure this child's store at ``url``, signed, with the signal declared in ``reliable``
    mode (as an app's senders and deliverers import one declaration)."""
    store = store_from_url(url)
    assert isinstance(store, MemcachedStore | RedisStore)
    gaesignals.configure(store=store, secret_key=SECRET_KEY)
    gaesignals.declare(SIGNAL, reliable=reliable)
    return store


def _send(data: dict[str, Any], key: str | None, backoff: Backoff) -> gaesignals.Receipt:
    """Send ``data`` (with coalesce ``key``), again after a pause while the store refuses it
    with Contention or QueueFull (which store nothing)."""
    while True:
        try:
            return send(SIGNAL, data, coalesce=key)
        except (Contention, QueueFull) as error:
            backoff.refused(error)


def sender(
    path: str, seconds: float, url: str, index: int, count: int, keys: int, start: Event
) -> None:
    """Once ``start`` is set, send ``count`` payloads, each with its key (:func:`key_of`);
    write how many were sent and the refusals met to ``<path>.json``."""
    with child(path + ".error", path + ".log"):
        deadline = time.monotonic() + seconds
        store = configure(url, reliable=False)
        refusals: Counter[str] = Counter()
        try:
            wait_for(start, deadline, "the start")
            for n in range(count):
                key = key_of(index, n, keys)
                give_up = min(time.monotonic() + SEND_RETRY_SECONDS, deadline)
                data = {"sender": index, "n": n, "key": key}
                _send(data, key, Backoff(index * count + n, give_up, refusals))
        finally:
            store.close()
        Path(path + ".json").write_text(json.dumps({"sent": count, "refusals": refusals}))


#: How many sends after its own a payload is cancelled: late enough that a deliverer may have
#: taken it already, or be taking it (the race), early enough that it may still be pending.
CANCEL_LAG = 16


def canceller(path: str, seconds: float, url: str, count: int, start: Event) -> None:
    """Once ``start`` is set, send ``count`` payloads (no key) and cancel every other one
    :data:`CANCEL_LAG` sends later, racing the deliverers; write the ns sent and the ns
    cancelled to ``<path>.json``."""
    with child(path + ".error", path + ".log"):
        deadline = time.monotonic() + seconds
        store = configure(url, reliable=False)
        refusals: Counter[str] = Counter()
        receipts: list[gaesignals.Receipt] = []
        cancelled = []
        try:
            wait_for(start, deadline, "the start")
            for n in range(count + CANCEL_LAG):
                if n < count:
                    give_up = min(time.monotonic() + SEND_RETRY_SECONDS, deadline)
                    receipts.append(_send({"n": n}, None, Backoff(n, give_up, refusals)))
                late = n - CANCEL_LAG
                if late >= 0 and late % 2:
                    receipts[late].cancel()
                    cancelled.append(late)
        finally:
            store.close()
        report = {"sent": list(range(count)), "cancelled": cancelled, "refusals": refusals}
        Path(path + ".json").write_text(json.dumps(report))


def deliverer(path: str, seconds: float, url: str, reliable: bool, stop: Event) -> None:
    """Deliver the signal until ``stop`` is set, then until nothing of it is pending; write
    every payload handled to ``<path>.ids``, one JSON object a line."""
    with child(path + ".error", path + ".log"):
        deadline = time.monotonic() + seconds
        store = configure(url, reliable)
        with open(path + ".ids", "a") as out:

            def record(data: dict[str, Any]) -> None:
                out.write(json.dumps(data) + "\n")

            mapping = SignalMapping([(SIGNAL, record)])
            try:
                while not stop.is_set():
                    if time.monotonic() > deadline:
                        raise TimeoutError("the senders did not finish in time")
                    if deliver(mapping) == 0:
                        time.sleep(0.002)  # pacing only: leave the senders some CPU
                # Nothing is sent any more: deliver until no payload is pending (a delivery
                # that finds nothing may only have met the other deliverer's lock).
                while deliver(mapping) or gaesignals.pending(SIGNAL)[SIGNAL].count:
                    if time.monotonic() > deadline:
                        raise TimeoutError("the final drain did not finish in time")
                    time.sleep(0.002)
            finally:
                store.close()
