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
from .exceptions import BadFrame
from .keys import check_name, signal_keys
from .mapping import Handler, MappingArg, SignalMapping, passes_name
from .registry import registry


def send_now(name: str, data: Any = None, mapping: MappingArg | None = None) -> list[object]:
    """Run the handlers of ``name`` on ``data`` now, in this process, and return their results.

    The handlers are the default registry's receivers, or ``mapping``'s when given. The payload
    still goes through the codec and a signed frame, exactly as a deferred send and delivery
    would take it, so a payload that could not be sent or decoded fails here too. A handler's
    exception propagates (the remaining handlers do not run).
    """
    settings = get_settings()
    keys = signal_keys(check_name(name), settings.namespace)
    raw = encode_payload(data, keys, settings)
    found, bad = frames.parse(raw, keys.queue.encode(), settings.secret_keys)
    if bad or len(found) != 1:
        raise BadFrame(f"a payload of {name!r} did not survive its own framing")
    value = decode(found[0], settings)
    if mapping is None:
        handlers: Sequence[Handler] = registry.receivers(name)
    else:
        signals = SignalMapping.coerce(mapping)
        handlers = signals.handlers(name) if name in signals else ()
    return [_call(handler, value, name) for handler in handlers]


def has_receivers(name: str) -> bool:
    """Whether an eager send of ``name`` has handlers to run (else it is stored as usual)."""
    return bool(registry.receivers(name))


def _call(handler: Handler, data: Any, name: str) -> object:
    if passes_name(handler):
        return handler(data, signal_name=name)
    return handler(data)
