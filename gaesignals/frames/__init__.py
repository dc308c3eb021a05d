"""The byte format of pending payloads.

A signal's value in the cache is a run of frames, appended one after another::

    offset  size  field
    0       2     magic  b"\\xa7\\x5c"  (lets a reader find the next frame after a bad one)
    2       1     version (3)
    3       1     flags: bit 0 = signed (a 32-byte tag follows the header), bit 1 = JSON body,
                  bit 2 = spread marker (not a payload: its 2-byte body, big-endian, is how
                  many shards the signal has spread over, see :mod:`gaesignals.queue.spread`),
                  bit 3 = cancellation (not a payload: its 8-byte body is the id of the payload
                  it cancels, see :mod:`gaesignals.queue.cancel`)
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
                  context of its send (see :mod:`gaesignals.tracing`), type 4 its
                  coalesce key and type 5 its coalesce run (send time in Unix ms, debounce
                  and debounce_max in ms: 8 + 4 + 4 bytes, see :func:`coalesce_meta`); a
                  reader skips types it does not know
    ..      n     body: the pickled (or JSON) payload
    ..      4     seal: CRC-32 (little-endian) of every byte before it in the frame, started
                  from :data:`SEALED`

The seal makes the CRC-32 of a whole frame, started from :data:`SEALED`, come out as
:data:`SEALED` (CRC-32's residue); so does a run of whole frames, since each one hands the next
the same state. A reader therefore checks a clean value of any number of frames with one CRC
call over all of it, then walks the headers; only a value that fails that check is parsed frame
by frame, resynchronising after a bad one on the next plausible header (the magic, version 3
and known flags). The CRC catches truncation and garbage
cheaply; the tag, when a secret key is configured, is what makes a frame trusted. A frame is
never deserialized unless it passed both.

A frame this reader cannot verify only because it does not hold the key that signed it (its key
id names none of its keys), or an unsigned frame read with a key configured, is *held*: neither
verified nor refused, never deserialized, returned apart (:attr:`QueueRead.held`) so delivery can
leave it queued for a deliverer that can read it. A frame whose key id names a key this reader
holds but whose tag does not verify is tampered: a bad region, as any garbage.

Only version 3 exists: a frame of any other version reads as an unreadable region. A spread
marker is checked like any frame (a forged one is an unreadable region), never handed to a
handler and never counted as a payload; so is a cancellation (:attr:`QueueRead.cancels`): one
that does not verify (unsigned, or signed with a key this reader does not hold, while keys are
set) is an unreadable region and cancels nothing.

This package writes frames; :mod:`.layout` holds the constants and the records a read gives,
:mod:`.signing` the tags and key ids, and :mod:`.walk` the one frame walker.
"""

from __future__ import annotations

import os
import random
import struct
import time
import zlib
from collections.abc import Sequence
from functools import lru_cache

from .layout import (
    FLAG_CANCEL,
    FLAG_JSON,
    FLAG_SIGNED,
    FLAG_SPREAD,
    HEADER,
    HEADER_SIZE,
    HELD_KEY,
    HELD_PICKLED,
    HELD_UNSIGNED,
    KEY_ID_SIZE,
    MAGIC,
    MAX_ATTEMPTS_FIELD,
    MAX_META,
    MAX_SPREAD,
    META_COALESCE,
    META_NOT_BEFORE,
    META_RUN,
    META_TRACE,
    SEAL_SIZE,
    SEALED,
    TAG_SIZE,
    VERSION,
    BadRegion,
    Coalesce,
    Frame,
    Held,
    QueueRead,
    coalesce_of,
    dropped,
    held_reason,
    key_id_in,
    meta_entry,
    metadata,
    not_before,
    sent_at,
)
from .signing import _signer, key_id, key_ids
from .walk import Walker, parse, parse_queue, pickled_bodies

__all__ = [
    "FLAG_CANCEL",
    "FLAG_JSON",
    "FLAG_SIGNED",
    "FLAG_SPREAD",
    "HEADER",
    "HEADER_SIZE",
    "HELD_KEY",
    "HELD_PICKLED",
    "HELD_UNSIGNED",
    "KEY_ID_SIZE",
    "MAGIC",
    "MAX_ATTEMPTS_FIELD",
    "MAX_META",
    "MAX_SPREAD",
    "META_COALESCE",
    "META_NOT_BEFORE",
    "META_RUN",
    "META_TRACE",
    "SEALED",
    "SEAL_SIZE",
    "TAG_SIZE",
    "VERSION",
    "BadRegion",
    "Coalesce",
    "Frame",
    "Held",
    "QueueRead",
    "Walker",
    "cancel_frame",
    "clock",
    "coalesce_meta",
    "coalesce_of",
    "dropped",
    "encode",
    "held_reason",
    "ident_of",
    "key_id",
    "key_id_in",
    "key_ids",
    "meta_entry",
    "metadata",
    "not_before",
    "parse",
    "parse_queue",
    "pickled_bodies",
    "reseal",
    "sent_at",
    "spread_marker",
    "with_attempts",
]

# Frame ids need to be unique, not secret: a private generator (seeded from the OS, reseeded in a
# forked child) is cheaper than os.urandom and leaves the global one alone.
_ids = random.Random()
os.register_at_fork(after_in_child=_ids.seed)
#: Where a frame id's time comes from (seconds); tests replace it to age payloads.
clock = time.time


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
    return encode(width.to_bytes(2, "big"), signal_key, keys, flags=FLAG_SPREAD, ident=bytes(8))


def ident_of(raw_frame: bytes) -> bytes:
    """The 8-byte id of a frame :func:`encode` made (what a cancellation names)."""
    return raw_frame[12:HEADER_SIZE]


def cancel_frame(ident: bytes, signal_key: bytes, secret_keys: Sequence[bytes] = ()) -> bytes:
    """The cancellation of the payload ``ident`` of ``signal_key``'s signal, signed like a
    payload: appended to the payload's queue, a take that reads both drops the payload."""
    if len(ident) != 8:
        raise ValueError(f"a payload id is 8 bytes, not {len(ident)}")
    return encode(ident, signal_key, secret_keys, flags=FLAG_CANCEL)


def coalesce_meta(
    key: str | bytes, *, sent_ms: int, debounce_ms: int = 0, debounce_max_ms: int = 0
) -> bytes:
    """The metadata entries that make a payload coalesce with the others of ``key`` (""
    for a signal declared ``coalesce=True``): the key, and the run entry with its send time
    (Unix ms, which orders the payloads of one key across shards) and its debounce."""
    raw = key.encode() if isinstance(key, str) else key
    if len(raw) > 0xFF:
        raise ValueError(f"a coalesce key is at most 255 bytes of UTF-8, not {len(raw)}")
    if not (0 <= debounce_ms <= 0xFFFFFFFF and 0 <= debounce_max_ms <= 0xFFFFFFFF):
        raise ValueError("debounce and debounce_max are 0 to 2**32 - 1 ms")
    run = sent_ms.to_bytes(8, "big") + struct.pack(">II", debounce_ms, debounce_max_ms)
    return meta_entry(META_COALESCE, raw) + meta_entry(META_RUN, run)


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
