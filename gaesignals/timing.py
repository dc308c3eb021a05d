"""When a payload may be delivered: a send's ``delay`` or ``eta`` made a not-before time.

The cache is a cache, so a delay has a ceiling, :data:`MAX_DELAY`: a payload waits in the same
key as the others, where eviction can take it like any pending payload, and the longer it
waits the likelier that is. Seven days covers reminders and retries; for longer, keep the
schedule in a database and send when it is due. A signal's ``ttl`` counts from the time a
payload is due, not from its send, so a delay never expires a payload by itself.

Times are Unix milliseconds read from :data:`gaesignals.frames.clock`, the one clock seam that
frame ids and ``ttl`` use too.
"""

from __future__ import annotations

import math
from datetime import datetime, timedelta

from . import frames
from .exceptions import InvalidDelay

#: The longest a send may wait, in seconds (see the module docstring).
MAX_DELAY = 7 * 24 * 3600


def now_ms() -> int:
    """The current Unix time in milliseconds, on the library's clock."""
    return int(frames.clock() * 1000)


def not_before(delay: float | timedelta | None, eta: datetime | None) -> int:
    """The Unix millisecond a payload sent now with ``delay`` (seconds or a timedelta) or
    ``eta`` (an aware datetime) is due; 0 when it is due at once. Raises
    :class:`~gaesignals.exceptions.InvalidDelay` for what cannot be honoured."""
    if delay is not None and eta is not None:
        raise InvalidDelay("give a send a delay or an eta, not both")
    if eta is not None:
        if not isinstance(eta, datetime):
            raise InvalidDelay(f"eta must be a datetime, not {type(eta).__name__}")
        if eta.tzinfo is None or eta.utcoffset() is None:
            raise InvalidDelay("eta must be an aware datetime (with a tzinfo), not a naive one")
        seconds = eta.timestamp() - frames.clock()
        if seconds <= 0:
            return 0  # due already: the first delivery takes it
    elif delay is None:
        return 0
    else:
        seconds = _seconds(delay)
        if seconds == 0:
            return 0
    if seconds > MAX_DELAY:
        raise InvalidDelay(
            f"a send may wait at most {MAX_DELAY} s ({MAX_DELAY // 86400} days); "
            f"{seconds:.0f} s asked: the cache may evict what waits that long"
        )
    return now_ms() + math.ceil(seconds * 1000)


def _seconds(delay: object) -> float:
    if isinstance(delay, timedelta):
        seconds = delay.total_seconds()
    elif isinstance(delay, int | float) and not isinstance(delay, bool):
        seconds = float(delay)
    else:
        raise InvalidDelay(f"delay must be seconds or a timedelta, not {type(delay).__name__}")
    if math.isnan(seconds) or seconds < 0:
        raise InvalidDelay(f"delay must be 0 or more seconds, got {delay!r}")
    return seconds


def meta_for(due: int) -> bytes:
    """The frame metadata of a payload due at ``due`` (b"" when due at once)."""
    if not due:
        return b""
    return frames.meta_entry(frames.META_NOT_BEFORE, due.to_bytes(8, "big"))
