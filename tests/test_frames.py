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
def test_tags_are_hmac_sha256(key_length: int) -> None:
    """The precomputed signer makes exactly the tag ``hmac.new`` would, for short keys,
    block-sized keys and keys longer than SHA-256's block (hashed first)."""
    import hashlib
    import hmac

    secret = bytes(range(1, 256))[:key_length]
    raw = frames.encode(b"body", b"gs::q:x", [secret], ident=b"12345678")
    expected = hmac.new(secret, b"gs::q:x\x00" + raw[2:4] + b"12345678" + b"body", hashlib.sha256)
    assert raw[22:54] == expected.digest()
    found, bad = frames.parse(raw, b"gs::q:x", [b"other-key" * 4, secret])
    assert bad == [] and [f.body for f in found] == [b"body"]
