"""The byte format of pending payloads.

A signal's value in the cache is a run of frames, appended one after another::

    offset  size  field
    0       2     magic  b"\\xa7\\x5c"  (lets a reader find the next frame after a bad one)
    2       1     version (3)
    3       1     flags: bit 0 = signed (a 32-byte tag follows the header), bit 1 = JSON body,
                  bit 2 = spread marker (not a payload: its 1-byte body is how many shards
                  the signal has spread over, see :mod:`gaesignals.queue.spread`)
    4       2     attempts: failed reliable deliveries so far (rewritten with the seal)
    6       2     length of the metadata, big-endian (0: none)
    8       4     length of the body, big-endian
    12      8     frame id: the sender's Unix time in whole seconds (4 bytes, big-endian), then
                  4 random bytes; unique to this payload (reliable delivery's progress cursor
                  names a payload by it; ``ttl`` and the age of the oldest pending payload read
                  its time)
    20      2     key id, only when signed: which secret key signed it (:func:`key_id`, a
                  one-way digest of the key), so a deliverer that does not hold that key
                  keeps the frame for one that does instead of dropping it
    22      32    tag, only when signed: keyed BLAKE2b-256 over the signal's key, bytes 2-3,
                  the id, the metadata and the body
    ..      m     metadata: entries of a type (1 byte), a length (1 byte) and a value; type 1
                  is the payload's not-before time (8 bytes, big-endian Unix milliseconds),
                  type 2 a retried or dead payload's last error, type 3 the W3C trace
                  context of its send (see :mod:`gaesignals.tracing`); a reader skips
                  types it does not know
    ..      n     body: the pickled (or JSON) payload
    ..      4     seal: CRC-32 (little-endian) of every byte before it in the frame, started
                  from :data:`SEALED`

The seal makes the CRC-32 of a whole frame, started from :data:`SEALED`, come out as
:data:`SEALED` (CRC-32's residue); so does a run of whole frames, since each one hands the next
the same state. A reader therefore checks a clean value of any number of frames with one CRC
call over all of it, then walks the headers; only a value that fails that check is parsed frame
by frame, resynchronising on the magic after a bad one. The CRC catches truncation and garbage
cheaply; the tag, when a secret key is configured, is what makes a frame trusted. A frame is
never deserialized unless it passed both.

A frame this reader cannot verify only because it does not hold the key that signed it (its key
id names none of its keys), or an unsigned frame read with a key configured, is *held*: neither
verified nor refused, never deserialized, returned apart (:attr:`QueueRead.held`) so delivery can
leave it queued for a deliverer that can read it. A frame whose key id names a key this reader
holds but whose tag does not verify is tampered: a bad region, as any garbage.

Only version 3 exists: a frame of any other version reads as an unreadable region. A spread
marker is checked like any frame (a forged one is an unreadable region), never handed to a
handler and never counted as a payload.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import random
import re
import struct
import time
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, NamedTuple

MAGIC = b"\xa7\x5c"
VERSION = 3
FLAG_SIGNED = 0x01
FLAG_JSON = 0x02
FLAG_SPREAD = 0x04
_KNOWN_FLAGS = FLAG_SIGNED | FLAG_JSON | FLAG_SPREAD
#: The widest spread a marker can claim; a larger claim reads as this (bounded work per read).
MAX_SPREAD = 16

HEADER = struct.Struct(">2sBBHHI8s")
HEADER_SIZE = HEADER.size  # 20
#: Metadata entry types.
META_NOT_BEFORE = 1
#: The trace context of the send (``traceparent`` and friends, one ``name:value`` a line).
META_TRACE = 3
#: The longest metadata a frame may carry.
MAX_META = 0xFFFF
TAG_SIZE = 32
KEY_ID_SIZE = 2
SEAL_SIZE = 4
#: CRC-32's residue: the CRC of any bytes followed by their own CRC (little-endian). A frame's
#: seal is its CRC started from this value, so a sealed frame's CRC from it is it again.
SEALED = 0x2144DF1C
MAX_ATTEMPTS_FIELD = 0xFFFF

# Frame ids need to be unique, not secret: a private generator (seeded from the OS, reseeded in a
# forked child) is cheaper than os.urandom and leaves the global one alone.
_ids = random.Random()
os.register_at_fork(after_in_child=_ids.seed)
#: Where a frame id's time comes from (seconds); tests replace it to age payloads.
clock = time.time


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
    """A queue value read: its payload frames, its unreadable regions, and its spread."""

    found: list[Frame]
    bad: list[BadRegion]
    #: The widest spread marker's width (0: no marker), at most :data:`MAX_SPREAD`.
    spread: int
    #: The bytes the value's spread markers take (not payload bytes).
    marker_bytes: int
    #: The payload frames this reader may not deliver (see the module docstring), in order.
    held: list[Held]


def encode(
    body: bytes,
    signal_key: bytes,
    secret_keys: Sequence[bytes] = (),
    *,
    json_body: bool = False,
    attempts: int = 0,
    ident: bytes | None = None,
    flags: int = 0,
    meta: bytes = b"",
) -> bytes:
    """Frame one serialized payload (with its ``meta``data entries, see :func:`meta_entry`)
    for ``signal_key``, signed with the first secret key if any."""
    if json_body:
        flags |= FLAG_JSON
    if ident is None:
        ident = ((int(clock()) & 0xFFFFFFFF) << 32 | _ids.getrandbits(32)).to_bytes(8, "big")
    if secret_keys:
        flags |= FLAG_SIGNED
    attempts = min(attempts, MAX_ATTEMPTS_FIELD)
    head = HEADER.pack(MAGIC, VERSION, flags, attempts, len(meta), len(body), ident)
    if secret_keys:
        kid, state = _signer(secret_keys[0], signal_key)
        state = state.copy()
        state.update(bytes((VERSION, flags)) + ident + meta + body)
        head += kid + state.digest()
    head += meta
    return head + body + _seal(body, head)


@lru_cache(maxsize=1024)
def spread_marker(width: int, signal_key: bytes, secret_key: bytes | None = None) -> bytes:
    """The spread marker saying ``signal_key``'s signal spreads over ``width`` shards, signed
    with ``secret_key`` if given. Always the same bytes for the same arguments (its id is
    zero), so a reader can recognise its own marker at the head of a value by comparison."""
    if not 1 <= width <= MAX_SPREAD:
        raise ValueError(f"a spread is 1..{MAX_SPREAD} shards, not {width}")
    keys = () if secret_key is None else (secret_key,)
    return encode(bytes((width,)), signal_key, keys, flags=FLAG_SPREAD, ident=bytes(8))


def _seal(body: bytes, head: bytes) -> bytes:
    return zlib.crc32(body, zlib.crc32(head, SEALED)).to_bytes(4, "little")


def reseal(raw_frame: bytes) -> bytes:
    """``raw_frame`` (one whole frame, maybe edited) with its seal made right."""
    unsealed = raw_frame[:-SEAL_SIZE]
    return unsealed + zlib.crc32(unsealed, SEALED).to_bytes(4, "little")


def with_attempts(raw_frame: bytes, attempts: int) -> bytes:
    """Return ``raw_frame`` (one whole, valid frame) with its attempts counter replaced."""
    edited = raw_frame[:4] + struct.pack(">H", min(attempts, MAX_ATTEMPTS_FIELD)) + raw_frame[6:]
    return reseal(edited)


def parse(
    value: bytes, signal_key: bytes, secret_keys: Sequence[bytes] = ()
) -> tuple[list[Frame], list[BadRegion]]:
    """Split ``value`` into verified payload frames and the bad regions between them, a held
    frame (see :func:`parse_queue`) counting as a bad region: for readers that never leave
    frames queued for another process (dead letters, inspection)."""
    read = parse_queue(value, signal_key, secret_keys)
    if not read.held:
        return read.found, read.bad
    bad = read.bad + [
        BadRegion(h.frame.start, h.frame.end, held_reason(h.why, h.key_id)) for h in read.held
    ]
    return read.found, sorted(bad, key=lambda region: region.start)


def held_reason(why: str, key_id: str) -> str:
    """Why a held frame cannot be read here, as a log line's reason."""
    if why == HELD_KEY:
        return f"signed with key id {key_id}, not held here"
    if why == HELD_UNSIGNED:
        return "unsigned frame while a secret key is configured"
    return "a pickled frame while the codec is json and no secret key verifies it"


def parse_queue(
    value: bytes,
    signal_key: bytes,
    secret_keys: Sequence[bytes] = (),
    *,
    pickled: bool = True,
) -> QueueRead:
    """Split ``value`` into verified payload frames, the frames held for another reader and the
    bad regions between them, and note its spread markers (:meth:`Walker.read`).

    Never raises on any input. With ``secret_keys`` set, a frame without a tag made by one of
    them is bad, whatever its CRC says, unless it is held: signed with a key whose id names
    none of them, or unsigned. ``pickled``: whether a pickled body may be read without a key
    (the pickle codec); when not, unsigned pickled frames are held too.
    """
    return Walker(value, signal_key, secret_keys, pickled=pickled).read()


def pickled_bodies(
    value: bytes, signal_key: bytes, secret_keys: Sequence[bytes] = ()
) -> list[bytes] | None:
    """The bodies of a clean value whose frames are all pickle frames without metadata, in
    order; None when anything is unusual, and :func:`parse_queue` must be used
    (:meth:`Walker.bodies`)."""
    return Walker(value, signal_key, secret_keys).bodies()


#: The reason given for the rest of a value when searching it for frames costs too much.
_GIVE_UP = "too much garbage to search for frames"
#: What a candidate header refused before its tag was checked costs the walk's budget, beside
#: the bytes its CRC covered: searching garbage full of plausible headers stops after a few
#: thousand of them per megabyte, as random garbage does.
_REFUSAL_COST = 1024


class Walker:
    """The one frame walker over a value, in two modes: :meth:`read` (every frame checked,
    garbage skipped, frames held or refused) and :meth:`bodies` (a clean value of pickle frames
    only: their bodies, nothing built per frame; weak delivery's common case).

    Its work is bounded: checking a candidate frame costs a CRC over its declared length (valid
    frames never overlap, so they cost at most the value's size), and each refused candidate a
    fixed :data:`_REFUSAL_COST`. Past a budget of four times the value's size the rest of the
    value is given up as bad. ``candidates`` and ``spent`` count that work (tests read them).
    """

    __slots__ = (
        "budget",
        "candidates",
        "found",
        "held",
        "ids",
        "marker_bytes",
        "pickled",
        "secret_keys",
        "signal_key",
        "spent",
        "spread",
        "value",
    )

    def __init__(
        self,
        value: bytes,
        signal_key: bytes,
        secret_keys: Sequence[bytes] = (),
        *,
        pickled: bool = True,
    ) -> None:
        self.value = value
        self.signal_key = signal_key
        self.secret_keys = secret_keys
        self.pickled = pickled
        #: Candidate frame headers checked after garbage, and work units spent on checks.
        self.candidates = 0
        self.spent = 0

    def read(self) -> QueueRead:
        """Every frame of the value: verified payloads, held frames, spread markers, and the bad
        regions between them, resynchronising after a bad one on the next plausible header."""
        value, size = self.value, len(self.value)
        self.found: list[Frame] = []
        self.held: list[Held] = []
        self.spread = self.marker_bytes = 0
        self.budget = 4 * size + 65536
        self.ids = _by_key_id(tuple(self.secret_keys)) if self.secret_keys else {}
        sealed = bool(size) and zlib.crc32(value, SEALED) == SEALED
        pos, reason = self.frames(0, sealed=sealed)
        bad: list[BadRegion] = []
        while reason:  # a bad region starts at ``pos``: it ends where the next valid frame starts
            start, why = pos, reason
            while reason:
                head = _HEAD.search(value, pos + 1) if self.budget >= 0 else None
                if head is None:
                    bad.append(self.region(start, size, why if self.budget >= 0 else _GIVE_UP))
                    return self.result(bad)
                resume = head.start()
                self.candidates += 1
                pos, reason = self.frames(resume, sealed=False)
                if pos > resume:  # frames from ``resume`` on: the bad region ends there
                    bad.append(self.region(start, resume, why))
                    break
        return self.result(bad)

    def result(self, bad: list[BadRegion]) -> QueueRead:
        self.spent = 4 * len(self.value) + 65536 - self.budget
        return QueueRead(self.found, bad, self.spread, self.marker_bytes, self.held)

    def refuse(self, pos: int, why: str) -> tuple[int, str]:
        """The candidate at ``pos`` is not a frame, because ``why``: charged to the budget."""
        self.budget -= _REFUSAL_COST
        return pos, why

    def region(self, start: int, end: int, reason: str) -> BadRegion:
        """The bad region from ``start`` to ``end``, with the frames it held: each frame magic
        in it, stepping over the whole frame a plausible header declares where that fits (so
        magic inside a tag or a body is not counted again). Once the budget is spent, the
        magics left are counted as they are, by one search."""
        value, count, pos = self.value, 0, start
        while self.budget >= 0 and (head := _HEAD.search(value, pos, end)) is not None:
            at = head.start()
            count += value.count(MAGIC, pos, at) + 1
            pos = at + len(MAGIC)
            if end - at >= HEADER_SIZE + SEAL_SIZE:
                flags, _, meta, length, _ = _FAST_HEADER.unpack_from(value, at)
                tagged = _SIGNED_SIZE if flags & FLAG_SIGNED else HEADER_SIZE
                if at + tagged + meta + length + SEAL_SIZE <= end:
                    pos = at + tagged + meta + length + SEAL_SIZE
        count += value.count(MAGIC, pos, end)
        return BadRegion(start, end, reason, max(count, 1))

    def check(self, pos: int, flags: int, ident: bytes, signed: bytes, tag_end: int) -> str:
        """Why the frame at ``pos`` may not be read here ("" when it may): a reason of
        :data:`_HOLD` keeps it for another reader, any other makes it a bad region."""
        if not self.secret_keys:
            return HELD_PICKLED  # the JSON codec without a key: only JSON bodies are read
        if not flags & FLAG_SIGNED:
            return HELD_UNSIGNED
        value = self.value
        keys = self.ids.get(value[pos + HEADER_SIZE : pos + _KEY_ID_END])
        if keys is None:
            return HELD_KEY
        tag = value[pos + _KEY_ID_END : tag_end]
        if not _verify(keys, self.signal_key, value[pos + 2 : pos + 4], ident, signed, tag):
            return "signature mismatch"
        return ""

    def hold(self, why: str, frame: Frame) -> str:
        """Keep ``frame``, which may not be read here because ``why``, as held; or return the
        reason it is a bad region instead (tampered; or a spread marker, never held)."""
        if why not in _HOLD:
            return why
        if frame.flags & FLAG_SPREAD:
            return held_reason(why, self.key_id_at(frame.start))
        self.held.append(Held(frame, why, self.key_id_at(frame.start)))
        return ""

    def key_id_at(self, pos: int) -> str:
        """The key id of a signed frame at ``pos``, in hex ("" for an unsigned one)."""
        if not self.value[pos + 3] & FLAG_SIGNED:
            return ""
        return self.value[pos + HEADER_SIZE : pos + _KEY_ID_END].hex()

    def frames(self, pos: int, *, sealed: bool) -> tuple[int, str]:
        """Collect each valid frame from ``pos`` on; return where the first one that is not
        valid starts and why ("" at the end of the value). ``sealed``: the whole value passed
        the seal check, so no frame's CRC is checked again."""
        value, size, secret_keys = self.value, len(self.value), self.secret_keys
        unpack = _FAST_HEADER.unpack_from
        append = self.found.append
        new = tuple.__new__  # Frame(...) without the Python-level __new__ of a NamedTuple
        strict = bool(secret_keys) or not self.pickled  # some frames may not be read here
        ids, signal_key = self.ids, self.signal_key
        while pos < size:
            if size - pos < HEADER_SIZE + SEAL_SIZE:
                return self.refuse(pos, "truncated header")
            head, attempts, meta_length, length, ident = unpack(value, pos)
            if head not in _HEADS:
                return self.refuse(pos, _refused(value, pos))
            flags = head & 0xFF
            tag_end = pos + (_SIGNED_SIZE if flags & FLAG_SIGNED else HEADER_SIZE)
            body_start = tag_end + meta_length
            end = body_start + length + SEAL_SIZE
            if end > size:
                return self.refuse(pos, "declared length runs past the end of the value")
            if not sealed:
                self.budget -= end - pos
                if self.budget < 0:
                    return pos, _GIVE_UP
                if zlib.crc32(memoryview(value)[pos:end], SEALED) != SEALED:
                    return self.refuse(pos, "CRC mismatch")
            body = value[body_start : end - SEAL_SIZE]
            meta = value[tag_end:body_start] if meta_length else b""
            if meta and metadata(meta) is None:
                return pos, "malformed metadata"
            if strict and (secret_keys or not flags & _READABLE_UNSIGNED):
                # A frame signed with a key held here, verified inline; any other, in check().
                keys = ids.get(value[pos + HEADER_SIZE : pos + _KEY_ID_END]) if flags & 1 else None
                if keys is not None and _verify(
                    keys,
                    signal_key,
                    value[pos + 2 : pos + 4],
                    ident,
                    meta + body if meta else body,
                    value[pos + _KEY_ID_END : tag_end],
                ):
                    why = ""
                else:
                    why = self.check(pos, flags, ident, meta + body, tag_end)
                if why:
                    why = self.hold(why, new(Frame, (pos, end, flags, attempts, ident, body, meta)))
                    if why:
                        return pos, why
                    pos = end
                    continue
            if flags & FLAG_SPREAD:
                if len(body) != 1 or not body[0]:
                    return pos, "malformed spread marker"
                self.spread = max(self.spread, min(body[0], MAX_SPREAD))
                self.marker_bytes += end - pos
            else:
                append(new(Frame, (pos, end, flags, attempts, ident, body, meta)))
            pos = end
        return pos, ""

    def bodies(self) -> list[bytes] | None:
        """The bodies mode: a value that passes the seal check and holds only pickle frames
        without metadata (signed by a key held here, when keys are set) gives their bodies, in
        order; anything else gives None, for :meth:`read` to judge. No frame is built."""
        value = self.value
        if not value or zlib.crc32(value, SEALED) != SEALED:
            return None
        if self.secret_keys:
            return self.signed_bodies()
        plain, signed = _PICKLE_HEADS
        bodies: list[bytes] = []
        unpack_short = _SHORT_HEADER.unpack_from
        append = bodies.append
        pos, size = 0, len(value)
        last = size - HEADER_SIZE - SEAL_SIZE
        while pos <= last:  # least per frame: head and length
            head, meta_length, length = unpack_short(value, pos)
            if (head != plain and head != signed) or meta_length:
                return None
            start = pos + (HEADER_SIZE if head == plain else _SIGNED_SIZE)
            pos = start + length
            append(value[start:pos])
            pos += SEAL_SIZE
        return bodies if pos == size else None

    def signed_bodies(self) -> list[bytes] | None:
        """:meth:`bodies` with keys: every frame must be signed by one of them."""
        value, size = self.value, len(self.value)
        signed = _PICKLE_HEADS[1]
        unpack = _KEYED_HEADER.unpack_from
        bodies: list[bytes] = []
        append = bodies.append
        compare = hmac.compare_digest
        keyed = _keyed_by_id(tuple(self.secret_keys), self.signal_key)
        last = size - HEADER_SIZE - SEAL_SIZE
        pos = 0
        while pos <= last:
            head, _, meta_length, length, ident, kid = unpack(value, pos)
            if head != signed or meta_length:
                return None
            bases = keyed.get(kid)
            if bases is None:
                return None  # a key not held here: read() holds it
            start = pos + _SIGNED_SIZE
            end = start + length
            body = value[start:end]
            message = b"".join((value[pos + 2 : pos + 4], ident, body))
            tag = value[pos + _KEY_ID_END : start]
            for base in bases:
                state = base.copy()
                state.update(message)
                if compare(state.digest(), tag):
                    break
            else:
                return None
            append(body)
            pos = end + SEAL_SIZE
        return bodies if pos == size else None


def _refused(value: bytes, pos: int) -> str:
    """Why the header at ``pos`` is not a version 3 frame's."""
    if value[pos : pos + 2] != MAGIC:
        return "no frame magic"
    if value[pos + 2] != VERSION:
        return f"unknown frame version {value[pos + 2]}"
    return f"unknown frame flags {value[pos + 3]:#04x}"


# The header with magic, version and flags read as one number; every valid one of them.
_FAST_HEADER = struct.Struct(">IHHI8s")
_HEADS = frozenset(
    int.from_bytes(MAGIC + bytes((VERSION, flags)), "big") for flags in range(_KNOWN_FLAGS + 1)
)
# A plausible header's first four bytes (one of _HEADS), searched for in C after garbage: bare
# or repeated magic costs a search no more than other garbage does.
_HEAD = re.compile(re.escape(MAGIC + bytes((VERSION,))) + b"[\\x00-\\x%02x]" % _KNOWN_FLAGS)
_SIGNED_SIZE = HEADER_SIZE + KEY_ID_SIZE + TAG_SIZE
# The header and the 2 bytes after it (a signed frame's key id); any frame has them, since a
# seal of 4 bytes follows every header.
_KEYED_HEADER = struct.Struct(">IHHI8sH")
_KEY_ID_END = HEADER_SIZE + KEY_ID_SIZE
# The flags of a frame read without a key even by a reader that may not unpickle: JSON bodies
# and spread markers (one byte, never deserialized).
_READABLE_UNSIGNED = FLAG_JSON | FLAG_SPREAD
_HOLD = frozenset((HELD_KEY, HELD_UNSIGNED, HELD_PICKLED))
# The magic, version and flags as one number, the metadata's length and the body's length.
_SHORT_HEADER = struct.Struct(">I2xHI")
# Pickle frames' heads: unsigned, signed.
_PICKLE_HEADS = (
    int.from_bytes(MAGIC + bytes((VERSION, 0)), "big"),
    int.from_bytes(MAGIC + bytes((VERSION, FLAG_SIGNED)), "big"),
)
_BLOCK = 64  # SHA-256's block size, and the longest key BLAKE2b takes
_KEY_ID_LABEL = b"gaesignals key id"


@lru_cache(maxsize=1024)
def _keyed(secret_key: bytes, signal_key: bytes) -> Any:
    """Keyed BLAKE2b-256 of ``secret_key`` (hashed first if longer than BLAKE2b's 64-byte key
    limit), already fed the signal's key and a zero byte: the state each frame's tag copies."""
    if len(secret_key) > _BLOCK:
        secret_key = hashlib.blake2b(secret_key).digest()
    state = hashlib.blake2b(key=secret_key, digest_size=TAG_SIZE)
    state.update(signal_key + b"\x00")
    return state


@lru_cache(maxsize=64)
def key_id(secret_key: bytes) -> bytes:
    """The 2-byte id a frame signed with ``secret_key`` carries: the first bytes of
    HMAC-SHA256(key, b"gaesignals key id"). One-way, and too short to test a guess of the key
    against anything but itself; it only tells which configured key signed a frame."""
    return hmac.new(secret_key, _KEY_ID_LABEL, hashlib.sha256).digest()[:KEY_ID_SIZE]


def key_ids(secret_keys: Sequence[bytes]) -> list[str]:
    """The ids of ``secret_keys``, in hex, as logs and reports show them."""
    return [key_id(key).hex() for key in secret_keys]


@lru_cache(maxsize=64)
def _by_key_id(secret_keys: tuple[bytes, ...]) -> dict[bytes, tuple[bytes, ...]]:
    """``secret_keys`` by their ids (two keys may share an id: each is tried)."""
    ids: dict[bytes, tuple[bytes, ...]] = {}
    for key in secret_keys:
        ids[key_id(key)] = (*ids.get(key_id(key), ()), key)
    return ids


@lru_cache(maxsize=1024)
def _keyed_by_id(secret_keys: tuple[bytes, ...], signal_key: bytes) -> dict[int, list[Any]]:
    """Each key id's keyed states (:func:`_keyed`) by the id read as a number, as
    :meth:`Walker.signed_bodies` looks them up."""
    return {
        int.from_bytes(kid, "big"): [_keyed(key, signal_key) for key in keys]
        for kid, keys in _by_key_id(secret_keys).items()
    }


@lru_cache(maxsize=1024)
def _signer(secret_key: bytes, signal_key: bytes) -> tuple[bytes, Any]:
    """What signing a frame for ``signal_key`` with ``secret_key`` starts from: the key's id
    and the keyed state of :func:`_keyed`, looked up together (one cache lookup per send)."""
    return key_id(secret_key), _keyed(secret_key, signal_key)


def _tag(secret_key: bytes, signal_key: bytes, message: bytes) -> bytes:
    """A frame's tag: keyed BLAKE2b-256 (a MAC by design: the key is part of the
    hash's own input, no HMAC nesting needed) over the signal's key, a zero byte and
    ``message``; a copied state and one update."""
    state = _keyed(secret_key, signal_key).copy()
    state.update(message)
    tag: bytes = state.digest()
    return tag


def _verify(
    secret_keys: Sequence[bytes],
    signal_key: bytes,
    vf: bytes | memoryview,
    ident: bytes | memoryview,
    body: bytes,
    tag: bytes,
) -> bool:
    """Whether ``tag`` was made by one of ``secret_keys`` (``vf`` is the version and the flags)."""
    message = b"".join((vf, ident, body))
    for key in secret_keys:  # a loop, not any(): a generator per frame costs more than a check
        if hmac.compare_digest(_tag(key, signal_key, message), tag):
            break
    else:
        return False
    return True
