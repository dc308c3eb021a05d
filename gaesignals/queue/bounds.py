"""Bounded weak takes: how many payloads each signal may still give, and where each starts.

A take with a limit (``deliver(mapping, limit=N)``) takes at most N payloads of each signal,
the oldest of each key first, and leaves the rest queued. A signal on several shards is read
from a shard chosen at random for each take, then round the others in order: deliverers that
share a backlog then start on different keys instead of all contending on the first.
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Mapping, Sequence

from ..frames import layout
from ..stores import home_key, is_stranded

#: Draws each signal's first shard: one generator per process, seeded by the OS.
_draw = random.Random()

_HEADER = layout.HEADER
_MAGIC, _VERSION = layout.MAGIC, layout.VERSION
_UNKNOWN_FLAGS = ~layout.KNOWN_FLAGS & 0xFF
_SIGNED_HEAD = layout.HEADER_SIZE + layout.KEY_ID_SIZE + layout.TAG_SIZE
_TAIL = layout.SEAL_SIZE


def head_of(value: bytes, quota: int) -> int:
    """Where in ``value`` its payload frame after the first ``quota`` starts: what a bounded
    take needs to read of it, found by walking frame headers only (a backlog is not parsed
    whole to take a part). A frame with metadata (it may not be due) or a spread marker is not
    counted; ``len(value)`` when there are no more, or at bytes that are not a frame's header
    (then the whole value is parsed, and the take cuts it after)."""
    at, size, count = 0, len(value), 0
    unpack = _HEADER.unpack_from
    while at + layout.HEADER_SIZE <= size:
        magic, version, flags, _, meta, body, _ = unpack(value, at)
        if magic != _MAGIC or version != _VERSION or flags & _UNKNOWN_FLAGS:
            return size
        head = _SIGNED_HEAD if flags & layout.FLAG_SIGNED else layout.HEADER_SIZE
        end = at + head + meta + body + _TAIL
        if end > size:
            return size
        if not meta and not flags & layout.FLAG_SPREAD:
            if count == quota:
                return at
            count += 1
        at = end
    return size


def frames_from(value: bytes, start: int) -> int | None:
    """How many payload frames ``value`` holds from offset ``start`` on, by their headers
    alone (what a lost check counts as queued past a bounded take's part); None at bytes that
    are not a frame's header (then the caller parses them)."""
    at, size, count = start, len(value), 0
    unpack = _HEADER.unpack_from
    while at + layout.HEADER_SIZE <= size:
        magic, version, flags, _, meta, body, _ = unpack(value, at)
        if magic != _MAGIC or version != _VERSION or flags & _UNKNOWN_FLAGS:
            return None
        head = _SIGNED_HEAD if flags & layout.FLAG_SIGNED else layout.HEADER_SIZE
        at += head + meta + body + _TAIL
        if not flags & layout.FLAG_SPREAD:
            count += 1
    return count if at == size else None


class Quotas:
    """What is left of each signal's limit in one take, and the shard order it takes in."""

    __slots__ = ("first", "left", "rank")

    def __init__(self, limits: Mapping[str, int], shards: Mapping[str, Sequence[str]]) -> None:
        #: How many payloads each signal may still give.
        self.left = dict(limits)
        #: Each signal's first shard (an index into its queue keys).
        self.first: dict[str, int] = {}
        #: Each queue key's place in the order this take takes its signal's keys in.
        self.rank: dict[str, int] = {}
        for name in limits:
            queues = shards[name]
            width = len(queues)
            first = self.first[name] = _draw.randrange(width) if width > 1 else 0
            for index, key in enumerate(queues):
                self.rank[key] = (index - first) % width

    def allot(self, found: Mapping[str, tuple[str, int]]) -> dict[str, int]:
        """How many of its payloads each key may give (``found``: each key's signal and how
        many due payloads it holds), spending each signal's quota in take order (a copy
        stranded on another server before its home copy, being older). Keys left out may give
        all; what is allotted is not spent until :meth:`spend`."""
        rank = self.rank
        left = dict(self.left)
        allotted: dict[str, int] = {}
        for key in sorted(found, key=lambda k: (rank.get(home_key(k), 0), not is_stranded(k))):
            name, count = found[key]
            quota = left.get(name)
            if quota is None:
                continue
            if count > quota:
                allotted[key] = quota
            left[name] = max(quota - count, 0)
        return allotted

    def spend(self, taken: Iterable[tuple[str, int]]) -> None:
        """Take what was taken (each a signal and a count) off the signals' quotas."""
        left = self.left
        for name, count in taken:
            if name in left:
                left[name] = max(left[name] - count, 0)
