"""The frame layout: its constants, the records a read gives, and the metadata entries (see
:mod:`gaesignals.frames` for the format)."""

from __future__ import annotations

import struct
from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple

MAGIC = b"\xa7\x5c"
VERSION = 3
FLAG_SIGNED = 0x01
FLAG_JSON = 0x02
FLAG_SPREAD = 0x04
#: A cancellation: not a payload; its body is the 8-byte id of the payload it cancels.
FLAG_CANCEL = 0x08
KNOWN_FLAGS = FLAG_SIGNED | FLAG_JSON | FLAG_SPREAD | FLAG_CANCEL
#: The widest spread a marker can claim; a larger claim reads as this (bounded work per read).
#: Reached by doubling from 1: twelve widenings, 4,096 keys of ``max_value_size`` each.
MAX_SPREAD = 4096

HEADER = struct.Struct(">2sBBHHI8s")
HEADER_SIZE = HEADER.size  # 20
#: Metadata entry types.
META_NOT_BEFORE = 1
#: The trace context of the send (``traceparent`` and friends, one ``name:value`` a line).
META_TRACE = 3
#: The payload's coalesce key (UTF-8, at most 255 bytes; empty: the signal's one key).
META_COALESCE = 4
#: A coalesced payload's run: its send time (Unix ms), then its debounce and debounce_max
#: (ms, 0: none), 8 + 4 + 4 bytes big-endian (see :func:`coalesce_of`).
META_RUN = 5
#: The longest metadata a frame may carry.
MAX_META = 0xFFFF
TAG_SIZE = 32
KEY_ID_SIZE = 2
SEAL_SIZE = 4
#: CRC-32's residue: the CRC of any bytes followed by their own CRC (little-endian). A frame's
#: seal is its CRC started from this value, so a sealed frame's CRC from it is it again.
SEALED = 0x2144DF1C
MAX_ATTEMPTS_FIELD = 0xFFFF


def sent_at(ident: bytes) -> int:
    """The Unix second a frame was framed (sent), from its id."""
    return int.from_bytes(ident[:4], "big")


class Frame(NamedTuple):
    """One parsed, verified frame and where it sits in the value it came from."""

    start: int
    end: int
    flags: int
    attempts: int
    ident: bytes
    body: bytes
    #: Its metadata entries, raw (see :func:`metadata`); b"" for most payloads.
    meta: bytes = b""


def key_id_in(value: bytes, frame: Frame) -> str:
    """The key id (hex) a signed ``frame`` of ``value`` carries, "" for an unsigned one."""
    if not frame.flags & FLAG_SIGNED:
        return ""
    return value[frame.start + HEADER_SIZE : frame.start + HEADER_SIZE + KEY_ID_SIZE].hex()


def metadata(meta: bytes) -> dict[int, bytes] | None:
    """A frame's metadata entries by type (the last of a type wins), or None when they do not
    fit the bytes they are in."""
    entries: dict[int, bytes] = {}
    pos, size = 0, len(meta)
    while pos < size:
        if pos + 2 > size or pos + 2 + meta[pos + 1] > size:
            return None
        entries[meta[pos]] = meta[pos + 2 : pos + 2 + meta[pos + 1]]
        pos += 2 + meta[pos + 1]
    return entries


def meta_entry(kind: int, value: bytes) -> bytes:
    """One metadata entry, to join with others as an :func:`encode` ``meta``."""
    if not 0 <= kind <= 0xFF or len(value) > 0xFF:
        raise ValueError("a metadata entry is a type byte and at most 255 bytes")
    return bytes((kind, len(value))) + value


def not_before(frame: Frame) -> int:
    """The Unix millisecond before which ``frame`` is not to be delivered (0: none): its last
    not-before entry of 8 bytes, read as the Redis take script reads it (so Python and the
    store agree on what that script kept)."""
    meta = frame.meta
    if not meta:
        return 0
    due, pos, size = 0, 0, len(meta)
    while pos + 2 <= size and pos + 2 + meta[pos + 1] <= size:
        if meta[pos] == META_NOT_BEFORE and meta[pos + 1] == 8:
            due = int.from_bytes(meta[pos + 2 : pos + 10], "big")
        pos += 2 + meta[pos + 1]
    return due


class Coalesce(NamedTuple):
    """What a coalesced payload's metadata says: its key, when it was sent, and its debounce."""

    key: bytes
    sent_ms: int
    debounce_ms: int
    debounce_max_ms: int


def coalesce_of(frame: Frame) -> Coalesce | None:
    """The coalesce entries of ``frame`` (None: it is not coalesced). A key without a well-formed
    run entry reads as sent at time 0 with no debounce: the oldest of its key."""
    if not frame.meta:
        return None
    entries = metadata(frame.meta)
    if not entries or META_COALESCE not in entries:
        return None
    run = entries.get(META_RUN, b"")
    if len(run) != 16:
        return Coalesce(entries[META_COALESCE], 0, 0, 0)
    return Coalesce(
        entries[META_COALESCE],
        int.from_bytes(run[:8], "big"),
        int.from_bytes(run[8:12], "big"),
        int.from_bytes(run[12:], "big"),
    )


@dataclass(frozen=True, slots=True)
class BadRegion:
    """A stretch of bytes that could not be read as a frame, and why."""

    start: int
    end: int
    reason: str
    #: The payloads lost with it: the frame magics it holds, at least 1 (five tampered frames in
    #: a row are one region, and five payloads dropped, not one).
    payloads: int = 1


def dropped(bad: Sequence[BadRegion]) -> int:
    """How many payloads the bad regions of a value hold (see :attr:`BadRegion.payloads`)."""
    return sum(region.payloads for region in bad)


#: Why a frame is held (see the module docstring): signed with a key this reader does not
#: hold (its :attr:`Held.key_id` names it), unsigned while a key is configured, or pickled
#: while this reader may not unpickle it (the JSON codec without a key to verify it).
HELD_KEY = "key"
HELD_UNSIGNED = "unsigned"
HELD_PICKLED = "pickled"


class Held(NamedTuple):
    """A well-formed frame this reader may not deliver, kept for one that may, and why."""

    frame: Frame
    why: str
    #: The key id (hex) of the key that signed it, for :data:`HELD_KEY`; else "".
    key_id: str = ""


class QueueRead(NamedTuple):
    """A queue value read: its payload frames, its unreadable regions, and how wide its spread
    markers say the signal is."""

    found: list[Frame]
    bad: list[BadRegion]
    #: The widest spread marker's width (0: no marker), at most :data:`MAX_SPREAD`.
    marker_width: int
    #: The bytes the value's spread markers take (not payload bytes).
    marker_bytes: int
    #: The payload frames this reader may not deliver (see the module docstring), in order.
    held: list[Held]
    #: The verified cancel frames (:data:`FLAG_CANCEL`), in order; never held, never payloads.
    cancels: list[Frame]


def held_reason(why: str, key_id: str) -> str:
    """Why a held frame cannot be read here, as a log line's reason."""
    if why == HELD_KEY:
        return f"signed with key id {key_id}, not held here"
    if why == HELD_UNSIGNED:
        return "unsigned frame while a secret key is configured"
    return "a pickled frame while the codec is json and no secret key verifies it"
