"""Property tests of the frame parser, signal keys and the send/deliver round trip.

Every property is registered in ``PROPERTIES`` with its strategies, so ``scripts/fuzz_long.py``
can run the same checks with many more (and non-derandomized) examples. Here they run
derandomized with a fixed example budget so CI is deterministic and the file stays fast.

Exactness: without a secret key, a stretch of garbage is told from a frame by the CRC alone, so
"garbage is never mistaken for a frame" holds up to a 2**-32 accident per false frame start;
the unsigned properties therefore keep the frame magic out of their garbage. With a key, a
frame is accepted only with a valid HMAC, so the signed properties allow any garbage at all.
Past a work budget (linear in the value's size) parse gives the rest of a value up; where an
input could reach it (``may_give_up``) a property only asks for a prefix of the frames.
"""

from __future__ import annotations

import dataclasses
import hashlib
import struct
import time
import zlib
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

import gaesignals
from gaesignals import InvalidSignalName, Signal, frames
from gaesignals.keys import (
    COUNTERS,
    MAX_NAME_LENGTH,
    SignalKeys,
    shard_queues,
    signal_keys,
    spread_key,
)
from gaesignals.stores import MAX_KEY_LENGTH
from gaesignals.stores.memory import MemoryStore

SIGNAL_KEY = b"gs::q:fuzz"
OTHER_SIGNAL_KEY = b"gs::q:fuzz2"
KEY = hashlib.sha256(b"gaesignals fuzz key").digest()
OTHER_KEY = hashlib.sha256(b"gaesignals fuzz key: other").digest()
MAGIC = frames.MAGIC
ATTEMPTS_BYTES = (4, 5)  # the attempts counter: outside the tag by design (deliverers reseal it)
LENGTH_BYTES = range(6, 10)


# -- the registry shared with scripts/fuzz_long.py ------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Property:
    name: str
    check: Callable[..., None]
    strategies: dict[str, st.SearchStrategy[Any]]
    examples: int


PROPERTIES: dict[str, Property] = {}


def fuzz(examples: int, **strategies: st.SearchStrategy[Any]) -> Callable[..., Any]:
    """Register ``check`` as a property and return it as a derandomized hypothesis test."""

    def decorate(check: Callable[..., None]) -> Any:
        PROPERTIES[check.__name__] = Property(check.__name__, check, strategies, examples)
        ci = settings(max_examples=examples, deadline=None, derandomize=True, database=None)
        return ci(given(**strategies)(check))

    return decorate


# -- helpers and strategies -----------------------------------------------------------------------


def encode(spec: tuple[bytes, bool, int], signed: bool, signal_key: bytes = SIGNAL_KEY) -> bytes:
    body, json_body, attempts = spec
    keys = [KEY] if signed else []
    return frames.encode(body, signal_key, keys, json_body=json_body, attempts=attempts)


def parse(value: bytes, signed: bool) -> tuple[list[frames.Frame], list[frames.BadRegion]]:
    return frames.parse(value, SIGNAL_KEY, [KEY] if signed else [])


def fake_header(flags: int, length: int, crc: int = 0, version: int = frames.VERSION) -> bytes:
    """A frame header with chosen fields (``crc`` in the id's first four bytes, zeros after
    them): usually not a valid frame."""
    header = bytearray(frames.HEADER_SIZE)
    struct.pack_into(">2sBBHHII", header, 0, MAGIC, version, flags, 0, 0, length, crc)
    return bytes(header)


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


def may_give_up(value: bytes) -> bool:
    """Whether parse's work budget could run out on ``value``, making it give up the rest.

    Checking a false frame start costs at most ``len(value)`` bytes of CRC, and the budget is
    never below 64 KiB (see frames.parse), so below that product every frame must be found.
    """
    return value.count(MAGIC) * len(value) > 65536


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


bodies = st.binary(max_size=96)
frame_specs = st.tuples(bodies, st.booleans(), st.integers(0, frames.MAX_ATTEMPTS_FIELD))
# Garbage with no frame magic in it; b"\x00\x00" cannot form a magic with its neighbours.
magic_free = st.binary(max_size=64).map(lambda b: b.replace(MAGIC, b"\x00\x00"))
fake_headers = st.builds(
    fake_header,
    flags=st.integers(0, 255),
    length=st.one_of(st.integers(0, 400), st.integers(0, 2**32 - 1)),
    crc=st.integers(0, 2**32 - 1),
    version=st.sampled_from([frames.VERSION, 0, 1, 2, 255]),
)


#: Whole frames that a reader keyed with KEY for SIGNAL_KEY must refuse: unsigned, signed with
#: another key, or signed for another signal.
foreign_frames = st.one_of(
    frame_specs.map(lambda spec: encode(spec, signed=False)),
    frame_specs.map(
        lambda spec: frames.encode(spec[0], SIGNAL_KEY, [OTHER_KEY], json_body=spec[1])
    ),
    frame_specs.map(lambda spec: encode(spec, signed=True, signal_key=OTHER_SIGNAL_KEY)),
)


@st.composite
def prefixes(draw: st.DrawFn, whole: st.SearchStrategy[bytes]) -> bytes:
    """A proper prefix of a frame drawn from ``whole``."""
    frame = draw(whole)
    return frame[: draw(st.integers(0, len(frame) - 1))]


#: Anything that holds no frame signed with KEY for SIGNAL_KEY, whole or cut short: noise,
#: magics, fake headers, foreign frames and their prefixes. (A prefix of a frame signed with
#: KEY is left out on purpose: followed by the very bytes it lost, it is that frame again.)
hostile_chunks = st.one_of(
    st.binary(max_size=64),
    st.just(MAGIC),
    st.just(MAGIC + bytes((frames.VERSION,))),
    fake_headers,
    foreign_frames,
    prefixes(foreign_frames),
)
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


# -- signal names and keys ------------------------------------------------------------------------

SPECIAL = ["\x00", "\n", "\r", " ", "\t", ":", "\x7f", "!", "~", "\u00e9", "\ud800", "\udfff"]
SPECIAL += ["\U0001f600", "\ufffd", "h", "q", "l", "d", "c", "A"]
any_char = st.one_of(
    st.characters(exclude_categories=()),
    st.integers(0xD800, 0xDFFF).map(chr),  # lone surrogates: hypothesis leaves them out
    st.sampled_from(SPECIAL),
)
namespaces = st.from_regex(r"[A-Za-z0-9_-]{0,64}", fullmatch=True)
names = st.one_of(
    st.text(any_char, min_size=1, max_size=300),
    st.text(st.sampled_from(SPECIAL), min_size=1, max_size=20),
    st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E), min_size=1, max_size=260),
    st.builds(
        lambda n, c: "a" * (n - 1) + c,
        st.one_of(st.integers(170, 260), st.integers(1, MAX_NAME_LENGTH)),
        any_char,
    ),
)


def all_keys(name: str, namespace: str) -> list[str]:
    keys = signal_keys(name, namespace)
    named = [getattr(keys, field.name) for field in dataclasses.fields(SignalKeys)]
    return [*named, spread_key(keys.queue), *shard_queues(keys.queue, 16)[1:]]


def near(name: str) -> st.SearchStrategy[str]:
    """Valid names that differ from ``name`` a little, or look like its hashed form."""
    digest = hashlib.sha256(name.encode("utf-8", "surrogatepass")).hexdigest()
    candidates = [
        name + "x",
        "x" + name,
        name[:-1],
        name + "\x00",
        name + " ",
        name.swapcase(),
        name.upper(),
        digest,
        name.encode("utf-8", "surrogatepass").decode("latin-1"),
        "a" * 242,
        "a" * 243,
    ]
    return st.sampled_from([c for c in candidates if 0 < len(c) <= MAX_NAME_LENGTH])


name_pairs = st.one_of(
    st.tuples(namespaces, names, namespaces, names),
    st.tuples(namespaces, names).flatmap(
        lambda pair: st.tuples(st.just(pair[0]), st.just(pair[1]), st.just(pair[0]), near(pair[1]))
    ),
)


@fuzz(500, name=names, namespace=namespaces)
def test_signal_keys_are_short_printable_ascii(name: str, namespace: str) -> None:
    """Any name up to the limit (NUL, newlines, surrogates, emoji, 4096 chars) maps to keys
    of at most 250 characters, all in 0x21-0x7e, one distinct key per role."""
    keys = all_keys(name, namespace)
    assert len(set(keys)) == len(keys)
    for key in keys:
        assert len(key) <= MAX_KEY_LENGTH
        assert all(0x21 <= ord(c) <= 0x7E for c in key), key
        key.encode("ascii")


@fuzz(500, pair=name_pairs)
def test_different_names_never_share_a_key(pair: tuple[str, str, str, str]) -> None:
    """Two different (namespace, name) pairs never share any key, in any role."""
    ns_a, a, ns_b, b = pair
    assume((ns_a, a) != (ns_b, b))
    assert set(all_keys(a, ns_a)).isdisjoint(all_keys(b, ns_b))


def test_crafted_names_never_share_a_key() -> None:
    """Hand-picked near-collisions (plain vs hashed forms, the hashing boundary, Unicode
    normalisation, surrogate pairs, separators) all get distinct keys in every namespace."""
    hashed = "a b"
    crafted = [
        "a",
        "A",
        "a ",
        "a\x00",
        "a\n",
        "a:q",
        ":",
        "q:a",
        "qh:a",
        hashed,
        hashlib.sha256(hashed.encode()).hexdigest(),
        "\u00e9",
        "e\u0301",
        "\U0001f600",
        "\ud83d\ude00",
        "\ud800",
        "\udfff",
        "\ufffd",
        "a" * 178,
        "a" * 179,
        "a" * 242,
        "a" * 243,
        "a" * MAX_NAME_LENGTH,
        "a" * (MAX_NAME_LENGTH - 1) + "\x00",
    ]
    for namespace in ["", "a", "q", "qh", "gs", "tenant_b", "x" * 64]:
        keys = [key for name in crafted for key in all_keys(name, namespace)]
        assert len(set(keys)) == len(keys), namespace
        assert all(len(k) <= MAX_KEY_LENGTH for k in keys)
    everywhere = [k for ns in ["", "a", "x" * 64] for name in crafted for k in all_keys(name, ns)]
    assert len(set(everywhere)) == len(everywhere)


@fuzz(100, length=st.integers(MAX_NAME_LENGTH + 1, 4 * MAX_NAME_LENGTH), char=any_char)
def test_names_past_the_limit_are_refused(length: int, char: str) -> None:
    """Names longer than 4096 characters (and the empty name) raise InvalidSignalName."""
    for bad in (char * length, ""):
        with pytest.raises(InvalidSignalName):
            signal_keys(bad, "")
        with pytest.raises(InvalidSignalName):
            Signal(bad)
    all_keys(char * MAX_NAME_LENGTH, "")  # the limit itself is fine


# -- send and deliver with garbage injected -------------------------------------------------------

json_payloads = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**53), 2**53),
    st.text(max_size=40),
    st.lists(st.integers(-1000, 1000), max_size=5),
    st.dictionaries(st.text(max_size=5), st.integers(-1000, 1000), max_size=3),
)


@fuzz(
    200,
    steps=st.lists(st.tuples(json_payloads, st.lists(hostile_chunks, max_size=2)), max_size=6),
    leading=st.lists(hostile_chunks, max_size=2),
    signed=st.booleans(),
    codec=st.sampled_from(["pickle", "json"]),
    append=st.booleans(),
    reliable=st.booleans(),
)
def test_sent_payloads_survive_injected_garbage(
    steps: list[tuple[Any, list[bytes]]],
    leading: list[bytes],
    signed: bool,
    codec: str,
    append: bool,
    reliable: bool,
) -> None:
    """On the memory store, garbage written into a signal's key before and between sends
    never makes deliver raise, and every sent payload is delivered once, in order (without a
    key the garbage is kept free of the frame magic)."""
    store = MemoryStore(append=append)
    gaesignals.configure(store=store, secret_key=KEY if signed else [], codec=codec)
    key = signal_keys("fuzz", "").queue

    def inject(chunks: list[bytes]) -> None:
        junk = b"".join(chunks)
        if not signed:
            junk = junk.replace(MAGIC, b"\x00\x00")
        with store.connection() as conn:
            current = conn.gets_many([key]).get(key)
        store.set_raw(key, (current[0] if current else b"") + junk)

    inject(leading)
    for payload, chunks in steps:
        gaesignals.send("fuzz", payload)
        inject(chunks)
    with store.connection() as conn:
        value = conn.gets_many([key])[key][0]
    sent = [payload for payload, _ in steps]
    got: list[Any] = []
    delivered = gaesignals.deliver({"fuzz": got.append}, reliable=reliable)
    if may_give_up(value):  # too much garbage: the parser may give the rest up, never reorder
        assert got == sent[: len(got)]
    else:
        assert got == sent
    assert delivered == len(got)
    assert gaesignals.deliver({"fuzz": got.append}, reliable=reliable) == 0


# -- hostile values in every key a signal owns ----------------------------------------------------

HOSTILE_NAME = "hostile"
#: The keys a signal owns besides its queue, by role, on the memory store (no segments there:
#: test_hostile.py covers pointers on the stores that keep them).
HOSTILE_ROLES = ("lock", "dead", "cursor", *(f"counter:{c}" for c in COUNTERS))


def _hostile_key(role: str) -> str:
    keys = signal_keys(HOSTILE_NAME, "")
    if role.startswith("counter:"):
        return keys.counter(role.partition(":")[2])
    return str(getattr(keys, role))


hostile_values = st.one_of(
    st.binary(max_size=300),
    st.integers(0, 6000).map(lambda n: b"9" * n),
    st.integers(0, 2**70).map(lambda n: b"%d" % n),
    st.builds(
        lambda token, lease, write: b"%s:%d:%d" % (token, lease, write),
        st.binary(min_size=16, max_size=16).map(lambda b: b.hex().encode()),
        st.integers(0, 10**8),
        st.integers(0, 10**21),
    ),
    st.lists(frame_specs, max_size=3).map(
        lambda specs: b"".join(
            frames.encode(body, signal_keys(HOSTILE_NAME, "").queue.encode(), [k], json_body=j)
            for (body, j, _), k in zip(specs, [KEY, OTHER_KEY, KEY], strict=False)
        )
    ),
)


@fuzz(
    150,
    planted=st.dictionaries(st.sampled_from(HOSTILE_ROLES), hostile_values),
    garbage=st.binary(max_size=200),
    reliable_first=st.booleans(),
)
def test_hostile_values_in_every_key_never_raise_nor_lose(
    planted: dict[str, bytes], garbage: bytes, reliable_first: bool
) -> None:
    """Whatever bytes sit in a signal's lock, cursor, dead letters and counters, and around
    its frames: pending, stats, health, both delivery modes and the dead-letter calls raise
    nothing, and every payload sent is either handled or still pending, never silently gone."""
    store = MemoryStore()
    gaesignals.configure(store=store, secret_key=KEY, lost_check_interval=0)
    queue = signal_keys(HOSTILE_NAME, "").queue
    store.set_raw(queue, garbage)
    for role, value in planted.items():
        store.set_raw(_hostile_key(role), value)
    sent = [f"payload-{i}" for i in range(3)]
    for payload in sent:
        gaesignals.send(HOSTILE_NAME, payload)
    got: list[Any] = []
    for reliable in (reliable_first, not reliable_first):
        gaesignals.pending(HOSTILE_NAME)
        gaesignals.stats(HOSTILE_NAME)
        assert gaesignals.health([HOSTILE_NAME])["store"]["reachable"]
        gaesignals.deliver({HOSTILE_NAME: got.append}, reliable=reliable)
    gaesignals.dead_letters(HOSTILE_NAME)
    gaesignals.requeue_dead_letters(HOSTILE_NAME)
    left = gaesignals.pending(HOSTILE_NAME)[HOSTILE_NAME].count
    handled = [p for p in got if isinstance(p, str) and p.startswith("payload-")]
    assert set(handled) == set(sent) or left >= len(set(sent) - set(handled))
