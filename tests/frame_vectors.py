"""Shared frame test vectors: byte strings, and what each frame walker answers for them.

Two walkers read the frame format: :class:`gaesignals.frames.Walker` (every frame checked, its
seal and tag, garbage skipped) and the header walk of the Redis take script
(``gaesignals/stores/redis/_scripts.py``: whole frames counted from the start, stopping at the
first header that is not one, no seal or tag checked). Each :class:`Vector` holds a value and
both walkers' answers; ``tests/test_frame_vectors.py`` checks them against both.
"""

from __future__ import annotations

from dataclasses import dataclass

from gaesignals import frames

SIGNAL = b"gaesignals:q:vectors"
#: The reader's secret key, and a key it does not hold.
KEY = b"k" * 32
OTHER_KEY = b"o" * 32
#: The time (Unix ms) the take script is run with.
NOW_MS = 1_700_000_000_000
BODY = b"\x80\x05K\x01."  # pickle.dumps(1)


def frame(n: int, *, keys: tuple[bytes, ...] = (), meta: bytes = b"", flags: int = 0) -> bytes:
    """Frame number ``n`` (its id ends with it), always the same bytes."""
    ident = bytes((101, 0, 0, 0, 0, 0, 0, n))
    return frames.encode(BODY, SIGNAL, keys, ident=ident, meta=meta, flags=flags)


def not_before(ms: int) -> bytes:
    """A not-before metadata entry for the Unix millisecond ``ms``."""
    return frames.meta_entry(frames.META_NOT_BEFORE, ms.to_bytes(8, "big"))


def edited(raw: bytes, at: int, byte: int, *, reseal: bool = True) -> bytes:
    """``raw`` with the byte at ``at`` replaced, its seal made right again unless not."""
    changed = raw[:at] + bytes((byte,)) + raw[at + 1 :]
    return frames.reseal(changed) if reseal else changed


@dataclass(frozen=True)
class Vector:
    """A value, the reader's keys, and what each walker answers for it."""

    name: str
    value: bytes
    #: The Python walker's answers: payload frames read, bad regions (start, end), payloads
    #: those regions hold, frames held for another reader, and the widest spread marker.
    found: int
    bad: tuple[tuple[int, int], ...] = ()
    dropped: int = 0
    held: int = 0
    marker_width: int = 0
    #: Cancel frames read (verified).
    cancels: int = 0
    #: The reader's secret keys.
    keys: tuple[bytes, ...] = ()
    #: The take script's answers: frames it counts as taken, where its walk stops (None: at the
    #: end), and the frames it keeps (not due at :data:`NOW_MS`).
    taken: int = 0
    reach: int | None = None
    kept: bytes = b""


A, B, C = frame(1), frame(2), frame(3)
SIGNED = frame(4, keys=(KEY,))
FOREIGN = frame(5, keys=(OTHER_KEY,))
LATER = frame(6, meta=not_before(NOW_MS + 60_000))
EARLIER = frame(7, meta=not_before(NOW_MS - 60_000))
MARKER = frames.spread_marker(3, SIGNAL)
CRC_BROKEN = edited(A, len(A) - 6, 0x00, reseal=False)
UNKNOWN_FLAGS = edited(A, 3, 0x10)
CANCEL = frames.cancel_frame(bytes((101, 0, 0, 0, 0, 0, 0, 1)), SIGNAL)
SIGNED_CANCEL = frames.cancel_frame(bytes((101, 0, 0, 0, 0, 0, 0, 4)), SIGNAL, (KEY,))
FOREIGN_CANCEL = frames.cancel_frame(bytes((101, 0, 0, 0, 0, 0, 0, 4)), SIGNAL, (OTHER_KEY,))
#: A cancel frame whose body is not an 8-byte id.
SHORT_CANCEL = frames.encode(b"\x01", SIGNAL, flags=frames.FLAG_CANCEL)
COALESCED = frame(8, meta=frames.coalesce_meta("k", sent_ms=NOW_MS - 5, debounce_ms=1000))
UNKNOWN_VERSION = edited(A, 2, 2)
TAMPERED = edited(SIGNED, frames.HEADER_SIZE + 5, SIGNED[frames.HEADER_SIZE + 5] ^ 1)
GARBAGE = b"garbage!"
REPEATED_MAGIC = frames.MAGIC * 50
#: A plausible header (magic, version, flags) over and over: each declares a length past the end.
REPEATED_HEAD = (frames.MAGIC + b"\x03\x00") * 25
assert CRC_BROKEN != A

VECTORS = [
    Vector("empty", b"", found=0, reach=0),
    Vector("one frame", A, found=1, taken=1),
    Vector("three frames", A + B + C, found=3, taken=3),
    Vector("signed, key held", SIGNED + SIGNED, found=2, keys=(KEY,), taken=2),
    Vector("signed with a key not held", SIGNED + FOREIGN, found=1, held=1, keys=(KEY,), taken=2),
    Vector("unsigned read with a key", A + SIGNED, found=1, held=1, keys=(KEY,), taken=2),
    Vector("delayed, not due", LATER + A, found=2, taken=1, kept=LATER),
    Vector("delayed, due", EARLIER + A, found=2, taken=2),
    Vector("spread marker first", MARKER + A + B, found=2, marker_width=3, taken=2),
    Vector("a cancellation after its payload", A + CANCEL, found=1, cancels=1, taken=1),
    Vector("signed cancellation", SIGNED + SIGNED_CANCEL, found=1, cancels=1, keys=(KEY,), taken=1),
    Vector(
        "unsigned cancellation read with a key",
        SIGNED + CANCEL,
        found=1,
        bad=((len(SIGNED), len(SIGNED) + len(CANCEL)),),
        dropped=1,
        keys=(KEY,),
        taken=1,
    ),  # a forged cancellation is never held for another reader: it cancels nothing
    Vector(
        "cancellation signed with a key not held",
        SIGNED + FOREIGN_CANCEL,
        found=1,
        bad=((len(SIGNED), len(SIGNED) + len(FOREIGN_CANCEL)),),
        dropped=1,
        keys=(KEY,),
        taken=1,
    ),
    Vector(
        "malformed cancellation",
        A + SHORT_CANCEL + B,
        found=2,
        bad=((len(A), len(A) + len(SHORT_CANCEL)),),
        dropped=1,
        taken=2,
    ),  # the take script walks headers only: it takes it, delivery parses again
    Vector("coalesced payload", COALESCED + A, found=2, taken=2),
    Vector(
        "garbage between",
        A + GARBAGE + B,
        found=2,
        bad=((len(A), len(A) + len(GARBAGE)),),
        dropped=1,
        taken=1,
        reach=len(A),
    ),
    Vector(
        "truncated last frame",
        A + B[:-3],
        found=1,
        bad=((len(A), 2 * len(A) - 3),),
        dropped=1,
        taken=1,
        reach=len(A),
    ),
    Vector(
        "seal broken", CRC_BROKEN + B, found=1, bad=((0, len(A)),), dropped=1, taken=2
    ),  # the take script checks no seal: it takes both, delivery parses again
    Vector(
        "unknown flags",
        UNKNOWN_FLAGS + B,
        found=1,
        bad=((0, len(A)),),
        dropped=1,
        taken=0,
        reach=0,
    ),
    Vector(
        "unknown version",
        UNKNOWN_VERSION + B,
        found=1,
        bad=((0, len(A)),),
        dropped=1,
        taken=0,
        reach=0,
    ),
    Vector(
        "tampered tag",
        TAMPERED + SIGNED,
        found=1,
        bad=((0, len(SIGNED)),),
        dropped=1,
        keys=(KEY,),
        taken=2,
    ),  # the take script checks no tag either
    Vector(
        "repeated magic",
        REPEATED_MAGIC,
        found=0,
        bad=((0, len(REPEATED_MAGIC)),),
        dropped=50,
        taken=0,
        reach=0,
    ),
    Vector(
        "repeated magic, then a frame",
        REPEATED_MAGIC + A,
        found=1,
        bad=((0, len(REPEATED_MAGIC)),),
        dropped=50,
        taken=0,
        reach=0,
    ),
    Vector(
        "repeated plausible header",
        REPEATED_HEAD,
        found=0,
        bad=((0, len(REPEATED_HEAD)),),
        dropped=25,
        taken=0,
        reach=0,
    ),
]
