"""Helpers for the asyncio tests: a store whose calls can be held, and an ASGI app that
records what it was given."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from gaesignals.stores import Connection, Store
from gaesignals.testing.doubles import Forwarding

#: How long a test waits for another thread before failing: bounded, never a sleep.
WAIT = 10.0


class GatedStore(Forwarding):
    """A store in front of ``inner`` whose connections, once ``gate()`` is called, wait for
    ``release`` (setting ``entered`` first), as a slow cache would keep the caller waiting;
    ``connections`` counts those asked for since."""

    fast_send = None
    native = None

    def __init__(self, inner: Store) -> None:
        super().__init__(inner)
        self.gated = False
        self.connections = 0
        self.entered = threading.Event()
        self.release = threading.Event()

    def gate(self) -> None:
        self.gated = True
        self.connections = 0

    @contextmanager
    def connection(self) -> Iterator[Connection]:
        self.connections += 1
        if self.gated:
            self.entered.set()
            if not self.release.wait(WAIT):
                raise AssertionError("the gated store was never released")
        with self.inner.connection() as conn:
            yield conn


class RecordingApp:
    """An ASGI app that records each call's scope, receive and send, and what it received;
    it answers HTTP requests with ``body`` and echoes nothing else."""

    def __init__(self, body: bytes = b"ok") -> None:
        self.body = body
        self.calls: list[tuple[Any, Any, Any]] = []
        self.received: list[Any] = []

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        self.calls.append((scope, receive, send))
        if scope["type"] == "http":
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await send({"type": "http.response.body", "body": self.body})
        else:
            self.received.append(await receive())


class Exchange:
    """One ASGI connection's two sides: ``incoming`` messages to receive, ``sent`` ones."""

    def __init__(self, *incoming: dict[str, Any]) -> None:
        self.incoming = list(incoming)
        self.sent: list[dict[str, Any]] = []

    async def receive(self) -> dict[str, Any]:
        return self.incoming.pop(0)

    async def send(self, message: dict[str, Any]) -> None:
        self.sent.append(message)


async def wait_for(event: threading.Event) -> bool:
    """Wait for a thread's ``event`` without holding the loop (bounded by :data:`WAIT`)."""
    return await asyncio.to_thread(event.wait, WAIT)
