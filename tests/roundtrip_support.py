"""Round trips to App Engine's API stubs, counted per thread: the RPCs a thread issues before it
waits on any of them travel together, so they are one round trip."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest


class RoundTrips:
    """Counts each thread's round trips while installed (see :meth:`counting`)."""

    def __init__(self) -> None:
        self._local = threading.local()

    def _state(self) -> Any:
        local = self._local
        if not hasattr(local, "trips"):
            local.trips, local.waited = 0, True
        return local

    def issued(self) -> None:
        """An RPC leaves: a new round trip unless it joins RPCs not yet waited on."""
        state = self._state()
        if state.waited:
            state.trips += 1
            state.waited = False

    def waited(self) -> None:
        """This thread waits on an RPC: the next one it issues is a new round trip."""
        self._state().waited = True

    @property
    def trips(self) -> int:
        """This thread's round trips so far."""
        return int(self._state().trips)

    @contextmanager
    def counting(self) -> Iterator[RoundTrips]:
        """Reset this thread's count, and yield this counter."""
        state = self._state()
        state.trips, state.waited = 0, True
        yield self


def install(monkeypatch: pytest.MonkeyPatch) -> RoundTrips:
    """Wrap the App Engine RPC layer (``UserRPC.make_call`` and ``wait``) to count round trips."""
    from google.appengine.api.apiproxy_stub_map import UserRPC

    counter = RoundTrips()
    make_call, wait = UserRPC.make_call, UserRPC.wait

    def counted_call(rpc: Any, *args: Any, **kwargs: Any) -> Any:
        counter.issued()
        return make_call(rpc, *args, **kwargs)

    def counted_wait(rpc: Any) -> Any:
        counter.waited()
        return wait(rpc)

    monkeypatch.setattr(UserRPC, "make_call", counted_call)
    monkeypatch.setattr(UserRPC, "wait", counted_wait)
    return counter
