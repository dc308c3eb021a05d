"""Cancelling a pending payload: one append of a cancel frame beside it.

A send tells where its payload went (:class:`Placed`); its id (:func:`payload_id`) is that,
as opaque text a user may keep anywhere. :func:`cancel` appends a cancellation frame
(:func:`gaesignals.frames.cancel_frame`) to the shard the id names: one round trip, no read,
and the cancellation is as durable as the payload (it lives in the same key, signed like it).
A take that reads both drops the payload, counted ``cancelled``, and the cancellation with
it; matching runs across every shard of the signal, so a payload moved to another shard by a
full or contended one is still found.

Whether the payload was already delivered cannot be known without a read: a cancellation of a
payload no longer pending is dropped by the next take of its key and counts nothing (nor does
one of a payload still waiting on a delay: it stays queued with it until both are read due).
A cancellation never touches dead letters.
"""

from __future__ import annotations

import re
from enum import Enum
from typing import NamedTuple

from .. import frames
from ..config import Settings
from ..exceptions import InvalidPayloadId
from ..keys import shard_queues, signal_keys
from .append import append_frames

#: The highest shard index an id may name (keys hold two shard digits).
MAX_SHARD_INDEX = 99
_ID = re.compile(r"([0-9a-f]{16})\.([0-9]{1,2})")


class Placed(NamedTuple):
    """Where a send put its payload: the frame's id and the index of its shard key (0: the
    signal's own queue key)."""

    ident: bytes
    key_index: int

    @property
    def id(self) -> str:
        """The payload id users see (see :func:`payload_id`)."""
        return payload_id(self)


class CancelResult(Enum):
    """What a cancel did."""

    #: The cancellation is stored beside the payload: if it is still pending, no handler gets
    #: it. (Whether it was already delivered cannot be told without a read.)
    CANCELLED = "cancelled"
    #: Known delivered: an eager send ran its handlers at once; nothing was written.
    DELIVERED = "delivered"


def payload_id(placed: Placed) -> str:
    """The text naming ``placed``: the frame id in hex, a dot, the shard index."""
    return f"{placed.ident.hex()}.{placed.key_index}"


def placed_of(raw_frame: bytes, key: str, queues: tuple[str, ...]) -> Placed:
    """Where ``raw_frame`` (a frame :func:`gaesignals.frames.encode` made) went when appended
    to ``key``, one of ``queues`` (empty: the signal's own key)."""
    index = queues.index(key) if key in queues else 0
    return Placed(frames.ident_of(raw_frame), index)


def parse_payload_id(text: object) -> Placed:
    """The :class:`Placed` that ``text`` names; :class:`~gaesignals.InvalidPayloadId` when it
    is not a payload id."""
    if not isinstance(text, str):
        raise InvalidPayloadId(f"a payload id is a str, not {type(text).__name__}", text)
    match = _ID.fullmatch(text)
    if match is None:
        raise InvalidPayloadId(f"{text[:40]!r} is not a payload id a send returned", text)
    return Placed(bytes.fromhex(match[1]), int(match[2]))


def cancel(settings: Settings, name: str, text: object) -> CancelResult:
    """Cancel the payload ``text`` (a :func:`payload_id`) of signal ``name``: one append."""
    placed = parse_payload_id(text)
    keys = signal_keys(name, settings.namespace)
    queues = shard_queues(keys.queue, placed.key_index + 1)
    key = queues[placed.key_index]
    frame = frames.cancel_frame(placed.ident, keys.queue.encode(), settings.secret_keys)
    with settings.store.connection() as conn:
        append_frames(conn, settings.store, {key: frame}, {key: queues})
    return CancelResult.CANCELLED
