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
    """A version 2 tag is keyed BLAKE2b-256 over the signal's key, a zero byte, the version
    and flags, the id and the body, for keys of any length (one past BLAKE2b's 64-byte key
    limit is hashed first)."""
    import hashlib

    secret = bytes(range(1, 256))[:key_length]
    raw = frames.encode(b"body", b"gs::q:x", [secret], ident=b"12345678")
    key = secret if key_length <= 64 else hashlib.blake2b(secret).digest()
    expected = hashlib.blake2b(
        b"gs::q:x\x00" + raw[2:4] + b"12345678" + b"body", key=key, digest_size=32
    )
    assert raw[18:50] == expected.digest()
    found, bad = frames.parse(raw, b"gs::q:x", [b"other-key" * 4, secret])
    assert bad == [] and [f.body for f in found] == [b"body"]


def test_version_1_tags_are_hmac_sha256() -> None:
    """Version 1 frames, still read, were signed with HMAC-SHA256: exactly ``hmac.new``'s."""
    import hashlib
    import hmac

    secret = b"s" * 70
    tag = frames._hmac_tag(secret, b"gs::q:x", b"message")
    assert tag == hmac.new(secret, b"gs::q:x\x00message", hashlib.sha256).digest()


def _version_1(body: bytes, key: bytes, secret: bytes | None = None, attempts: int = 0) -> bytes:
    """A frame as version 1 wrote it: the CRC in the header, over bytes 2-3, 6-9 and 14 on."""
    import struct
    import zlib

    flags = frames.FLAG_SIGNED if secret else 0
    ident = b"\x65\x00\x00\x00abcd"
    tag = frames._hmac_tag(secret, key, bytes((1, flags)) + ident + body) if secret else b""
    vf, length = bytes((1, flags)), struct.pack(">I", len(body))
    crc = zlib.crc32(ident + tag + body, zlib.crc32(length, zlib.crc32(vf)))
    return (
        frames.MAGIC
        + vf
        + struct.pack(">H", attempts)
        + length
        + struct.pack(">I", crc)
        + ident
        + tag
        + body
    )


@pytest.mark.parametrize("secret", [None, b"s" * 32], ids=["unsigned", "signed"])
def test_version_1_frames_are_still_read(secret: bytes | None) -> None:
    """Payloads pending across an upgrade are delivered: version 1 frames, alone or mixed
    with version 2 ones, parse (and verify); their attempts can be bumped in place."""
    keys = (secret,) if secret else ()
    old = _version_1(b"old", KEY, secret)
    new = frames.encode(b"new", KEY, keys)
    found, bad = frames.parse(old + new + old, KEY, keys)
    assert [f.body for f in found] == [b"old", b"new", b"old"] and bad == []
    assert found[0].ident == b"\x65\x00\x00\x00abcd"
    (bumped,), bad = frames.parse(frames.with_attempts(old, 7), KEY, keys)
    assert bumped.attempts == 7 and bumped.body == b"old" and bad == []
    broken = old[:-1] + b"X"
    assert frames.parse(broken, KEY, keys)[0] == []


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
