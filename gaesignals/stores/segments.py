"""A long queue kept as bounded segments, so that a send costs the same however long it is.

memcached's ``append`` copies the whole item, and App Engine's gets + cas rewrites it, so one
ever-growing value makes every send cost more than the last. Once a queue key holds more than
:data:`SEGMENT_BYTES` of frames, the sender whose append took it past a multiple of that moves
those frames to a segment key of their own and leaves a pointer in their place, in one ``cas``::

    queue key:  [pointer 1][pointer 2] ... [frames appended since the last move]
    pointer:    magic b"\\xa7\\x5d" (2) | segment id (8) | segment length (4, big-endian)

A reader joins the segments in pointer order, then the frames after the pointers: the same
bytes, in the same order, as one value would have held (send order is kept). Only the stores
see segments: delivery reads and writes whole queues as before, and the stores delete a queue's
segments once a ``cas`` has replaced the value that pointed to them.

A segment's key is derived from its queue key and its id (keyed by neither: the id is random),
so a pointer copied into another queue names no key of that queue's, and a tampered pointer
can only name segments of its own queue. Segment keys start with ``gs~``, which no signal key
does (theirs start with ``gs:``).

Anyone who can write to the cache can plant pointers, so a read joins only what a legitimate
queue could hold (:func:`plan`): pointers only in queue keys, each segment at most once, the
declared lengths within a budget, and a segment only when its length is the one its pointer
declares. A pointer refused by those rules stays in the joined value as its own 14 bytes, which
the frame reader then reports as an unreadable region (logged, dropped, counted): a read never
costs more than the budget, however the pointers are forged.
"""

from __future__ import annotations

import hashlib
import os
import struct
from collections.abc import Sequence

#: A queue key past this many bytes of frames (not counting pointers) moves them to a segment.
#: memcached's append to a key this long costs what it costs to a short one (BENCHMARKS.md,
#: session 4: segments).
SEGMENT_BYTES = 64 * 1024
POINTER_MAGIC = b"\xa7\x5d"
POINTER = struct.Struct(">2s8sI")
POINTER_SIZE = POINTER.size  # 14
#: At most this many pointers are read from the start of a value: a legitimate queue has a few
#: dozen (its limit over half a segment), and tampered bytes must not make a read ask for more.
MAX_POINTERS = 1024


def pointer(ident: bytes, length: int) -> bytes:
    return POINTER.pack(POINTER_MAGIC, ident, length)


def new_id() -> bytes:
    return os.urandom(8)


def segment_key(queue: str, ident: bytes) -> str:
    """The key of segment ``ident`` of the queue at ``queue`` (a key without location)."""
    digest = hashlib.blake2b(queue.encode("utf-8") + b"\x00" + ident, digest_size=12)
    return "gs~" + digest.hexdigest()


def pointers(value: bytes) -> tuple[list[tuple[bytes, int]], int]:
    """The (id, length) of each pointer at the start of ``value``, and where its frames start.

    A value that does not start with a pointer has none (the common case, one comparison).
    """
    if value[:2] != POINTER_MAGIC:
        return [], 0
    found: list[tuple[bytes, int]] = []
    start = 0
    while (
        value[start : start + 2] == POINTER_MAGIC
        and start + POINTER_SIZE <= len(value)
        and len(found) < MAX_POINTERS
    ):
        _, ident, length = POINTER.unpack_from(value, start)
        found.append((ident, length))
        start += POINTER_SIZE
    return found, start


def segment_keys(queue: str, found: Sequence[tuple[bytes, int]]) -> list[str]:
    return [segment_key(queue, ident) for ident, _ in found]


def is_queue_key(key: str) -> bool:
    """Whether ``key`` is a queue key (``gs:<namespace>:q[h][shard]:...``): only those hold
    pointers; a pointer planted in a counter, lock or cursor is read as the bytes it is."""
    parts = key.split(":", 3)
    return len(parts) == 4 and parts[0] == "gs" and parts[2].rstrip("0123456789") in ("q", "qh")


def budget(max_value_size: int) -> int:
    """How many bytes of segments one queue's read joins at most: twice the logical size a send
    lets a queue reach, room for appends that raced past it."""
    return 2 * max_value_size


def plan(key: str, value: bytes, limit: int) -> tuple[list[str | None], int]:
    """For each pointer at the start of ``value`` (the queue at ``key``), the segment key to read,
    or None when the pointer is refused (a repeated id, or one that would take the declared
    bytes accepted past ``limit``); and
    where the frames after the pointers start."""
    found, start = pointers(value)
    names: list[str | None] = []
    seen: set[bytes] = set()
    total = 0
    for ident, length in found:
        if ident in seen or total + length > limit:
            names.append(None)
        else:
            seen.add(ident)
            total += length
            names.append(segment_key(key, ident))
    return names, start


def spilled_size(value: bytes) -> int:
    """The logical size of a queue value: its segments' bytes plus the frames after its
    pointers (what a reader would get back)."""
    found, start = pointers(value)
    return sum(length for _, length in found) + len(value) - start


class _Refused(bytes):
    """The type of :data:`REFUSED`, so that no segment read can be mistaken for it."""


#: In :func:`join`'s ``parts``: the pointer was refused by :func:`plan`, nothing was read.
REFUSED: bytes = _Refused()


def join(value: bytes, start: int, parts: Sequence[bytes | None]) -> bytes:
    """The logical value: for each pointer, in order, its segment (a missing one, evicted,
    reads as nothing), or the pointer's own bytes when it was refused (``REFUSED``) or its
    segment is not the length it declares; then the frames after the pointers."""
    pieces: list[bytes] = []
    for index, part in enumerate(parts):
        if part is None:
            continue
        at = index * POINTER_SIZE
        if part is not REFUSED and len(part) == POINTER.unpack_from(value, at)[2]:
            pieces.append(part)
        else:
            pieces.append(value[at : at + POINTER_SIZE])
    pieces.append(value[start:])
    return b"".join(pieces)


def crossed(size: int, added: int) -> bool:
    """Whether an append of ``added`` bytes that left a queue key at ``size`` bytes took it past
    a multiple of :data:`SEGMENT_BYTES` (one move is tried per multiple, by that sender)."""
    return size > SEGMENT_BYTES and size // SEGMENT_BYTES != (size - added) // SEGMENT_BYTES


__all__ = [
    "MAX_POINTERS",
    "POINTER_MAGIC",
    "POINTER_SIZE",
    "REFUSED",
    "SEGMENT_BYTES",
    "budget",
    "crossed",
    "is_queue_key",
    "join",
    "new_id",
    "plan",
    "pointer",
    "pointers",
    "segment_key",
    "segment_keys",
    "spilled_size",
]
