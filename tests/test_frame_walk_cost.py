"""Hostile values cost the frame walker what other garbage costs: the work it counts (candidate
headers checked, budget spent), not time, is compared."""

from __future__ import annotations

import random

import pytest

from gaesignals import frames

SIGNAL = b"gaesignals:q:cost"
SIZE = 1 << 20
#: Candidate headers the walker may check in a megabyte of any garbage.
MOST_CANDIDATES = 4 * SIZE // 1024 + 64


def _walked(value: bytes, keys: tuple[bytes, ...] = ()) -> frames.Walker:
    walker = frames.Walker(value, SIGNAL, keys)
    read = walker.read()
    assert not read.found and read.bad and read.bad[0].start == 0
    return walker


def _random_garbage() -> bytes:
    return random.Random(27).randbytes(SIZE)


def test_random_garbage_costs_almost_no_candidates() -> None:
    """A megabyte of random bytes holds almost no plausible header: few candidates checked."""
    assert _walked(_random_garbage()).candidates <= 4


@pytest.mark.parametrize(
    "pattern",
    [frames.MAGIC, frames.MAGIC + b"\x00", b"\x5c" + frames.MAGIC],
    ids=["magic", "magic and a byte", "a byte and magic"],
)
def test_repeated_frame_magic_costs_what_random_garbage_costs(pattern: bytes) -> None:
    """Frame magic over and over is no plausible header: its candidates are random garbage's."""
    value = (pattern * (SIZE // len(pattern) + 1))[:SIZE]
    walker = _walked(value)
    assert walker.candidates <= _walked(_random_garbage()).candidates + 1
    assert frames.dropped(frames.parse(value, SIGNAL)[1]) == value.count(frames.MAGIC)


@pytest.mark.parametrize(
    "pattern",
    [
        frames.MAGIC + b"\x03\x00",  # each declares a length past the end
        frames.MAGIC + b"\x03\x00" + bytes(8),  # each fits and fails its seal
        frames.MAGIC + b"\x03\x01" + bytes(16),  # each a signed header
    ],
    ids=["past the end", "seal fails", "signed"],
)
def test_repeated_plausible_headers_stop_within_the_budget(pattern: bytes) -> None:
    """Plausible headers over and over are each refused at a fixed cost: the walker checks a
    bounded number per megabyte, then gives the rest up as one bad region."""
    value = (pattern * (SIZE // len(pattern) + 1))[:SIZE]
    walker = _walked(value, (b"k" * 32,))
    assert walker.candidates <= MOST_CANDIDATES
    assert walker.spent <= 4 * SIZE + 65536 + 1024 + len(value)


def test_a_few_refused_headers_leave_the_frames_after_them() -> None:
    """The budget lets a handful of bad headers pass: the valid frames after them are read."""
    good = frames.encode(b"\x80\x05K\x01.", SIGNAL)
    value = (frames.MAGIC + b"\x03\x00") * 50 + good * 3
    walker = frames.Walker(value, SIGNAL)
    read = walker.read()
    assert len(read.found) == 3 and walker.candidates == 50
