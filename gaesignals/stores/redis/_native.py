"""Redis's native queue operations (:class:`~gaesignals.stores.NativeQueue`).

A weak take is one script per server (on a cluster, per hash slot: a signal's keys share one,
``{name}``), all in one pipeline per server: every signal of a delivery in one round trip, with
no compare-and-set at all, since the script reads and empties each queue atomically and counts
what it took into the signal's counters in the same step. A reliable acknowledgement compares
only the head it replaces (its length and SHA-1), not the whole queue.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

from ...exceptions import PartialFailure, StoreUnavailable
from .. import TakeGroup, Taken
from ._router import Command, Router
from ._scripts import ACKNOWLEDGE, TAKE, script


class RedisQueue:
    """The weak take and the reliable acknowledgement, each a script."""

    def __init__(self, router: Router) -> None:
        self.router = router

    def take_many(self, groups: Sequence[TakeGroup], now: int = 0) -> Taken:
        batches = self._batches([group for group in groups if group.queues])
        commands = [_take(batch, now) for batch in batches]
        failure: StoreUnavailable | None = None
        try:
            answers = self.router.execute(commands)
            replies = dict(zip((key for key, _ in commands), answers, strict=True))
        except PartialFailure as error:
            if not error.results and commands:
                raise StoreUnavailable(str(error)) from error
            failure, replies = error, dict(error.results)
        walked: dict[str, int] = {}
        cut: dict[str, int] = {}
        taken = Taken({}, {}, {}, failure, walked, cut)
        for (key, _), batch in zip(commands, batches, strict=True):
            if key in replies:
                _note(batch, replies[key], taken)
        return taken

    def _batches(self, groups: list[TakeGroup]) -> list[list[TakeGroup]]:
        """The groups one script may take together: all of them on one server, those of one
        hash slot on a cluster (a script's keys must share a slot there)."""
        if not self.router.clustered:
            return [groups] if groups else []
        by_slot: dict[int, list[TakeGroup]] = {}
        for group in groups:
            by_slot.setdefault(self.router.client.keyslot(group.queues[0]), []).append(group)
        return list(by_slot.values())

    def acknowledge(self, key: str, taken: bytes, keep: bytes) -> bool:
        head = hashlib.sha1(taken).hexdigest()
        command = (key, script(ACKNOWLEDGE, (key,), len(taken), head, keep))
        try:
            return bool(self.router.execute([command])[0])
        except PartialFailure as error:  # one command: nothing else ran
            raise StoreUnavailable(str(error)) from error


def _take(batch: list[TakeGroup], now: int) -> Command:
    keys: list[str] = []
    layout: list[object] = [len(batch), now]
    for group in batch:
        counters = group.counters or ()
        keys += [*group.read, *group.queues, *counters]
        layout += [len(group.read), len(group.queues), "1" if counters else "0", group.marker]
        layout += [group.limit, group.first]
    return (batch[0].queues[0], script(TAKE, tuple(keys), *layout))


def _note(batch: list[TakeGroup], reply: list[object], taken: Taken) -> None:
    """Add a script's reply (per group: reads, queue values, frame counts; then, for each queue
    whose walk stopped early, its index in the script's keys, negative if cut at the group's
    limit, and how far it got) to ``taken``."""
    at = 0
    for group in batch:
        nread, nqueue = len(group.read), len(group.queues)
        for key, value in zip(group.read, reply[at : at + nread], strict=True):
            if isinstance(value, bytes):
                taken.read[key] = value
        values = reply[at + nread : at + nread + nqueue]
        counts = reply[at + nread + nqueue : at + nread + 2 * nqueue]
        for key, value, count in zip(group.queues, values, counts, strict=True):
            if isinstance(value, bytes) and value:
                taken.values[key] = value
                taken.counted[key] = int(count) if isinstance(count, int) else 0
        at += nread + 2 * nqueue
    trailer = reply[at:]
    if not trailer:
        return  # every walk reached its queue's end
    keys = [key for group in batch for key in (*group.read, *group.queues, *(group.counters or ()))]
    walked, cut = taken.walked, taken.cut
    assert walked is not None and cut is not None
    for index, got in zip(trailer[::2], trailer[1::2], strict=False):
        if isinstance(index, int) and isinstance(got, int) and 0 < abs(index) <= len(keys):
            (walked if index > 0 else cut)[keys[abs(index) - 1]] = got
