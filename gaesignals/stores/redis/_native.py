"""Redis's native queue operations (:class:`~gaesignals.stores.NativeQueue`).

A weak take is one script per signal (its keys share a hash slot, ``{name}``), all of them in
one pipeline per server: every signal of a delivery in one round trip, with no compare-and-set
at all, since the script reads and empties a queue atomically and counts what it took into the
signal's counters in the same step. A reliable acknowledgement compares only the head it
replaces (its length and SHA-1), not the whole queue.
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

    def take_many(self, groups: Sequence[TakeGroup]) -> Taken:
        commands = [_take(group) for group in groups if group.queues]
        failure: StoreUnavailable | None = None
        try:
            answers = self.router.execute(commands)
            replies = dict(zip((key for key, _ in commands), answers, strict=True))
        except PartialFailure as error:
            if not error.results and commands:
                raise StoreUnavailable(str(error)) from error
            failure, replies = error, dict(error.results)
        taken = Taken({}, {}, {}, failure)
        for group in groups:
            if group.queues and group.queues[0] in replies:
                _note(group, replies[group.queues[0]], taken)
        return taken

    def acknowledge(self, key: str, taken: bytes, keep: bytes) -> bool:
        head = hashlib.sha1(taken).hexdigest()
        command = (key, script(ACKNOWLEDGE, (key,), len(taken), head, keep))
        try:
            return bool(self.router.execute([command])[0])
        except PartialFailure as error:  # one command: nothing else ran
            raise StoreUnavailable(str(error)) from error


def _take(group: TakeGroup) -> Command:
    counters = group.counters or ()
    keys = (*group.read, *group.queues, *counters)
    counting = "1" if counters else "0"
    return (group.queues[0], script(TAKE, keys, len(group.read), len(group.queues), counting))


def _note(group: TakeGroup, reply: list[object], taken: Taken) -> None:
    """Add one group's script reply (reads, queue values, frame counts) to ``taken``."""
    nread, nqueue = len(group.read), len(group.queues)
    for key, value in zip(group.read, reply[:nread], strict=True):
        if isinstance(value, bytes):
            taken.read[key] = value
    values = reply[nread : nread + nqueue]
    counts = reply[nread + nqueue :]
    for key, value, count in zip(group.queues, values, counts, strict=True):
        if isinstance(value, bytes) and value:
            taken.values[key] = value
            taken.counted[key] = int(count) if isinstance(count, int) else 0
