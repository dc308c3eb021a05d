"""Cancellations, coalescing and debounce in reliable delivery (see :mod:`..queue.collapse`).

A reliable delivery reads every shard of a locked signal, then runs shard by shard; this
module decides up front, across the signal's shards, which payloads no handler gets
(cancelled or coalesced: removed as done, without running), which due ones stay queued (a
debounced run not due yet) and which payloads waiting for a retry a newer one superseded
(removed, counted coalesced). Only signals whose shards hold a cancellation or a payload with
metadata are looked at.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from typing import NamedTuple

from .. import frames
from ..queue.collapse import collapse
from .outcomes import Outcome


class ShardSettled(NamedTuple):
    """What one shard's run does besides running its payloads (frames named by start)."""

    #: Payloads removed without running, and why (coalesced or cancelled): due ones, and
    #: those of :attr:`retired`.
    skip: dict[int, Outcome]
    #: Due payloads that stay queued as they are (a debounced run not due yet).
    stay: frozenset[int]
    #: Payloads waiting for a retry that a newer one superseded: removed, counted coalesced.
    retired: frozenset[int]
    #: The cancellations read in this shard, and the shard of each payload they name (the
    #: payloads read anywhere in the signal), to tell which must stay.
    cancels: Sequence[frames.Frame]
    targets: Mapping[bytes, tuple[str, int]]

    def kept_cancels(self, value: bytes, key: str, cut: int) -> bytes:
        """The cancellations before ``cut`` that stay: those whose payload was read and is not
        removed with them (it waits, lies past the cut, or is in another shard)."""
        kept = []
        for cancel in self.cancels:
            target = self.targets.get(cancel.body)
            if cancel.end > cut or target is None:
                continue  # past the cut it stays anyway; its payload gone, it goes too
            where, start = target
            if where != key or start not in self.skip or start >= cut:
                kept.append(value[cancel.start : cancel.end])
        return b"".join(kept)


#: A shard that holds nothing to settle.
NOTHING = ShardSettled({}, frozenset(), frozenset(), (), {})


def settle(
    found: Mapping[str, Sequence[frames.Frame]],
    cancels: Mapping[str, Sequence[frames.Frame]],
    held: Mapping[str, Collection[int]],
    now: int,
) -> dict[str, ShardSettled]:
    """Settle one signal's shards (``found``: each shard's frames, ``held`` the starts of
    those held for another deliverer, ``cancels`` its cancellations) at ``now`` (Unix ms)."""
    due: dict[str, list[frames.Frame]] = {}
    waiting: dict[str, list[frames.Frame]] = {}
    targets: dict[bytes, tuple[str, int]] = {}
    for key, shard in found.items():
        kept = held.get(key, ())
        due[key], waiting[key] = [], []
        for frame in shard:
            if frame.start in kept:
                continue
            later = frame.meta and frames.not_before(frame) > now
            (waiting if later else due)[key].append(frame)
            targets[frame.ident] = (key, frame.start)
    decided = collapse(due, waiting, cancels, now, retries=True)
    cancelled = {frame.body for shard in cancels.values() for frame in shard}
    settled = {}
    for key in found.keys() | cancels.keys():
        delivered = {frame.start for frame in decided.deliver.get(key, ())}
        stay = frozenset(
            frame.start
            for frame in decided.stay.get(key, ())
            if not frame.flags & frames.FLAG_CANCEL  # cancellations: see kept_cancels
        )
        skip = {
            frame.start: Outcome.CANCELLED if frame.ident in cancelled else Outcome.COALESCED
            for frame in due.get(key, ())
            if frame.start not in delivered and frame.start not in stay
        }
        retired = frozenset(frame.start for frame in decided.retired.get(key, ()))
        skip.update(dict.fromkeys(retired, Outcome.COALESCED))
        settled[key] = ShardSettled(skip, stay, retired, cancels.get(key, ()), targets)
    return settled
