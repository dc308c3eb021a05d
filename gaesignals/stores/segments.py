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
"""

from __future__ import annotations

import hashlib
import os
import struct
from collections.abc import Sequence

#: A queue key past this many bytes of frames (not counting pointers) moves them to a segment.
#: memcached's append costs the same up to about 128 KiB and twice as much at 1 MB.
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


def spilled_size(value: bytes) -> int:
    """The logical size of a queue value: its segments' bytes plus the frames after its
    pointers (what a reader would get back)."""
    found, start = pointers(value)
    return sum(length for _, length in found) + len(value) - start


def join(value: bytes, start: int, parts: Sequence[bytes | None]) -> bytes:
    """The logical value: each segment read (a missing one, evicted, reads as nothing), then
    the frames after the pointers."""
    return b"".join([*(part for part in parts if part is not None), value[start:]])


def crossed(size: int, added: int) -> bool:
    """Whether an append of ``added`` bytes that left a queue key at ``size`` bytes took it past
    a multiple of :data:`SEGMENT_BYTES` (one move is tried per multiple, by that sender)."""
    return size > SEGMENT_BYTES and size // SEGMENT_BYTES != (size - added) // SEGMENT_BYTES


__all__ = [
    "MAX_POINTERS",
    "POINTER_MAGIC",
    "POINTER_SIZE",
    "SEGMENT_BYTES",
    "crossed",
    "join",
    "new_id",
    "pointer",
    "pointers",
    "segment_key",
    "segment_keys",
    "spilled_size",
]
