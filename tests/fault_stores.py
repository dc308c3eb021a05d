"""Stores and store doubles for the fault-injection suite (``test_faults_*.py``): the parent's
store configured as the children configure theirs, App Engine's memcache stub, item limits,
raw reads behind the library's back, and pass-through stores that inject a fault at one call.
"""

from __future__ import annotations

import os
import pickle
import signal
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

import gaesignals
from gaesignals import frames
from gaesignals.config import get_settings
from gaesignals.keys import shard_queues, signal_keys
from gaesignals.stores import DEFAULT_MAX_VALUE_SIZE, Store
from gaesignals.stores.appengine import AppEngineStore
from gaesignals.stores.memcached import MemcachedStore
from gaesignals.testing import MemcachedServer

from . import concurrency_workers as cw
from . import fault_threads as ft


def stopped(pid: int) -> bool:
    """True once every thread of the process is in the stopped state (SIGSTOP delivered: the
    main thread stops first, memcached's worker threads a moment later)."""
    states = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        states.append((task / "stat").read_text().rpartition(")")[2].split()[0])
    return all(state == "T" for state in states)


@contextmanager
def configured(store: Store) -> Iterator[Store]:
    """``store`` as this process's gaesignals store (signed frames, like the children)."""
    gaesignals.configure(store=store, secret_key=cw.SECRET_KEY)
    try:
        yield store
    finally:
        close = getattr(store, "close", None)
        if close is not None:
            close()


def appengine_store(max_value_size: int | None = None) -> AppEngineStore:
    """App Engine's memcache stub (the test's ``gaesignals_testbed``) as gaesignals' store, with
    signed frames like the children's, and ``max_value_size`` as its item limit if given."""
    store = AppEngineStore(max_value_size=max_value_size or DEFAULT_MAX_VALUE_SIZE)
    gaesignals.configure(store=store, secret_key=cw.SECRET_KEY)
    return store


def raw_value(key: str) -> bytes | None:
    """A key's value, read behind the library's back through the configured store."""
    settings = get_settings()
    with settings.store.connection() as conn:
        item = conn.gets_many([key]).get(key)
    return None if item is None else item[0]


@contextmanager
def limited_store(
    kind: str, request: pytest.FixtureRequest, max_value_size: int
) -> Iterator[Store]:
    """A fresh store of ``kind`` with that item limit: "appengine", the stub of the test's
    ``gaesignals_testbed``; "memcached", the plugin's session server, flushed."""
    if kind == "appengine":
        request.getfixturevalue("gaesignals_testbed")
        yield appengine_store(max_value_size)
    else:
        server: MemcachedServer = request.getfixturevalue("gaesignals_memcached")
        server.flush()
        url = f"{server.url}?max_value_size={max_value_size}"
        with configured(MemcachedStore.from_url(url)) as store:
            yield store


def payload_of_frame_size(name: str, size: int) -> dict[str, Any]:
    """A payload whose frame, for ``name`` under the current settings, is ``size`` bytes."""
    settings = get_settings()
    keys = signal_keys(name, settings.namespace)

    def framed(pad: int) -> int:
        return len(
            frames.encode(
                pickle.dumps({"id": 0, "pad": "x" * pad}, 5),
                keys.queue.encode(),
                settings.secret_keys,
            )
        )

    pad = size - (framed(1000) - 1000)
    assert framed(pad) == size
    return {"id": 0, "pad": "x" * pad}


class KillingStore(ft.PassThroughStore):
    """Passes calls through; the first ``cas_many`` first SIGKILLs one memcached server (and
    waits for it to be gone), so that call meets a dead node with its sockets still open."""

    def __init__(self, inner: MemcachedStore, victim: MemcachedServer) -> None:
        super().__init__(inner)
        self.victim = victim

    def before(self, method: str, args: tuple[Any, ...]) -> None:
        if method == "cas_many" and self.victim.process is not None:
            self.victim.stop()


class RacingStore(ft.PassThroughStore):
    """Passes calls through, but just before the first ``add_many`` that creates ``key``,
    another sender's first payload for that key is added (through its own client): a real
    race on the server, scheduled deterministically."""

    def __init__(self, inner: MemcachedStore, server: MemcachedServer, key: str, frame: bytes):
        super().__init__(inner)
        self.server = server
        self.key = key
        self.frame: bytes | None = frame

    def before(self, method: str, args: tuple[Any, ...]) -> None:
        if method == "add_many" and self.frame is not None and self.key in args[0]:
            from pymemcache.client.base import Client

            other = Client(self.server.address, default_noreply=False)
            try:
                assert other.add(self.key, self.frame, noreply=False)
            finally:
                other.close()
            self.frame = None


class PausingStore(ft.PassThroughStore):
    """Passes calls through; the first ``cas_many`` first pauses memcached (SIGSTOP, and waits
    until every thread of it is stopped), so that call times out with its request sent."""

    def __init__(self, inner: MemcachedStore, pid: int) -> None:
        super().__init__(inner)
        self.pid = pid
        self.paused = False

    def before(self, method: str, args: tuple[Any, ...]) -> None:
        if method == "cas_many" and not self.paused:
            self.paused = True
            os.kill(self.pid, signal.SIGSTOP)
            deadline = time.monotonic() + 10
            while not stopped(self.pid):
                assert time.monotonic() < deadline, "memcached did not stop"
                time.sleep(0.005)


class Killed(BaseException):
    """Stands in for the deliverer's process dying (nothing catches it)."""


class DiesBeforeAcknowledging(ft.PassThroughStore):
    """Passes calls through; once a write has reached one of ``base``'s other shards (a
    move), the next write to ``base`` itself (its acknowledgement) kills the deliverer."""

    def __init__(self, inner: Store, base: str) -> None:
        super().__init__(inner)
        self.base = base
        self.others = set(shard_queues(base, 16)[1:])
        self.moved = False
        self.killed = False

    def before(self, method: str, args: tuple[Any, ...]) -> None:
        if method not in ("append_many", "cas_many", "add_many", "set_many") or not args:
            return
        keys = set(args[0])
        if keys & self.others:
            self.moved = True
        elif self.moved and self.base in keys and not self.killed:
            self.killed = True
            raise Killed
