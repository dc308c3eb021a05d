"""Frames held for another deliverer: how many a queue key keeps, for how long, and what to say.

A frame this process may not read (signed with a key it does not hold, unsigned while it
requires a signature, pickled while its codec is JSON and no key verifies it; see
:mod:`gaesignals.frames`) is neither delivered nor dropped: it stays queued for a deliverer
that can read it, so a key rotation or a codec switch loses nothing in any deploy order.

Anyone who can write to the cache can plant such frames, so what a key keeps is bounded: at
most :data:`MAX_FRAMES` frames and half the store's ``max_value_size`` in bytes per queue key,
and none older than :data:`MAX_AGE` seconds since it was due (by the frame's own times, on
:data:`gaesignals.frames.clock`). What is past the bound is dropped and counted ``dropped``,
as unreadable bytes are; the first frames of a key are the ones kept.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from typing import NamedTuple

from .. import frames

#: Seconds a held frame is kept after it was due (its send, or its not-before time).
MAX_AGE = 7 * 24 * 3600
#: The most held frames one queue key keeps.
MAX_FRAMES = 1000


class Kept(NamedTuple):
    """The held frames a key keeps, in order, and the bad regions of those it drops."""

    held: list[frames.Held]
    dropped: list[frames.BadRegion]


def max_bytes(max_value_size: int) -> int:
    """The most bytes of held frames one queue key keeps: half of what it holds, so that
    senders keep room while they wait."""
    return max_value_size // 2


def bound(held: Sequence[frames.Held], max_value_size: int, now: float) -> Kept:
    """Which of a key's ``held`` frames it keeps (the first ones, within :data:`MAX_FRAMES`,
    :func:`max_bytes` and :data:`MAX_AGE` at ``now``, Unix seconds) and which it drops."""
    kept: list[frames.Held] = []
    dropped: list[frames.BadRegion] = []
    room = max_bytes(max_value_size)
    for item in held:
        frame = item.frame
        sent = frames.sent_at(frame.ident)
        since = max(sent, frames.not_before(frame) // 1000) if frame.meta else sent
        size = frame.end - frame.start
        if now - since > MAX_AGE or sent - now > MAX_AGE:  # too old, or dated far ahead
            why = f"held past {MAX_AGE // 3600} hours"
        elif len(kept) >= MAX_FRAMES or size > room:
            why = "past the most held payloads a key keeps"
        else:
            kept.append(item)
            room -= size
            continue
        reason = f"{frames.held_reason(item.why, item.key_id)}, {why}"
        dropped.append(frames.BadRegion(frame.start, frame.end, reason))
    return Kept(kept, dropped)


def reader(secret_keys: Sequence[bytes], codec: str) -> bytes:
    """How a deliverer reads frames, in a few bytes a reliable progress cursor can carry: its
    key ids, or whether it unpickles without a key. A successor resuming from that cursor
    tells with :func:`held_by` which frames its predecessor left queued."""
    if secret_keys:
        return b"k" + ".".join(frames.key_ids(secret_keys)).encode()
    return b"u" if codec == "pickle" else b"j"


def held_by(reader_: bytes, value: bytes, frame: frames.Frame) -> bool:
    """Whether a deliverer reading as ``reader_`` (see :func:`reader`) held ``frame`` (one of
    ``value``'s)."""
    if reader_[:1] == b"k":
        kid = frames.key_id_in(value, frame)
        return not kid or kid not in reader_[1:].decode("ascii", "replace").split(".")
    return reader_ == b"j" and not frame.flags & frames.FLAG_JSON


def tally(held: Sequence[frames.Held]) -> Counter[str]:
    """How many held frames there are of each kind: by key id (hex), ``unsigned`` or
    ``pickled``."""
    return Counter(item.key_id or item.why for item in held)


def advice(name: str, kinds: Mapping[str, int], secret_keys: Sequence[bytes]) -> list[str]:
    """What the log and ``health()`` say of a signal's held frames (``kinds``: see
    :func:`tally`), one sentence per kind."""
    holds = ", ".join(frames.key_ids(secret_keys)) or "no key"
    check = "check GAESIGNALS_SECRET_KEY on senders and deliverers"
    said = []
    for kind, count in sorted(kinds.items()):
        if kind == frames.HELD_UNSIGNED:
            said.append(
                f"{count} unsigned payload(s) of {name!r} wait; this process holds "
                f"{holds} and reads only signed ones: {check}"
            )
        elif kind == frames.HELD_PICKLED:
            said.append(
                f"{count} pickled payload(s) of {name!r} wait; this process's codec is json "
                "and no secret key verifies them: a deliverer with codec pickle reads them "
                "(check GAESIGNALS_CODEC), or set GAESIGNALS_SECRET_KEY everywhere"
            )
        else:
            said.append(
                f"{count} payload(s) of {name!r} signed with key id {kind} wait; this "
                f"process holds {holds}: {check}"
            )
    return said
