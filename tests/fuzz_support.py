"""The property registry and strategies shared by the fuzz suites (``test_fuzz_*``),
``test_hostile`` and ``scripts/fuzz_long.py``.

Every property is registered in ``PROPERTIES`` with its strategies, so ``scripts/fuzz_long.py``
can run the same checks with many more (and non-derandomized) examples. In the test modules
they run derandomized with a fixed example budget so CI is deterministic and the files stay fast."""

from __future__ import annotations

import dataclasses
import hashlib
import struct
from collections.abc import Callable
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from gaesignals import frames
from gaesignals.keys import (
    COUNTERS,
    signal_keys,
)

SIGNAL_KEY = b"gs::q:fuzz"
OTHER_SIGNAL_KEY = b"gs::q:fuzz2"
KEY = hashlib.sha256(b"gaesignals fuzz key").digest()
OTHER_KEY = hashlib.sha256(b"gaesignals fuzz key: other").digest()
MAGIC = frames.MAGIC


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


def fake_header(flags: int, length: int, crc: int = 0, version: int = frames.VERSION) -> bytes:
    """A frame header with chosen fields (``crc`` in the id's first four bytes, zeros after
    them): usually not a valid frame."""
    header = bytearray(frames.HEADER_SIZE)
    struct.pack_into(">2sBBHHII", header, 0, MAGIC, version, flags, 0, 0, length, crc)
    return bytes(header)


def may_give_up(value: bytes) -> bool:
    """Whether parse's work budget could run out on ``value``, making it give up the rest.

    Checking a false frame start costs at most ``len(value)`` bytes of CRC, and the budget is
    never below 64 KiB (see frames.parse), so below that product every frame must be found.
    """
    return value.count(MAGIC) * len(value) > 65536


bodies = st.binary(max_size=96)
frame_specs = st.tuples(bodies, st.booleans(), st.integers(0, frames.MAX_ATTEMPTS_FIELD))
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
