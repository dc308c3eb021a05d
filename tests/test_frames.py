"""The frame format: round trips, resynchronisation and signatures."""

from __future__ import annotations

import pytest

from gaesignals import frames

KEY = b"gs::q:sig"


def test_round_trip_keeps_bodies_and_order() -> None:
    """Concatenated frames parse back to their bodies in order, with their positions."""
    bodies = [b"", b"a", b"\xa7\x5c looks like magic", b"x" * 70000]
    value = b"".join(frames.encode(b, KEY) for b in bodies)
    found, bad = frames.parse(value, KEY)
    assert [f.body for f in found] == bodies
    assert bad == []
    assert found[0].start == 0 and found[-1].end == len(value)


def test_attempts_can_be_rewritten_without_the_key() -> None:
    """The attempts counter changes in place and the frame stays valid and signed."""
    keys = (b"k" * 32,)
    raw = frames.encode(b"body", KEY, keys)
    bumped = frames.with_attempts(raw, 3)
    (frame,), bad = frames.parse(bumped, KEY, keys)
    assert frame.attempts == 3 and frame.body == b"body" and bad == []


def test_resynchronises_after_garbage() -> None:
    """After a bad stretch the parser finds the next frame by its magic."""
    good = frames.encode(b"ok", KEY)
    value = b"junk" + good + good[:9] + b"\xa7\x5c\x01" + good
    found, bad = frames.parse(value, KEY)
    assert [f.body for f in found] == [b"ok", b"ok"]
    assert [r.start for r in bad] == [0, 4 + len(good)]


def test_signature_binds_key_and_rotation_accepts_old_keys() -> None:
    """A signed frame verifies only for its own signal key, with any listed secret."""
    old, new = b"o" * 32, b"n" * 32
    raw = frames.encode(b"payload", KEY, (old,))
    assert frames.parse(raw, KEY, (new, old))[0]
    assert not frames.parse(raw, KEY, (new,))[0]
    assert not frames.parse(raw, b"gs::q:other", (new, old))[0]
    unsigned = frames.encode(b"payload", KEY)
    found, bad = frames.parse(unsigned, KEY, (new,))
    assert found == [] and bad[0].reason.startswith("unsigned")


@pytest.mark.parametrize("key_length", [1, 32, 63, 64, 65, 200])
def test_tags_are_keyed_blake2b(key_length: int) -> None:
    """A tag is keyed BLAKE2b-256 over the signal's key, a zero byte, the version and flags,
    the id, the metadata and the body, for keys of any length (one past BLAKE2b's 64-byte key
    limit is hashed first)."""
    import hashlib

    secret = bytes(range(1, 256))[:key_length]
    meta = frames.meta_entry(frames.META_NOT_BEFORE, bytes(8))
    raw = frames.encode(b"body", b"gs::q:x", [secret], ident=b"12345678", meta=meta)
    key = secret if key_length <= 64 else hashlib.blake2b(secret).digest()
    expected = hashlib.blake2b(
        b"gs::q:x\x00" + raw[2:4] + b"12345678" + meta + b"body", key=key, digest_size=32
    )
    assert raw[20:22] == frames.key_id(secret)
    assert raw[22:54] == expected.digest()
    found, bad = frames.parse(raw, b"gs::q:x", [b"other-key" * 4, secret])
    assert bad == [] and [f.body for f in found] == [b"body"]


def _version_1(body: bytes, attempts: int = 0) -> bytes:
    """A frame laid out as a version 1 frame was (never written by a release)."""
    import struct
    import zlib

    vf, length, ident = bytes((1, 0)), struct.pack(">I", len(body)), b"\x65\x00\x00\x00abcd"
    crc = zlib.crc32(ident + body, zlib.crc32(length, zlib.crc32(vf)))
    head = frames.MAGIC + vf + struct.pack(">H", attempts) + length + struct.pack(">I", crc)
    return head + ident + body


def test_a_version_1_frame_is_an_unreadable_region() -> None:
    """Only version 2 is read: a version 1 frame is reported as a bad region naming its
    version, and the version 2 frames around it are still found."""
    old = _version_1(b"old")
    new = frames.encode(b"new", KEY)
    found, bad = frames.parse(new + old + new, KEY)
    assert [f.body for f in found] == [b"new", b"new"]
    assert [(r.start, r.end, r.reason) for r in bad] == [
        (len(new), len(new) + len(old), "unknown frame version 1")
    ]
    assert frames.pickled_bodies(new + old, KEY) is None


def test_a_clean_value_is_checked_whole_and_a_bad_frame_only_costs_itself() -> None:
    """Sealed frames chain: a run of them passes one CRC over the whole value. One damaged
    frame in the middle fails that check, and then only it is lost, whichever byte is hit."""
    import zlib

    bodies = [b"%d" % i * (i % 7) for i in range(50)]
    value = b"".join(frames.encode(b, KEY) for b in bodies)
    assert zlib.crc32(value, frames.SEALED) == frames.SEALED
    start = sum(len(frames.encode(b, KEY)) for b in bodies[:20])
    size = len(frames.encode(bodies[20], KEY))
    for offset in range(size):
        damaged = bytearray(value)
        damaged[start + offset] ^= 0x40
        found, bad = frames.parse(bytes(damaged), KEY)  # the attempts counter too: sealed
        assert [f.body for f in found] == bodies[:20] + bodies[21:], offset
        assert bad and bad[0].start == start


def test_with_attempts_reseals() -> None:
    """Bumping the attempts counter keeps a version 2 frame sealed (no key needed)."""
    import zlib

    raw = frames.encode(b"body", KEY, (b"k" * 32,))
    bumped = frames.with_attempts(raw, 9)
    assert bumped != raw and len(bumped) == len(raw)
    assert zlib.crc32(bumped, frames.SEALED) == frames.SEALED
