"""The byte format of pending payloads.

A signal's value in the cache is a run of frames, appended one after another::

    offset  size  field
    0       2     magic  b"\\xa7\\x5c"  (lets a reader find the next frame after a bad one)
    2       1     version (2)
    3       1     flags: bit 0 = signed (a 32-byte tag follows the header), bit 1 = JSON body
    4       2     attempts: failed reliable deliveries so far (rewritten with the seal)
    6       4     length of the body, big-endian
    10      8     frame id: the sender's Unix time in whole seconds (4 bytes, big-endian), then
                  4 random bytes; unique to this payload (reliable delivery's progress cursor
                  names a payload by it; ``ttl`` and the age of the oldest pending payload read
                  its time)
    18      32    tag, only when signed: keyed BLAKE2b-256 over the signal's key, bytes 2-3,
                  the id and the body
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

Version 1 frames (the CRC in the header, at offset 10, over bytes 2-3, 6-9 and 14 on; the id at
14; an HMAC-SHA256 tag at 22) are still read, frame by frame, so payloads pending across an
upgrade are delivered; only version 2 is written.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import random
import struct
import time
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, NamedTuple

MAGIC = b"\xa7\x5c"
VERSION = 2
FLAG_SIGNED = 0x01
FLAG_JSON = 0x02
_KNOWN_FLAGS = FLAG_SIGNED | FLAG_JSON

HEADER = struct.Struct(">2sBBHI8s")
HEADER_SIZE = HEADER.size  # 18
TAG_SIZE = 32
SEAL_SIZE = 4
#: CRC-32's residue: the CRC of any bytes followed by their own CRC (little-endian). A frame's
#: seal is its CRC started from this value, so a sealed frame's CRC from it is it again.
SEALED = 0x2144DF1C
MAX_ATTEMPTS_FIELD = 0xFFFF

# Frame ids need to be unique, not secret: a private generator (seeded from the OS, reseeded in a
# forked child) is four times faster than os.urandom and leaves the global one alone.
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


@dataclass(frozen=True, slots=True)
class BadRegion:
    """A stretch of bytes that could not be read as a frame, and why."""

    start: int
    end: int
    reason: str


def encode(
    body: bytes,
    signal_key: bytes,
    secret_keys: Sequence[bytes] = (),
    *,
    json_body: bool = False,
    attempts: int = 0,
    ident: bytes | None = None,
) -> bytes:
    """Frame one serialized payload for ``signal_key``, signed with the first secret key if any."""
    flags = FLAG_JSON if json_body else 0
    if ident is None:
        ident = ((int(clock()) & 0xFFFFFFFF) << 32 | _ids.getrandbits(32)).to_bytes(8, "big")
    head = HEADER.pack(MAGIC, VERSION, flags, min(attempts, MAX_ATTEMPTS_FIELD), len(body), ident)
    if secret_keys:
        flags |= FLAG_SIGNED
        head = head[:3] + bytes((flags,)) + head[4:]
        head += _tag(secret_keys[0], signal_key, bytes((VERSION, flags)) + ident + body)
    return head + body + _seal(body, head)


def _seal(body: bytes, head: bytes) -> bytes:
    return zlib.crc32(body, zlib.crc32(head, SEALED)).to_bytes(4, "little")


def reseal(raw_frame: bytes) -> bytes:
    """``raw_frame`` (one whole version 2 frame, maybe edited) with its seal made right."""
    unsealed = raw_frame[:-SEAL_SIZE]
    return unsealed + zlib.crc32(unsealed, SEALED).to_bytes(4, "little")


def with_attempts(raw_frame: bytes, attempts: int) -> bytes:
    """Return ``raw_frame`` (one whole, valid frame) with its attempts counter replaced."""
    edited = raw_frame[:4] + struct.pack(">H", min(attempts, MAX_ATTEMPTS_FIELD)) + raw_frame[6:]
    return edited if raw_frame[2] == 1 else reseal(edited)  # version 1: not covered by its CRC


def parse(
    value: bytes, signal_key: bytes, secret_keys: Sequence[bytes] = ()
) -> tuple[list[Frame], list[BadRegion]]:
    """Split ``value`` into verified frames and the bad regions between them.

    Never raises on any input. A value whose frames are all sealed and whole costs one CRC
    call and a walk over the headers. Otherwise each frame is checked on its own and, after a
    bad one, the parser scans for the next magic and goes on from there, so valid frames after
    garbage are still found. With ``secret_keys`` set, a frame without a tag made by one of
    them is bad, whatever its CRC says.
    """
    frames: list[Frame] = []
    size = len(value)
    pos = 0
    if size and zlib.crc32(value, SEALED) == SEALED:
        pos = _sealed_run(value, signal_key, secret_keys, frames)
        if pos == size:
            return frames, []
    bad: list[BadRegion] = []
    view = memoryview(value)
    bad_start = -1
    bad_reason = ""
    unpack = _V1_HEADER.unpack_from
    crc32 = zlib.crc32
    # Checking a candidate costs a CRC over its declared length. Valid frames never overlap, so
    # they cost at most ``size``; garbage full of false headers could cost size**2. Past this
    # budget the rest of the value is given up as bad: parsing stays linear in the worst case.
    budget = 4 * size + 65536
    while pos < size:
        reason = ""
        if size - pos < HEADER_SIZE + SEAL_SIZE:
            reason = "truncated header"
        else:
            magic, version, flags, attempts, length, crc, ident = unpack(value, pos)
            if magic != MAGIC:
                reason = "no frame magic"
            elif version not in (1, VERSION):
                reason = f"unknown frame version {version}"
            elif flags & ~_KNOWN_FLAGS:
                reason = f"unknown frame flags {flags:#04x}"
            else:
                if version == VERSION:
                    ident = value[pos + 10 : pos + 18]
                    tag_start = pos + HEADER_SIZE
                    tag_end = tag_start + (TAG_SIZE if flags & FLAG_SIGNED else 0)
                    body_end = tag_end + length
                    end = body_end + SEAL_SIZE
                else:
                    tag_start = pos + _V1_HEADER.size
                    tag_end = tag_start + (TAG_SIZE if flags & FLAG_SIGNED else 0)
                    body_end = end = tag_end + length
                if end > size:
                    reason = "declared length runs past the end of the value"
                elif (budget := budget - (end - pos)) < 0:
                    if bad_start < 0:
                        bad_start = pos
                    bad.append(BadRegion(bad_start, size, "too much garbage to search for frames"))
                    return frames, bad
                else:
                    if version == VERSION:
                        intact = crc32(view[pos:end], SEALED) == SEALED
                    else:  # over bytes 2-3, 6-9 and 14 to the end: three calls, no copies
                        intact = crc == crc32(
                            view[pos + 14 : end], crc32(view[pos + 6 : pos + 10], _VF_CRC[flags])
                        )
                    body = value[tag_end:body_end]
                    if not intact:
                        reason = "CRC mismatch"
                    elif secret_keys:
                        if not flags & FLAG_SIGNED:
                            reason = "unsigned frame while a secret key is configured"
                        elif not _verify(
                            secret_keys,
                            signal_key,
                            view[pos + 2 : pos + 4],
                            ident,
                            body,
                            value[tag_start:tag_end],
                        ):
                            reason = "signature mismatch"
                    if not reason:
                        if bad_start >= 0:
                            bad.append(BadRegion(bad_start, pos, bad_reason))
                            bad_start = -1
                        frames.append(Frame(pos, end, flags, attempts, ident, body))
                        pos = end
                        continue
        if bad_start < 0:
            bad_start, bad_reason = pos, reason
        nxt = value.find(MAGIC, pos + 1)
        pos = size if nxt < 0 else nxt
    if bad_start >= 0:
        bad.append(BadRegion(bad_start, size, bad_reason))
    return frames, bad


def pickled_bodies(
    value: bytes, signal_key: bytes, secret_keys: Sequence[bytes] = ()
) -> list[bytes] | None:
    """The bodies of a clean value whose frames are all version 2 pickle frames, in order;
    None when anything is unusual (damage, garbage, a JSON or version 1 frame, a bad tag),
    and :func:`parse` must be used. For weak delivery's common case: one seal check, then
    the headers walked, with nothing built per frame but its body."""
    size = len(value)
    if not size or zlib.crc32(value, SEALED) != SEALED:
        return None
    plain, signed = _PICKLE_HEADS
    bodies: list[bytes] = []
    if not secret_keys:  # the common case, kept to the least per frame: head and length
        unpack_short = _SHORT_HEADER.unpack_from
        pos = 0
        last = size - HEADER_SIZE - SEAL_SIZE
        append = bodies.append
        while pos <= last:
            head, length = unpack_short(value, pos)
            if head != plain and head != signed:
                return None
            start = pos + (HEADER_SIZE if head == plain else _SIGNED_SIZE)
            pos = start + length
            append(value[start:pos])
            pos += SEAL_SIZE
        return bodies if pos == size else None
    unpack = _FAST_HEADER.unpack_from
    append = bodies.append
    compare = hmac.compare_digest
    keyed = [_keyed(key, signal_key) for key in secret_keys]  # looked up once, not per frame
    last = size - HEADER_SIZE - SEAL_SIZE
    pos = 0
    while pos <= last:  # with a key, every frame must be signed by one of them
        head, _, length, ident = unpack(value, pos)
        if head != signed:
            return None
        start = pos + _SIGNED_SIZE
        end = start + length
        body = value[start:end]
        message = b"".join((value[pos + 2 : pos + 4], ident, body))
        tag = value[pos + HEADER_SIZE : start]
        for base in keyed:
            state = base.copy()
            state.update(message)
            if compare(state.digest(), tag):
                break
        else:
            return None
        append(body)
        pos = end + SEAL_SIZE
    return bodies if pos == size else None


def _sealed_run(
    value: bytes, signal_key: bytes, secret_keys: Sequence[bytes], out: list[Frame]
) -> int:
    """Walk the frames of a value that passed the whole-value seal check into ``out``; return
    where the first frame that is not plainly valid starts (``len(value)`` for a clean value).

    No CRC per frame: the seal check covered every byte. Magic, version, flags, length and
    signature are still checked; the first doubt hands over to :func:`parse`'s general loop,
    which checks that frame again and reports why it is bad.
    """
    unpack = _FAST_HEADER.unpack_from
    known = _V2_HEADS
    new = tuple.__new__  # Frame(...) without the Python-level __new__ of a NamedTuple
    append = out.append
    last = len(value) - HEADER_SIZE - SEAL_SIZE
    pos = 0
    while pos <= last:
        head, attempts, length, ident = unpack(value, pos)
        if head not in known:
            break
        flags = head & 0xFF
        tag_end = pos + (_SIGNED_SIZE if flags & FLAG_SIGNED else HEADER_SIZE)
        end = tag_end + length + SEAL_SIZE
        if end > len(value):
            break
        body = value[tag_end : end - SEAL_SIZE]
        if secret_keys and not (
            flags & FLAG_SIGNED
            and _verify(
                secret_keys,
                signal_key,
                value[pos + 2 : pos + 4],
                ident,
                body,
                value[pos + HEADER_SIZE : tag_end],
            )
        ):
            break
        append(new(Frame, (pos, end, flags, attempts, ident, body)))
        pos = end
    return pos


# Version 1's header, which the general loop reads version 2's first fields through too (the
# same up to the length; bytes 10-13 are the CRC in version 1, part of the id in version 2).
_V1_HEADER = struct.Struct(">2sBBHII8s")
# Version 1's CRC starts with the version and the flags: their CRC state, for every valid flags.
_VF_CRC = [zlib.crc32(bytes((1, flags))) for flags in range(_KNOWN_FLAGS + 1)]
# Version 2's header with magic, version and flags read as one number; every valid one of them.
_FAST_HEADER = struct.Struct(">IHI8s")
_V2_HEADS = frozenset(
    int.from_bytes(MAGIC + bytes((VERSION, flags)), "big") for flags in range(_KNOWN_FLAGS + 1)
)
_SIGNED_SIZE = HEADER_SIZE + TAG_SIZE
# Version 2's magic, version and flags as one number, and the body's length.
_SHORT_HEADER = struct.Struct(">I2xI")
# Version 2 pickle frames' heads: unsigned, signed.
_PICKLE_HEADS = (
    int.from_bytes(MAGIC + bytes((VERSION, 0)), "big"),
    int.from_bytes(MAGIC + bytes((VERSION, FLAG_SIGNED)), "big"),
)
_BLOCK = 64  # SHA-256's block size, and the longest key BLAKE2b takes


@lru_cache(maxsize=1024)
def _keyed(secret_key: bytes, signal_key: bytes) -> Any:
    """Keyed BLAKE2b-256 of ``secret_key`` (hashed first if longer than BLAKE2b's 64-byte key
    limit), already fed the signal's key and a zero byte: the state each frame's tag copies."""
    if len(secret_key) > _BLOCK:
        secret_key = hashlib.blake2b(secret_key).digest()
    state = hashlib.blake2b(key=secret_key, digest_size=TAG_SIZE)
    state.update(signal_key + b"\x00")
    return state


def _tag(secret_key: bytes, signal_key: bytes, message: bytes) -> bytes:
    """A version 2 frame's tag: keyed BLAKE2b-256 (a MAC by design: the key is part of the
    hash's own input, no HMAC nesting needed) over the signal's key, a zero byte and
    ``message``; a copied state and one update, about half the time of HMAC-SHA256."""
    state = _keyed(secret_key, signal_key).copy()
    state.update(message)
    tag: bytes = state.digest()
    return tag


@lru_cache(maxsize=1024)
def _signer(secret_key: bytes, signal_key: bytes) -> tuple[Any, Any]:
    """HMAC-SHA256 (RFC 2104) of ``secret_key``, its inner hash already fed the signal's key:
    the two SHA-256 states to copy per frame. Tags are exactly ``hmac.new``'s; copying plain
    hash states skips the key schedule and ``hmac.HMAC``'s Python-level ``copy``."""
    if len(secret_key) > _BLOCK:
        secret_key = hashlib.sha256(secret_key).digest()
    padded = secret_key.ljust(_BLOCK, b"\x00")
    inner = hashlib.sha256(bytes(b ^ 0x36 for b in padded))
    inner.update(signal_key + b"\x00")
    outer = hashlib.sha256(bytes(b ^ 0x5C for b in padded))
    return inner, outer


def _hmac_tag(secret_key: bytes, signal_key: bytes, message: bytes) -> bytes:
    """A version 1 frame's tag: HMAC-SHA256 over the signal's key, a zero byte and
    ``message`` (read, never written any more)."""
    inner_base, outer_base = _signer(secret_key, signal_key)
    inner = inner_base.copy()
    inner.update(message)
    outer = outer_base.copy()
    outer.update(inner.digest())
    tag: bytes = outer.digest()
    return tag


def _verify(
    secret_keys: Sequence[bytes],
    signal_key: bytes,
    vf: bytes | memoryview,
    ident: bytes | memoryview,
    body: bytes,
    tag: bytes,
) -> bool:
    """Whether ``tag`` was made by one of ``secret_keys``, the algorithm chosen by the version
    byte (``vf`` is the version and the flags)."""
    message = b"".join((vf, ident, body))
    sign = _hmac_tag if vf[0] == 1 else _tag
    for key in secret_keys:  # a loop, not any(): a generator per frame costs more than a check
        if hmac.compare_digest(sign(key, signal_key, message), tag):
            break
    else:
        return False
    return True
