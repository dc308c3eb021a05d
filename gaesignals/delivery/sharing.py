"""How reliable deliverers share a signal's backlog: a bound per signal, the shards kept.

Each shard of a signal has its own lock (:func:`~gaesignals.keys.shard_keys`). A deliverer
takes the locks it can get, reads those shards, and keeps only the ones it will work on: from a
random shard on, those holding payloads, until they hold as many as its ``limit`` lets it
handle (all of them with no limit). It lets go at once of those holding payloads past that,
for other deliverers.

A bounded deliverer whose shard 0 (where an undeclared signal's senders start) holds at least
another delivery's worth beyond what it will handle moves that excess to the signal's other
shards, widening the signal as a hot signal widens, before it runs a handler: then a backlog on
one key becomes work for as many deliverers as it has shards. Only shard 0 gives: a payload is
moved at most once. Order: per shard key, the order payloads reached it (a moved run keeps its
send order); across shards, none.
"""

from __future__ import annotations

import os
import random
from collections import Counter
from collections.abc import Collection, Mapping, Sequence

from .. import frames
from ..keys import Shard

#: Where each delivery starts among a signal's shards: only needs to differ between deliverers.
_rng = random.Random()
os.register_at_fork(after_in_child=_rng.seed)  # forked deliverers start apart too


class Budget:
    """How many payloads of each signal one delivery may still handle: ``limit`` each, or no
    bound (None)."""

    def __init__(self, limit: int | None) -> None:
        self.limit = limit
        self.spent: Counter[str] = Counter()

    def left(self, name: str) -> int | None:
        """How many more payloads of ``name`` this delivery may handle (None: no bound)."""
        return None if self.limit is None else max(0, self.limit - self.spent[name])

    def spend(self, name: str) -> None:
        """Note that a payload of ``name`` was handled (run, or dead-lettered unrun)."""
        self.spent[name] += 1


def rotated(shards: Sequence[Shard]) -> list[Shard]:
    """``shards`` from a random one on: deliverers holding several shards of one signal each
    start on a different one."""
    start = _rng.randrange(len(shards)) if shards else 0
    return [*shards[start:], *shards[:start]]


def kept_shards(order: Sequence[Shard], sizes: Mapping[str, int], left: int | None) -> list[Shard]:
    """The shards of ``order`` a delivery works on: those holding payloads (``sizes``, by queue
    key), in order, until they hold ``left`` (every one when None)."""
    kept: list[Shard] = []
    total = 0
    for shard in order:
        if left is not None and total >= left:
            break
        if sizes.get(shard.queue, 0):
            kept.append(shard)
            total += sizes[shard.queue]
    return kept


def runnable(found: Sequence[frames.Frame], held: Collection[int], now: int) -> list[int]:
    """The indexes of the frames of ``found`` a delivery at ``now`` (Unix ms) would run: not
    held for another deliverer (by start), and due."""
    return [
        i
        for i, frame in enumerate(found)
        if frame.start not in held and not (frame.meta and frames.not_before(frame) > now)
    ]


def width_for(payloads: int, limit: int, known: int) -> int:
    """How many shards a backlog of ``payloads`` wants so that each holds about ``limit``: the
    ladder's rung (1, 2, 4, ...) that reaches it, never less than ``known``, at most
    :data:`~gaesignals.frames.MAX_SPREAD`."""
    wanted = 1
    while wanted * limit < payloads and wanted < frames.MAX_SPREAD:
        wanted *= 2
    return max(known, wanted)


def split(moved: Sequence[frames.Frame], targets: Sequence[str]) -> dict[str, list[frames.Frame]]:
    """``moved`` cut in consecutive runs, one per target key, as even as can be: each target
    receives its run in send order."""
    runs: dict[str, list[frames.Frame]] = {}
    share, extra = divmod(len(moved), len(targets))
    at = 0
    for index, key in enumerate(targets):
        size = share + (index < extra)
        if size:
            runs[key] = list(moved[at : at + size])
        at += size
    return runs


def cut_out(value: bytes, gone: Sequence[frames.Frame]) -> bytes:
    """``value`` without the bytes of the frames ``gone`` (in order), everything else kept."""
    parts = []
    at = 0
    for frame in gone:
        parts.append(value[at : frame.start])
        at = frame.end
    parts.append(value[at:])
    return b"".join(parts)
