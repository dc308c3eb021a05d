"""Property tests of the frame parser: it never raises and tiles its input, finds every frame amid
garbage, keeps the complete frames of a truncated value, and catches tampering.

Each property is registered in ``fuzz_support.PROPERTIES`` (see there), so
``scripts/fuzz_long.py`` can run it with many more examples. Exactness: without a secret key, a
stretch of garbage is told from a frame by the CRC alone, so "garbage is never mistaken for a
frame" holds up to a 2**-32 accident per false frame start; the unsigned properties therefore
keep the frame magic out of their garbage. With a key, a frame is accepted only with a valid
HMAC, so the signed properties allow any garbage at all. Past a work budget (linear in the
value's size) parse gives the rest of a value up; where an input could reach it
(``may_give_up``) a property only asks for a prefix of the frames."""

from __future__ import annotations

import time
import zlib

import pytest
from hypothesis import assume
from hypothesis import strategies as st

from gaesignals import frames

from .fuzz_support import (
    KEY,
    MAGIC,
    OTHER_KEY,
    SIGNAL_KEY,
    encode,
    fake_header,
    frame_specs,
    fuzz,
    hostile_chunks,
    may_give_up,
    prefixes,
)

ATTEMPTS_BYTES = (4, 5)  # the attempts counter: outside the tag by design (deliverers reseal it)
LENGTH_BYTES = range(6, 10)


def parse(value: bytes, signed: bool) -> tuple[list[frames.Frame], list[frames.BadRegion]]:
    return frames.parse(value, SIGNAL_KEY, [KEY] if signed else [])


def recrc(frame: bytes) -> bytes:
    """Reseal the frame for its declared layout, as an attacker would: the seal after the
    declared body is made the CRC of every byte before it."""
    fields = frames.HEADER.unpack_from(frame)
    flags, meta, length = fields[2], fields[4], fields[5]
    tag = frames.KEY_ID_SIZE + frames.TAG_SIZE if flags & frames.FLAG_SIGNED else 0
    end = frames.HEADER_SIZE + tag + meta + length
    head = frame[:end]
    return head + zlib.crc32(head, frames.SEALED).to_bytes(4, "little") + frame[end + 4 :]


def xor_byte(data: bytes, index: int, mask: int) -> bytes:
    return data[:index] + bytes((data[index] ^ mask,)) + data[index + 1 :]


def summary(found: list[frames.Frame]) -> list[tuple[bytes, int, int]]:
    return [(f.body, f.flags & frames.FLAG_JSON, f.attempts) for f in found]


def expected(specs: list[tuple[bytes, bool, int]]) -> list[tuple[bytes, int, int]]:
    return [(body, frames.FLAG_JSON if js else 0, attempts) for body, js, attempts in specs]


def check_found(
    value: bytes, found: list[frames.Frame], want: list[tuple[bytes, int, int]]
) -> None:
    """``found`` is exactly ``want``; or, where parse may have given up, a prefix of it."""
    got = summary(found)
    if may_give_up(value):
        assert got == want[: len(got)]
    else:
        assert got == want


def check_partition(value: bytes, found: list[frames.Frame], bad: list[frames.BadRegion]) -> None:
    """Frames and bad regions tile the value in order, with no gap, overlap or two bad regions
    side by side (a frame held for another reader, which parse reports as a region of its own,
    may sit beside one), and every frame is exactly its header, key id, tag and body."""
    regions = sorted(
        [(f.start, f.end, "frame") for f in found]
        + [(b.start, b.end, "held" if _held(b) else "bad") for b in bad]
    )
    pos, previous = 0, ""
    for start, end, kind in regions:
        assert start == pos and end > start, (regions, len(value))
        assert not kind == previous == "bad"
        pos, previous = end, kind
    assert pos == len(value)
    for frame in found:
        tag = frames.KEY_ID_SIZE + frames.TAG_SIZE if frame.flags & frames.FLAG_SIGNED else 0
        seal = frames.SEAL_SIZE
        assert frame.end - frame.start == frames.HEADER_SIZE + tag + len(frame.body) + seal
        assert value[frame.end - seal - len(frame.body) : frame.end - seal] == frame.body


def _held(region: frames.BadRegion) -> bool:
    """Whether ``region`` is a whole frame held for another reader (see frames.Held)."""
    return region.reason.startswith(("signed with key id", "unsigned frame while"))


# Garbage with no frame magic in it; b"\x00\x00" cannot form a magic with its neighbours.
magic_free = st.binary(max_size=64).map(lambda b: b.replace(MAGIC, b"\x00\x00"))
soup = st.lists(
    st.one_of(
        hostile_chunks,
        frame_specs.map(lambda spec: encode(spec, signed=True)),
        prefixes(frame_specs.map(lambda spec: encode(spec, signed=True))),
    ),
    max_size=10,
).map(b"".join)


# -- the frame parser -----------------------------------------------------------------------------


@fuzz(500, value=st.one_of(st.binary(max_size=2048), soup), signed=st.booleans())
def test_parse_never_raises_and_tiles_its_input(value: bytes, signed: bool) -> None:
    """On any bytes, parse returns frames and bad regions that tile the input exactly, each
    frame verifies again on its own, and with a key every frame found is signed."""
    found, bad = parse(value, signed)
    check_partition(value, found, bad)
    for frame in found:
        assert not signed or frame.flags & frames.FLAG_SIGNED
        again, none = parse(value[frame.start : frame.end], signed)
        assert summary(again) == summary([frame]) and none == []


@fuzz(
    400,
    value=st.one_of(
        st.binary(max_size=2048),
        soup,
        st.tuples(st.lists(frame_specs, max_size=8), st.booleans()).map(
            lambda made: b"".join(encode(spec, made[1]) for spec in made[0])
        ),
    ),
    signed=st.booleans(),
)
def test_the_bodies_shortcut_agrees_with_parse(value: bytes, signed: bool) -> None:
    """Weak delivery's shortcut (frames.pickled_bodies) gives exactly the bodies parse finds
    when parse finds nothing bad and no JSON frame, and None otherwise."""
    found, bad = parse(value, signed)
    quick = frames.pickled_bodies(value, SIGNAL_KEY, [KEY] if signed else [])
    clean = value != b"" and not bad and not any(f.flags & frames.FLAG_JSON for f in found)
    if quick is not None:
        assert clean and quick == [f.body for f in found]
    else:
        assert not clean


@fuzz(
    300,
    specs=st.lists(frame_specs, max_size=8),
    garbage=st.lists(magic_free, min_size=9, max_size=9),
    signed=st.booleans(),
)
def test_frames_amid_magic_free_garbage_are_all_found(
    specs: list[tuple[bytes, bool, int]], garbage: list[bytes], signed: bool
) -> None:
    """parse(G0 + F0 + G1 + F1 + ... + Gn), G free of the magic, finds exactly F's payloads
    in order, and exactly the non-empty G's as bad regions."""
    value = garbage[0]
    junk_spans = [(0, len(garbage[0]))]
    for spec, junk in zip(specs, garbage[1:], strict=False):
        value += encode(spec, signed)
        junk_spans.append((len(value), len(value) + len(junk)))
        value += junk
    found, bad = parse(value, signed)
    assert summary(found) == expected(specs)
    assert [(b.start, b.end) for b in bad] == [(s, e) for s, e in junk_spans if e > s]
    check_partition(value, found, bad)


@fuzz(
    300,
    specs=st.lists(frame_specs, max_size=6),
    garbage=st.lists(st.lists(hostile_chunks, max_size=3).map(b"".join), min_size=7, max_size=7),
)
def test_signed_frames_amid_any_garbage_are_all_found(
    specs: list[tuple[bytes, bool, int]], garbage: list[bytes]
) -> None:
    """With a key, frames amid arbitrary hostile bytes (noise, magics, fake headers, unsigned,
    foreign-key and other-signal frames, whole or cut short) are exactly the signed frames, in
    order."""
    value = garbage[0] + b"".join(
        encode(spec, signed=True) + junk for spec, junk in zip(specs, garbage[1:], strict=False)
    )
    found, bad = parse(value, signed=True)
    check_found(value, found, expected(specs))
    check_partition(value, found, bad)


@fuzz(100, specs=st.lists(frame_specs, min_size=1, max_size=4), signed=st.booleans())
def test_every_truncation_keeps_the_complete_frames(
    specs: list[tuple[bytes, bool, int]], signed: bool
) -> None:
    """Cut a run of frames anywhere: parse never raises, finds exactly the frames wholly
    inside the prefix, and reports the cut-off tail as one bad region."""
    built = [encode(spec, signed) for spec in specs]
    value = b"".join(built)
    ends = [sum(map(len, built[: i + 1])) for i in range(len(built))]
    for cut in range(len(value) + 1):
        found, bad = parse(value[:cut], signed)
        whole = sum(end <= cut for end in ends)
        assert summary(found) == expected(specs[:whole])
        last_end = ends[whole - 1] if whole else 0
        assert [(b.start, b.end) for b in bad] == ([(last_end, cut)] if cut > last_end else [])


@fuzz(
    300,
    flags=st.sampled_from([0, 1, 2, 3]),
    length=st.one_of(st.integers(0, 300), st.integers(2**20, 2**32 - 1)),
    crc=st.integers(0, 2**32 - 1),
    repeat=st.integers(1, 200),
    padding=st.binary(max_size=64),
    spec=frame_specs,
)
def test_declared_lengths_never_swallow_or_stall(
    flags: int, length: int, crc: int, repeat: int, padding: bytes, spec: tuple[bytes, bool, int]
) -> None:
    """Headers declaring any length (inside the value, past its end, up to 4 GiB), repeated,
    before a signed frame: no exception, no allocation of the declared size, quick, and the
    frame after them is still found."""
    value = fake_header(flags, length, crc) * repeat + padding + encode(spec, signed=True)
    started = time.perf_counter()
    found, bad = parse(value, signed=True)
    assert time.perf_counter() - started < 1.0
    check_found(value, found, expected([spec]))
    check_partition(value, found, bad)


@fuzz(500, spec=frame_specs, bit=st.integers(0, 2**20), signed=st.booleans())
def test_single_bit_flips_are_caught(spec: tuple[bytes, bool, int], bit: int, signed: bool) -> None:
    """A flipped bit anywhere loses the frame: always with a key; without one, the CRC
    catches every flip outside the length field (a flip there is caught with probability
    1 - 2**-32). The attempts counter is outside the tag but inside the CRC."""
    frame = encode(spec, signed)
    bit %= len(frame) * 8
    index = bit // 8
    flipped = xor_byte(frame, index, 1 << (bit % 8))
    found, bad = parse(flipped, signed)
    check_partition(flipped, found, bad)
    if signed or index not in LENGTH_BYTES:
        assert found == []


@fuzz(400, spec=frame_specs, index=st.integers(0, 2**20), mask=st.integers(1, 255))
def test_tampering_that_fixes_the_crc_never_verifies(
    spec: tuple[bytes, bool, int], index: int, mask: int
) -> None:
    """An attacker who changes any byte but the attempts counter and recomputes the CRC still
    fails the tag: the frame is dropped (unless the change was to the CRC itself, undone)."""
    frame = encode(spec, signed=True)
    index %= len(frame)
    assume(index not in ATTEMPTS_BYTES)
    tampered = recrc(xor_byte(frame, index, mask))
    found, bad = parse(tampered, signed=True)
    check_partition(tampered, found, bad)
    assert summary(found) == (expected([spec]) if tampered == frame else [])


@fuzz(200, spec=frame_specs, other=st.binary(min_size=1, max_size=40))
def test_a_signed_frame_verifies_only_for_its_key_and_signal(
    spec: tuple[bytes, bool, int], other: bytes
) -> None:
    """A signed frame verifies for its own signal key with its own key (alone or anywhere in
    a rotation list), and never for another signal key or without its key."""
    frame = encode(spec, signed=True)
    mine = expected([spec])
    assert summary(frames.parse(frame, SIGNAL_KEY, [KEY])[0]) == mine
    assert summary(frames.parse(frame, SIGNAL_KEY, [OTHER_KEY, KEY])[0]) == mine
    assert frames.parse(frame, SIGNAL_KEY, [OTHER_KEY])[0] == []
    if other != SIGNAL_KEY:
        assert frames.parse(frame, other, [KEY])[0] == []


def test_parse_work_is_linear_in_the_value_size(monkeypatch: pytest.MonkeyPatch) -> None:
    """A value packed with false headers that each declare a long in-range body costs a
    bounded multiple of its size in CRC work, not the sum of every declared body (which was
    quadratic: about 3 s for 1 MB), and the valid frame before them is still found."""
    crc_bytes = 0
    real_crc32 = zlib.crc32

    class CountingZlib:
        @staticmethod
        def crc32(data: bytes, value: int = 0) -> int:
            nonlocal crc_bytes
            crc_bytes += len(data)
            return real_crc32(data, value)

    size = 100_000
    header = fake_header(0, size // 2)
    first = encode((b"first", False, 0), signed=True)
    value = first + (header * (size // len(header) + 1))[:size]
    monkeypatch.setattr(frames, "zlib", CountingZlib)
    found, bad = frames.parse(value, SIGNAL_KEY, [KEY])
    assert summary(found) == [(b"first", 0, 0)]
    check_partition(value, found, bad)
    assert crc_bytes <= 8 * len(value)
