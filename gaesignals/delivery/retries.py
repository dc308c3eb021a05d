"""What becomes of a reliable payload whose attempt failed: a retry later, or a dead letter.

A payload to retry after a wait is rewritten in place with its attempts and its new not-before
time in its frame (re-signed, as its metadata changed; see
:func:`~gaesignals.queue.reliable.reschedule`), and the payloads behind it go on; a dead letter
carries why it died, the last error in its metadata (type 2: its type, message and the
innermost line of its traceback, at most 255 bytes). While a delivery is under way its progress
cursor (:mod:`gaesignals.queue.progress`) lists the payloads it rescheduled, so a deliverer that
dies after one leaves its successor enough to reschedule it the same way, never to take it as
done.
"""

from __future__ import annotations

import math
import traceback

from .. import frames
from ..queue.reliable import META_ERROR
from ..timing import MAX_DELAY


def error_text(error: BaseException) -> str:
    """``Type: message`` and the innermost traceback line, in at most 255 UTF-8 bytes."""
    text = f"{type(error).__name__}: {error}"
    tail = traceback.extract_tb(error.__traceback__)[-1:] if error.__traceback__ else []
    if tail:
        text += f" ({tail[0].filename.rsplit('/', 1)[-1]}:{tail[0].lineno} in {tail[0].name})"
    return text.encode("utf-8")[:255].decode("utf-8", "ignore")


def last_error(frame: frames.Frame) -> str | None:
    """The last error a frame's metadata names, if any."""
    entries = frames.metadata(frame.meta) if frame.meta else None
    found = None if entries is None else entries.get(META_ERROR)
    return None if found is None else found.decode("utf-8", "replace")


def due_after(now: int, wait: float) -> int:
    """The Unix millisecond ``wait`` seconds after ``now`` (ms), waiting at most
    :data:`~gaesignals.timing.MAX_DELAY` (what a send may wait, and a cursor names)."""
    return now + math.ceil(min(wait, MAX_DELAY) * 1000)
