"""Handlers run at once, in this process: :func:`send_now`, and sends in eager mode.

Below both the sending and the delivering side, so a send in eager mode (``configure(eager=True)``)
runs its receivers without the sending module reaching up into delivery.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from . import frames
from .codec import decode, encode_payload
from .config import get_settings
from .coroutines import in_worker, is_coroutine_handler, refuse_running_loop, session
from .exceptions import BadFrame
from .keys import check_name, signal_keys
from .mapping import Handler, MappingArg, SignalMapping, call_form
from .registration import registry


def send_now(name: str, data: Any = None, mapping: MappingArg | None = None) -> list[object]:
    """Run the handlers of ``name`` on ``data`` now, in this process, and return their results.

    The handlers are the default registry's receivers, or ``mapping``'s when given. The payload
    still goes through the codec and a signed frame, exactly as a deferred send and delivery
    would take it, so a payload that could not be sent or decoded fails here too. A handler's
    exception propagates (the remaining handlers do not run).

    ``async def`` handlers are awaited in order, on an event loop of this call's own; inside a
    running event loop they raise :class:`~gaesignals.EventLoopRunning` before any handler
    runs: await :func:`asend_now` there.
    """
    settings = get_settings()
    keys = signal_keys(check_name(name), settings.namespace)
    raw = encode_payload(name, data, keys, settings)
    found, bad = frames.parse(raw, keys.queue.encode(), settings.secret_keys)
    if bad or len(found) != 1:
        raise BadFrame(f"a payload of {name!r} did not survive its own framing")
    value = decode(found[0], settings)
    if mapping is None:
        handlers: Sequence[Handler] = registry.receivers(name)
    else:
        signals = SignalMapping.coerce(mapping)
        handlers = signals.handlers(name) if name in signals else ()
    coroutines = [handler for handler in handlers if is_coroutine_handler(handler)]
    if not coroutines:
        return [call_form(handler, name)(value) for handler in handlers]
    refuse_running_loop("send_now", coroutines)
    with session():
        return [call_form(handler, name)(value) for handler in handlers]


async def asend_now(name: str, data: Any = None, mapping: MappingArg | None = None) -> list[object]:
    """:func:`send_now`, awaitable: plain handlers run in a worker thread, ``async def`` ones
    are awaited on the running loop, in order; the same results and exceptions."""
    return await in_worker(send_now, name, data, mapping)


def has_receivers(name: str) -> bool:
    """Whether an eager send of ``name`` has handlers to run (else it is stored as usual)."""
    return bool(registry.receivers(name))
