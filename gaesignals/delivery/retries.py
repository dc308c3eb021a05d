"""What becomes of a reliable payload whose attempt failed: a retry later, or a dead letter.

A payload to retry after a wait is rewritten in place with its attempts and its new not-before
time in its frame (re-signed, as its metadata changed), and the payloads behind it go on; a
dead letter carries why it died, the last error in its metadata (type 2: its type, message and
the innermost line of its traceback, at most 255 bytes). While a delivery is under way its
progress cursor lists the payloads it rescheduled, so a deliverer that dies after one leaves
its successor enough to reschedule it the same way, never to take it as done.
"""

from __future__ import annotations

import math
import traceback
from collections.abc import Sequence

from .. import frames
from ..timing import meta_for

#: Metadata entry type of a dead letter's (or a retried payload's) last error.
META_ERROR = 2
#: The payloads one delivery reschedules in one shard before it stops there instead: each is
#: named in the progress cursor, rewritten before every payload.
MAX_RESCHEDULED = 16


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


def rebuild(
    frame: frames.Frame,
    signal_key: bytes,
    secret_keys: Sequence[bytes],
    *,
    attempts: int,
    due: int = 0,
    error: str | None = None,
) -> bytes:
    """``frame`` framed anew with ``attempts``, not before ``due`` (Unix ms, 0: at once) and
    naming ``error``: same id, same body, its other metadata kept."""
    entries = dict(frames.metadata(frame.meta) or {}) if frame.meta else {}
    entries.pop(frames.META_NOT_BEFORE, None)
    if error is not None:
        entries[META_ERROR] = error.encode("utf-8")[:255]
    meta = meta_for(due) + b"".join(frames.meta_entry(k, v) for k, v in entries.items())
    return frames.encode(
        frame.body,
        signal_key,
        secret_keys,
        json_body=bool(frame.flags & frames.FLAG_JSON),
        attempts=attempts,
        ident=frame.ident,
        meta=meta,
    )


def due_after(now: int, wait: float) -> int:
    """The Unix millisecond ``wait`` seconds after ``now`` (ms)."""
    return now + math.ceil(wait * 1000)


def cursor_part(rescheduled: Sequence[tuple[bytes, int, int]]) -> bytes:
    """The rescheduled payloads as a cursor names them: ``id/attempts/due`` joined by ``,``."""
    return b",".join(b"%s/%d/%d" % (ident.hex().encode(), n, due) for ident, n, due in rescheduled)


def parse_cursor_part(part: bytes) -> list[tuple[bytes, int, int]]:
    """What :func:`cursor_part` wrote (entries not in its form are left out)."""
    found = []
    for entry in part.split(b",")[:MAX_RESCHEDULED] if part else []:
        fields = entry.split(b"/")
        if len(fields) != 3 or len(fields[0]) != 16:
            continue
        ident, attempts, due = fields
        if attempts.isdigit() and len(attempts) <= 5 and due.isdigit() and len(due) <= 15:
            try:
                found.append((bytes.fromhex(ident.decode()), int(attempts), int(due)))
            except ValueError:
                continue
    return found
