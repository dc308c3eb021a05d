"""The byte format of pending payloads.

A signal's value in the cache is a run of frames, appended one after another::

    offset  size  field
    0       2     magic  b"\\xa7\\x5c"  (lets a reader find the next frame after a bad one)
    2       1     version (1)
    3       1     flags: bit 0 = signed (a 32-byte tag follows the header), bit 1 = JSON body
    4       2     attempts: failed reliable deliveries so far (rewritten in place, not signed)
    6       4     length of the body, big-endian
    10      4     CRC-32 of bytes 2-3, 6-9, 14-21, the tag and the body
    14      8     frame id: the sender's Unix time in whole seconds (4 bytes, big-endian), then
                  4 random bytes; unique to this payload (reliable delivery's progress cursor
                  names a payload by it; ``ttl`` and the age of the oldest pending payload read
                  its time)
    22      32    HMAC-SHA256 tag, only when signed: over the signal's key, bytes 2-3, the id
                  and the body
    ..      n     body: the pickled (or JSON) payload

Everything but the attempts counter is covered by the CRC and the tag. The CRC catches
truncation and garbage cheaply and makes a false frame boundary found by scanning for the magic
a 1-in-4-billion accident; the tag, when a secret key is configured, is what makes a frame
trusted. A frame is never deserialized unless it passed both.
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
VERSION = 1
FLAG_SIGNED = 0x01
FLAG_JSON = 0x02
_KNOWN_FLAGS = FLAG_SIGNED | FLAG_JSON

HEADER = struct.Struct(">2sBBHII8s")
HEADER_SIZE = HEADER.size  # 22
TAG_SIZE = 32
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
    tag = b""
    if secret_keys:
        flags |= FLAG_SIGNED
        tag = _tag(secret_keys[0], signal_key, bytes((VERSION, flags)) + ident + body)
    vf_length = struct.pack(">BBI", VERSION, flags, len(body))
    crc = zlib.crc32(body, zlib.crc32(ident + tag, zlib.crc32(vf_length)))
    attempts = min(attempts, MAX_ATTEMPTS_FIELD)
    return HEADER.pack(MAGIC, VERSION, flags, attempts, len(body), crc, ident) + tag + body


def with_attempts(raw_frame: bytes, attempts: int) -> bytes:
    """Return ``raw_frame`` (one whole, valid frame) with its attempts counter replaced."""
    return raw_frame[:4] + struct.pack(">H", min(attempts, MAX_ATTEMPTS_FIELD)) + raw_frame[6:]


def parse(
    value: bytes, signal_key: bytes, secret_keys: Sequence[bytes] = ()
) -> tuple[list[Frame], list[BadRegion]]:
    """Split ``value`` into verified frames and the bad regions between them.

    Never raises on any input. After a bad frame the parser scans for the next magic and goes
    on from there, so valid frames after garbage are still found. With ``secret_keys`` set, a
    frame without a tag made by one of them is bad, whatever its CRC says.
    """
    frames: list[Frame] = []
    bad: list[BadRegion] = []
    view = memoryview(value)
    pos = _good_run(value, view, signal_key, secret_keys, frames)
    size = len(value)
    if pos == size:
        return frames, bad
    bad_start = -1
    bad_reason = ""
    unpack = HEADER.unpack_from
    crc32 = zlib.crc32
    # Checking a candidate costs a CRC over its declared length. Valid frames never overlap, so
    # they cost at most ``size``; garbage full of false headers could cost size**2. Past this
    # budget the rest of the value is given up as bad: parsing stays linear in the worst case.
    budget = 4 * size + 65536
    while pos < size:
        reason = ""
        if size - pos < HEADER_SIZE:
            reason = "truncated header"
        else:
            magic, version, flags, attempts, length, crc, ident = unpack(value, pos)
            if magic != MAGIC:
                reason = "no frame magic"
            elif version != VERSION:
                reason = f"unknown frame version {version}"
            elif flags & ~_KNOWN_FLAGS:
                reason = f"unknown frame flags {flags:#04x}"
            else:
                tag_end = pos + HEADER_SIZE + (TAG_SIZE if flags & FLAG_SIGNED else 0)
                end = tag_end + length
                if end > size:
                    reason = "declared length runs past the end of the value"
                elif (budget := budget - (end - pos)) < 0:
                    if bad_start < 0:
                        bad_start = pos
                    bad.append(BadRegion(bad_start, size, "too much garbage to search for frames"))
                    return frames, bad
                else:
                    # The CRC runs over bytes 2-3, 6-9 and 14 to the end: three calls, no copies.
                    check = crc32(
                        view[pos + 14 : end], crc32(view[pos + 6 : pos + 10], _VF_CRC[flags])
                    )
                    body = value[tag_end:end]
                    if check != crc:
                        reason = "CRC mismatch"
                    elif secret_keys:
                        if not flags & FLAG_SIGNED:
                            reason = "unsigned frame while a secret key is configured"
                        elif not _verify(
                            secret_keys,
                            signal_key,
                            view[pos + 2 : pos + 4],
                            view[pos + 14 : pos + 22],
                            body,
                            value[pos + HEADER_SIZE : tag_end],
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


def _good_run(
    value: bytes,
    view: memoryview,
    signal_key: bytes,
    secret_keys: Sequence[bytes],
    out: list[Frame],
) -> int:
    """Parse the run of valid frames at the start of ``value`` into ``out``; return where the
    first frame that is not plainly valid starts (``len(value)`` for a clean value).

    The common case, kept short: the same checks as :func:`parse` (magic, version, flags,
    length, CRC, signature), but the first doubt hands over to ``parse``'s general loop, which
    checks that frame again and reports why it is bad. Valid frames never overlap, so this
    costs at most one CRC pass over the value.
    """
    unpack = _FAST_HEADER.unpack_from
    crc32 = zlib.crc32
    head_crc = _HEAD_CRC
    new = tuple.__new__  # Frame(...) without the Python-level __new__ of a NamedTuple
    append = out.append
    size = len(value)
    pos = 0
    while size - pos >= HEADER_SIZE:
        head, attempts, length, crc, ident = unpack(value, pos)
        vf_crc = head_crc.get(head)  # None unless magic, version and flags are all valid
        if vf_crc is None:
            break
        flags = head & 0xFF
        tag_end = pos + (_SIGNED_SIZE if flags & FLAG_SIGNED else HEADER_SIZE)
        end = tag_end + length
        if end > size or crc != crc32(
            view[pos + 14 : end], crc32(view[pos + 6 : pos + 10], vf_crc)
        ):
            break
        body = value[tag_end:end]
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


# The CRC's first bytes are the version and the flags: their CRC state, for every valid flags.
_VF_CRC = [zlib.crc32(bytes((VERSION, flags))) for flags in range(_KNOWN_FLAGS + 1)]
# HEADER with magic, version and flags read as one number, and that CRC state for every valid
# one of them: a single lookup checks all three.
_FAST_HEADER = struct.Struct(">IHII8s")
_HEAD_CRC = {
    int.from_bytes(MAGIC + bytes((VERSION, flags)), "big"): _VF_CRC[flags]
    for flags in range(_KNOWN_FLAGS + 1)
}
_SIGNED_SIZE = HEADER_SIZE + TAG_SIZE
_BLOCK = 64  # SHA-256's block size


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


def _tag(secret_key: bytes, signal_key: bytes, message: bytes) -> bytes:
    """HMAC-SHA256 over the signal's key, a zero byte and ``message``."""
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
    message = b"".join((vf, ident, body))
    for key in secret_keys:  # a loop, not any(): a generator per frame costs more than a check
        if hmac.compare_digest(_tag(key, signal_key, message), tag):
            break
    else:
        return False
    return True
