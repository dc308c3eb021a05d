"""The one frame walker, :class:`Walker`, and the reads built on it."""

from __future__ import annotations

import hmac
import re
import struct
import zlib
from collections.abc import Sequence

from .layout import (
    FLAG_CANCEL,
    FLAG_JSON,
    FLAG_SIGNED,
    FLAG_SPREAD,
    HEADER_SIZE,
    HELD_KEY,
    HELD_PICKLED,
    HELD_UNSIGNED,
    KEY_ID_SIZE,
    KNOWN_FLAGS,
    MAGIC,
    MAX_SPREAD,
    SEAL_SIZE,
    SEALED,
    TAG_SIZE,
    VERSION,
    BadRegion,
    Frame,
    Held,
    QueueRead,
    held_reason,
    metadata,
)
from .signing import _by_key_id, _keyed_by_id, _verify

# The header with magic, version and flags read as one number; every valid one of them.
_FAST_HEADER = struct.Struct(">IHHI8s")
_HEADS = frozenset(
    int.from_bytes(MAGIC + bytes((VERSION, flags)), "big") for flags in range(KNOWN_FLAGS + 1)
)
# A plausible header's first four bytes (one of _HEADS), searched for in C after garbage: bare
# or repeated magic costs a search no more than other garbage does.
_HEAD = re.compile(re.escape(MAGIC + bytes((VERSION,))) + b"[\\x00-\\x%02x]" % KNOWN_FLAGS)
_SIGNED_SIZE = HEADER_SIZE + KEY_ID_SIZE + TAG_SIZE
# The header and the 2 bytes after it (a signed frame's key id); any frame has them, since a
# seal of 4 bytes follows every header.
_KEYED_HEADER = struct.Struct(">IHHI8sH")
_KEY_ID_END = HEADER_SIZE + KEY_ID_SIZE
# The flags of a frame read without a key even by a reader that may not unpickle: JSON bodies,
# spread markers and cancellations (never deserialized).
_READABLE_UNSIGNED = FLAG_JSON | FLAG_SPREAD | FLAG_CANCEL
# The flags of frames that are not payloads: never held (an unverified one is a bad region).
_NOT_PAYLOAD = FLAG_SPREAD | FLAG_CANCEL
_HOLD = frozenset((HELD_KEY, HELD_UNSIGNED, HELD_PICKLED))
# The magic, version and flags as one number, the metadata's length and the body's length.
_SHORT_HEADER = struct.Struct(">I2xHI")
# Pickle frames' heads: unsigned, signed.
_PICKLE_HEADS = (
    int.from_bytes(MAGIC + bytes((VERSION, 0)), "big"),
    int.from_bytes(MAGIC + bytes((VERSION, FLAG_SIGNED)), "big"),
)


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
    if not secret_keys:  # the bodies mode without keys needs no walker built (per value)
        return _unsigned_bodies(value)
    return Walker(value, signal_key, secret_keys).bodies()


#: The reason given for the rest of a value when searching it for frames costs too much.
_GIVE_UP = "too much garbage to search for frames"
#: What a candidate header refused before its tag was checked costs the walk's budget, beside
#: the bytes its CRC covered: garbage made of plausible headers gets about four thousand of them
#: checked per megabyte, then the rest is given up.
_REFUSAL_COST = 1024


class Walker:
    """The one frame walker over a value, in two modes: :meth:`read` (every frame checked,
    garbage skipped, frames held or refused) and :meth:`bodies` (a clean value of pickle frames
    only: their bodies, nothing built per frame; weak delivery's common case).

    Its work is bounded: checking a candidate frame costs a CRC over its declared length (valid
    frames never overlap, so they cost at most the value's size), and each refused candidate a
    fixed :data:`_REFUSAL_COST`. Past a budget of four times the value's size (and 64 KiB) the
    rest of the value is given up as bad. ``candidates`` and ``spent`` count that work (tests
    read them).
    """

    __slots__ = (
        "budget",
        "cancels",
        "candidates",
        "found",
        "held",
        "ids",
        "marker_bytes",
        "marker_width",
        "pickled",
        "secret_keys",
        "signal_key",
        "spent",
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

    def read(self) -> QueueRead:
        """Every frame of the value: verified payloads, held frames, spread markers, and the bad
        regions between them, resynchronising after a bad one on the next plausible header."""
        value, size = self.value, len(self.value)
        self.found: list[Frame] = []
        self.held: list[Held] = []
        self.cancels: list[Frame] = []
        self.marker_width = self.marker_bytes = 0
        #: Candidate frame headers checked after garbage, and work units spent on checks.
        self.candidates = self.spent = 0
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
        return QueueRead(
            self.found, bad, self.marker_width, self.marker_bytes, self.held, self.cancels
        )

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
        reason it is a bad region instead (tampered; or a spread marker or a cancellation, never
        held: a forged cancellation must never cancel, nor wait for a reader who might trust it)."""
        if why not in _HOLD:
            return why
        if frame.flags & _NOT_PAYLOAD:
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
            if flags & _NOT_PAYLOAD:
                why = self.not_payload(new(Frame, (pos, end, flags, attempts, ident, body, meta)))
                if why:
                    return pos, why
            else:
                append(new(Frame, (pos, end, flags, attempts, ident, body, meta)))
            pos = end
        return pos, ""

    def not_payload(self, frame: Frame) -> str:
        """Note a verified frame that is not a payload (a spread marker, a cancellation); or
        say why it is malformed."""
        body = frame.body
        if frame.flags & FLAG_CANCEL:
            if len(body) != 8 or frame.flags & (FLAG_SPREAD | FLAG_JSON):
                return "malformed cancel frame"
            self.cancels.append(frame)
            return ""
        claim = int.from_bytes(body, "big")
        if len(body) != 2 or not claim:
            return "malformed spread marker"
        self.marker_width = max(self.marker_width, min(claim, MAX_SPREAD))
        self.marker_bytes += frame.end - frame.start
        return ""

    def bodies(self) -> list[bytes] | None:
        """The bodies mode: a value that passes the seal check and holds only pickle frames
        without metadata (signed by a key held here, when keys are set) gives their bodies, in
        order; anything else gives None, for :meth:`read` to judge. No frame is built."""
        if not self.secret_keys:
            return _unsigned_bodies(self.value)
        value = self.value
        if not value or zlib.crc32(value, SEALED) != SEALED:
            return None
        return self.signed_bodies()

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


def _unsigned_bodies(value: bytes) -> list[bytes] | None:
    """:meth:`Walker.bodies` without keys: the bodies of a sealed value of pickle frames
    without metadata, or None."""
    if not value or zlib.crc32(value, SEALED) != SEALED:
        return None
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
