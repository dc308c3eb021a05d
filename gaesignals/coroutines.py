"""Coroutine handlers, run from the synchronous delivery code.

Delivery calls every handler as a plain function of one payload. A coroutine handler's call is
wrapped (:func:`blocking`) to run its coroutine to the end before the next payload, so handlers
stay in order, one payload at a time, whichever way the delivery was started:

- the synchronous :func:`~gaesignals.deliver` (or :func:`~gaesignals.send_now`) opens a
  :func:`session`: one event loop of its own, started on the first coroutine and closed with
  the delivery, shared by all its payloads;
- :func:`in_worker` (behind ``adeliver``, ``asend``, ``asend_now`` and the ASGI middleware)
  runs the synchronous code in a worker thread, and each coroutine on the caller's loop, so
  neither the store calls nor the plain handlers block that loop.

A synchronous call inside a running event loop refuses coroutine handlers up front
(:func:`refuse_running_loop`): its own loop could not run there, and waiting on the running
one from its own thread would deadlock.
"""

from __future__ import annotations

import contextvars
import inspect
from collections.abc import Callable, Coroutine, Iterable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any, TypeVar

from .exceptions import EventLoopRunning

if TYPE_CHECKING:
    import asyncio

T = TypeVar("T")
Awaited = Coroutine[Any, Any, object]


def is_coroutine_handler(handler: Callable[..., object]) -> bool:
    """Whether calling ``handler`` gives a coroutine to await: an ``async def`` function or
    method (a ``functools.partial`` of one too), or an object whose ``__call__`` is one."""
    if inspect.iscoroutinefunction(handler):
        return True
    if inspect.isroutine(handler) or not callable(handler):
        return False
    return inspect.iscoroutinefunction(type(handler).__call__)


def _bind_asyncio() -> None:
    """Import asyncio here when a coroutine is first run or refused: a WSGI app never needs
    it, and importing it would lengthen every cold start (App Engine's included)."""
    global asyncio
    import asyncio


class _OwnLoop:
    """A synchronous delivery's event loop: made on its first coroutine, closed with it."""

    def __init__(self) -> None:
        self._runner: asyncio.Runner | None = None

    def run(self, coroutine: Awaited) -> object:
        if self._runner is None:
            _bind_asyncio()
            self._runner = asyncio.Runner()
        # The handler sees the caller's context (a delivery's CONSUMER span among it), not
        # the one the runner copied when it was made.
        return self._runner.run(coroutine, context=contextvars.copy_context())

    def close(self) -> None:
        if self._runner is not None:
            self._runner.close()


class _CallerLoop:
    """The loop that awaits a worker thread: the thread hands it each coroutine and waits."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop

    def run(self, coroutine: Awaited) -> object:
        # The task starts in a copy of this thread's context (call_soon_threadsafe copies it),
        # so the handler sees its delivery's CONSUMER span.
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result()


_driver: ContextVar[_OwnLoop | _CallerLoop | None] = ContextVar("gaesignals_driver", default=None)


def run(coroutine: Awaited) -> object:
    """Run a coroutine handler's ``coroutine`` to its end, where the current delivery says;
    outside any (a runner used on its own), on an event loop of its own."""
    driver = _driver.get()
    if driver is not None:
        return driver.run(coroutine)
    _bind_asyncio()
    try:
        refuse_running_loop("deliver", [coroutine])
    except EventLoopRunning:
        coroutine.close()  # never awaited: closed, so no "never awaited" warning follows
        raise
    return asyncio.run(coroutine)


def blocking(call: Callable[[Any], Any]) -> Callable[[Any], object]:
    """``call`` (a coroutine handler's call form) as a plain call that returns once the
    coroutine has finished, with its result or its exception."""

    def run_to_end(data: Any) -> object:
        return run(call(data))

    return run_to_end


def refuse_running_loop(call: str, handlers: Iterable[object]) -> None:
    """Raise :class:`~gaesignals.EventLoopRunning` if an event loop runs in this thread."""
    _bind_asyncio()
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return
    raise EventLoopRunning(call, handlers)


@contextmanager
def session() -> Iterator[None]:
    """One synchronous delivery: its coroutines share one loop of its own, or, inside
    :func:`in_worker`, go to the caller's loop."""
    if _driver.get() is not None:
        yield
        return
    own = _OwnLoop()
    token = _driver.set(own)
    try:
        yield
    finally:
        _driver.reset(token)
        own.close()


async def in_worker(function: Callable[..., T], /, *args: Any, **kwargs: Any) -> T:
    """``function(*args, **kwargs)`` in a worker thread, its coroutine handlers awaited on
    the running loop; its result or its exception."""
    _bind_asyncio()
    driver = _CallerLoop(asyncio.get_running_loop())
    return await asyncio.to_thread(_driven, driver, function, args, kwargs)


def _driven(
    driver: _CallerLoop, function: Callable[..., T], args: tuple[Any, ...], kwargs: dict[str, Any]
) -> T:
    token = _driver.set(driver)
    try:
        return function(*args, **kwargs)
    finally:
        _driver.reset(token)
