"""Tampered, copied and garbage frames in the cache: a frame whose bytes were changed, or that
was copied to another signal or namespace, is dropped and logged; garbage between frames is
skipped; whatever the bytes, ``deliver`` does not raise and the valid payloads around the bad
bytes still arrive."""

from __future__ import annotations

import logging
import pickle
import random
import struct
import zlib
from typing import Any

import pytest

import gaesignals
from gaesignals import deliver, frames, send
from gaesignals.codec import encode_payload
from gaesignals.config import get_settings
from gaesignals.keys import signal_keys

from .conftest import RawAccess
from .security_support import KEY_NEW, collector, queue_key, run_deliver, use

SECRET_TEXT = "TOP-SECRET-PAYLOAD-7f3a9c"


def framed(name: str, data: Any) -> bytes:
    """One frame for ``name`` exactly as ``send`` would write it under the current settings."""
    settings = get_settings()
    return encode_payload(name, data, signal_keys(name, settings.namespace), settings)


def recrc(frame: bytes) -> bytes:
    """Reseal a frame for its declared layout, as an attacker who tampers would: the seal
    after the declared body is made the CRC of every byte before it."""
    fields = frames.HEADER.unpack_from(frame)
    flags, meta, length = fields[2], fields[4], fields[5]
    tag = frames.KEY_ID_SIZE + frames.TAG_SIZE if flags & frames.FLAG_SIGNED else 0
    end = frames.HEADER_SIZE + tag + meta + length
    head = frame[:end]
    return head + zlib.crc32(head, frames.SEALED).to_bytes(4, "little") + frame[end + 4 :]


def flip(data: bytes, index: int, bit: int = 0) -> bytes:
    return data[:index] + bytes((data[index] ^ (1 << bit),)) + data[index + 1 :]


# -- tampering and copying ------------------------------------------------------------------------


@pytest.mark.parametrize("fix_crc", [False, True], ids=["crc-left", "crc-fixed"])
@pytest.mark.parametrize("where", ["body", "tag", "flags"])
def test_tampered_frame_is_dropped_and_logged(
    raw: RawAccess, where: str, fix_crc: bool, caplog: pytest.LogCaptureFixture
) -> None:
    """A signed frame with one flipped bit (CRC left stale, or recomputed by the attacker) is
    dropped and logged with the key and reason but not the payload; its neighbours arrive."""
    use(raw, secret_key=KEY_NEW)
    key = queue_key("target")
    frame = framed("target", SECRET_TEXT)
    assert SECRET_TEXT.encode() in frame  # so its absence from the log means something
    body_end = len(frame) - frames.SEAL_SIZE
    index = {"body": body_end - 3, "tag": frames.HEADER_SIZE + 7, "flags": 3}[where]
    bad = flip(frame, index, 1)  # flags bit 1: the JSON flag, covered by tag and CRC
    if fix_crc:
        bad = recrc(bad)
    raw.set(key, framed("target", "before") + bad + framed("target", "after"))
    got, handler = collector()
    with caplog.at_level(logging.DEBUG, logger="gaesignals"):
        assert deliver({"target": handler}) == 2
    assert got == ["before", "after"]
    reason = "signature mismatch" if fix_crc else "CRC mismatch"
    assert reason in caplog.text and key in caplog.text and "'target'" in caplog.text
    assert SECRET_TEXT not in caplog.text
    assert all(SECRET_TEXT not in record.getMessage() for record in caplog.records)


def test_attempts_field_is_unsigned_by_design(raw: RawAccess) -> None:
    """The attempts counter (bytes 4-5) is outside the CRC and the tag, so rewriting it leaves
    a signed frame valid: an attacker can change retry counts, never the payload."""
    use(raw, secret_key=KEY_NEW)
    key = queue_key("target")
    raw.set(key, frames.with_attempts(framed("target", "payload"), 7))
    found, bad = frames.parse(raw.get(key) or b"", key.encode(), [KEY_NEW])
    assert [f.attempts for f in found] == [7] and bad == []
    got, handler = collector()
    assert deliver({"target": handler}) == 1
    assert got == ["payload"]


def test_frame_copied_to_another_signal_is_rejected(
    raw: RawAccess, reliable: bool, caplog: pytest.LogCaptureFixture
) -> None:
    """With a key, a frame copied from one signal's key to another's (queue or dead letters)
    fails verification there and is dropped; the original still arrives."""
    use(raw, secret_key=KEY_NEW)
    send("alice", "for-alice")
    value = raw.get(queue_key("alice"))
    assert value
    raw.set(queue_key("bob"), value)
    raw.set(signal_keys("bob", "").dead, value)
    got, handler = collector()
    with caplog.at_level(logging.ERROR, logger="gaesignals"):
        assert run_deliver("bob", handler, reliable) == 0
        assert gaesignals.dead_letters("bob") == []
    assert "signature mismatch" in caplog.text and queue_key("bob") in caplog.text
    assert run_deliver("alice", handler, reliable) == 1
    assert got == ["for-alice"]


def test_frame_copied_to_another_namespace_is_rejected(
    raw: RawAccess, caplog: pytest.LogCaptureFixture
) -> None:
    """The namespace is part of the signed key: a frame copied from tenant_a's key to the same
    signal in tenant_b is dropped, even with the same secret key."""
    use(raw, secret_key=KEY_NEW, namespace="tenant_a")
    send("sig", "for-a")
    value = raw.get(queue_key("sig"))
    assert value
    use(raw, secret_key=KEY_NEW, namespace="tenant_b")
    raw.set(queue_key("sig"), value)
    got, handler = collector()
    with caplog.at_level(logging.ERROR, logger="gaesignals"):
        assert deliver({"sig": handler}) == 0
    assert "signature mismatch" in caplog.text
    use(raw, secret_key=KEY_NEW, namespace="tenant_a")
    assert deliver({"sig": handler}) == 1
    assert got == ["for-a"]


@pytest.mark.parametrize("store_kind", ["memory"])
def test_signing_does_not_stop_replay(raw: RawAccess) -> None:
    """Documents a limit of the threat model: a signed frame copied back into its own key is
    valid and delivered again, so handlers with side effects must be idempotent."""
    use(raw, secret_key=KEY_NEW)
    send("target", "once")
    captured = raw.get(queue_key("target"))
    got, handler = collector()
    assert deliver({"target": handler}) == 1
    raw.set(queue_key("target"), captured or b"")
    assert deliver({"target": handler}) == 1
    assert got == ["once", "once"]


@pytest.mark.parametrize(
    "cursor",
    [b"", b"garbage", b":", b"0:", b"99999999999999999999:zz", b"\xff" * 300, b"54:" + b"0" * 16],
    ids=["empty", "word", "colon", "zero", "huge", "binary", "wrong-ident"],
)
def test_planted_progress_cursor_is_harmless(raw: RawAccess, cursor: bytes) -> None:
    """Bytes planted in a signal's reliable-delivery progress cursor never make delivery raise
    or skip payloads: a cursor only counts if it names a verified frame of the current value."""
    use(raw, secret_key=KEY_NEW)
    keys = signal_keys("target", "")
    cursor_key = getattr(keys, "cursor", None)
    if cursor_key is None:
        pytest.skip("this version has no progress cursor")
    for i in range(3):
        send("target", i)
    raw.set(cursor_key, cursor)
    got, handler = collector()
    assert deliver({"target": handler}, reliable=True) == 3
    assert got == [0, 1, 2]


# -- garbage --------------------------------------------------------------------------------------


def fake_header(flags: int, length: int, crc: int = 0) -> bytes:
    """A frame header with the given flags, declared length and CRC, zeros elsewhere."""
    header = bytearray(frames.HEADER_SIZE)
    struct.pack_into(">2sBBHHII", header, 0, frames.MAGIC, frames.VERSION, flags, 0, 0, length, crc)
    return bytes(header)


def _garbage(kind: str) -> bytes:
    """Bytes that are not a valid frame for the current settings."""
    frame = framed("target", "garbage-source")
    if kind == "random":
        return random.Random(1234).randbytes(257)
    if kind == "truncated-frame":
        return frame[: len(frame) // 2]
    if kind == "truncated-header":
        return frame[:9]
    if kind == "huge-length":
        return fake_header(0, 0xFFFFFFFF) + b"tail"
    if kind == "signed-past-end":
        return fake_header(frames.FLAG_SIGNED, 900_000) + b"x" * 40
    if kind == "wrong-version":
        return recrc(frame[:2] + b"\x04" + frame[3:])
    if kind == "unknown-flags":
        return recrc(frame[:3] + bytes((frame[3] | 0x80,)) + frame[4:])
    if kind == "magic-storm":
        return frames.MAGIC * 100 + b"\xa7"
    if kind == "bad-empty-frame":
        return fake_header(0, 0, crc=12345)
    if kind == "pickle":
        return pickle.dumps({"not": "framed"})
    raise AssertionError(kind)


GARBAGE_KINDS = [
    "random",
    "truncated-frame",
    "truncated-header",
    "huge-length",
    "signed-past-end",
    "wrong-version",
    "unknown-flags",
    "magic-storm",
    "bad-empty-frame",
    "pickle",
]


@pytest.mark.parametrize("kind", GARBAGE_KINDS)
def test_garbage_between_frames_is_skipped(
    raw: RawAccess, kind: str, reliable: bool, caplog: pytest.LogCaptureFixture
) -> None:
    """With a key set, garbage before, between and after valid frames never makes deliver
    raise, is logged, and every valid frame around it is delivered."""
    use(raw, secret_key=KEY_NEW)
    junk = _garbage(kind)
    key = queue_key("target")
    value = junk + framed("target", 0) + junk + framed("target", 1) + junk
    raw.set(key, value)
    send("target", 2)
    got, handler = collector()
    with caplog.at_level(logging.ERROR, logger="gaesignals"):
        assert run_deliver("target", handler, reliable) == 3
    assert got == [0, 1, 2]
    assert "dropped" in caplog.text and key in caplog.text
    assert not raw.get(key)


def test_every_kind_of_garbage_at_once_without_a_key(raw: RawAccess, reliable: bool) -> None:
    """Without a key, every kind of garbage interleaved with unsigned frames is skipped and
    every frame is delivered in order."""
    key = queue_key("target")
    parts = []
    for i, kind in enumerate(GARBAGE_KINDS):
        parts += [_garbage(kind), framed("target", i)]
    raw.set(key, b"".join(parts) + _garbage("truncated-frame"))
    got, handler = collector()
    assert run_deliver("target", handler, reliable) == len(GARBAGE_KINDS)
    assert got == list(range(len(GARBAGE_KINDS)))
