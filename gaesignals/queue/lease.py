"""Reliable delivery's locks, one per shard of a signal: taken with a lease, renewed, released
by their owner.

A reliable deliverer works on the shards whose locks it holds, so several deliverers share one
signal's backlog, each on shards of its own; a signal on one key has one lock, as before.

A released lock is an empty value; a held one is ``<owner>:<lease>:<written>:<write>``: its
owner's random token, the lease it was taken with, the Unix second its writer wrote it, and a
count that makes every renewal a new value. The lease runs on the cache server's clock (the
key's expiry); the local clock decides when to renew.

Anyone who can write the cache can write a lock, in our format too, with any lease and any
expiry, so a lock is honoured no longer than its signal allows: with its stated lease cut to
the signal's declared one (or the lease this deliverer runs with, if longer), it is taken over
once it is older than that lease lets a lock live (:func:`lock_expiry`). Its age is read from
its timestamp, allowing :data:`CLOCK_SKEW` between the writer's clock and ours, so a fresh
process (a cron run, the command line) takes it over as surely as a long-lived one; a process
that sees a value unchanged for that long on its own monotonic clock needs no allowance. A
value not in our format, or dated in the future, is taken over at once. A live holder renews
well within its lease (at the first payload boundary past half of it), so it is never taken
over while its handlers stay shorter than the lease.
"""

from __future__ import annotations

import enum
import itertools
import logging
import re
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from .. import frames
from ..stores import Cached, Connection

logger = logging.getLogger("gaesignals")

#: The longest lease a deliverer may hold, in seconds (14 days): its lock lives twice as long,
#: and memcached and App Engine read an expiry past 30 days as an absolute Unix time.
MAX_LEASE = 14 * 24 * 3600
#: How far two hosts' clocks may disagree, in seconds, before a live lock reads as too old.
CLOCK_SKEW = 60
#: Our lock values: 32 hex digits of owner token, the lease, the Unix second, a write count.
_LOCK_VALUE = re.compile(rb"([0-9a-f]{32}):([0-9]{1,7}):([0-9]{1,12}):([0-9]{1,20})")
#: Held lock values of others seen by this process: key -> (value, first seen).
_sightings: dict[str, tuple[bytes, float]] = {}
_SIGHTINGS_MAX = 4096
_writes = itertools.count()


class LockState(enum.StrEnum):
    """What a signal's lock is, as reports show it (for a signal on several shards, the most
    notable of its shards' locks: see :func:`most_notable`)."""

    #: Nobody holds it.
    FREE = "free"
    #: A deliverer holds it, within its signal's lease.
    HELD = "held"
    #: Held, claiming a longer lease than its signal declares: honoured only for the declared.
    OVERLONG = "overlong"
    #: Not a lock of ours, or held past its lease: the next reliable delivery takes it over.
    FOREIGN = "foreign"


@dataclass(frozen=True, slots=True)
class LockValue:
    """A held lock's value, parsed: its owner's token, its lease, and when it was written
    (Unix seconds, on its writer's clock)."""

    owner: bytes
    lease: int
    written: int

    @classmethod
    def parse(cls, value: bytes) -> LockValue | None:
        """The lock ``value`` holds, or None if it is not one we write."""
        match = _LOCK_VALUE.fullmatch(value)
        if match is None or int(match[2]) > MAX_LEASE:
            return None
        return cls(match[1], int(match[2]), int(match[3]))


def _clock() -> float:
    """Monotonic seconds: when to renew, how long a lock value has been seen (a test seam).
    A lock's timestamp is read from :data:`gaesignals.frames.clock`, the library's wall clock."""
    return time.monotonic()


def lock_expiry(lease: int) -> int:
    """How long a lock lives: twice the lease, plus the second memcached's whole-tick expiry
    may shave off. A holder renews at the first payload boundary past half its lease, so any
    handler shorter than the lease finishes under a lock that is still its own."""
    return 2 * lease + 1


def lock_value(owner: bytes, lease: int) -> bytes:
    """What a holder writes: its token, its lease, the time, and a count that changes on every
    write."""
    return b"%s:%d:%d:%d" % (owner, lease, int(frames.clock()), next(_writes))


def lock_state(key: str, value: bytes | None, honoured: int) -> LockState:
    """What the lock ``key`` holding ``value`` is, for a signal whose lease is ``honoured``
    seconds: free, held, held claiming a longer lease (overlong), or foreign (see the module
    docstring)."""
    if not value:
        return LockState.FREE
    lock = LockValue.parse(value)
    if lock is None:
        return LockState.FOREIGN
    lives = lock_expiry(min(lock.lease, honoured))
    age = frames.clock() - lock.written
    if age > lives + CLOCK_SKEW or age < -CLOCK_SKEW or _seen_for(key, value) > lives + 1:
        return LockState.FOREIGN
    return LockState.OVERLONG if lock.lease > honoured else LockState.HELD


#: Which lock state a report shows for a signal whose shards' locks differ: a problem first.
_NOTABLE = (LockState.FOREIGN, LockState.OVERLONG, LockState.HELD, LockState.FREE)


def most_notable(states: Iterable[LockState]) -> LockState:
    """The state a report shows for a signal whose shards' locks are in ``states``: foreign or
    overlong if any is (a problem to report), else held if any is, else free."""
    found = set(states)
    return next((state for state in _NOTABLE if state in found), LockState.FREE)


def is_foreign(key: str, value: bytes, honoured: int) -> bool:
    """Whether a held lock's value is one no live deliverer of ours holds (see
    :func:`lock_state`)."""
    return lock_state(key, value, honoured) is LockState.FOREIGN


def _seen_for(key: str, value: bytes) -> float:
    """How long this process has seen ``key`` hold ``value``, unchanged (0 at first sight)."""
    now = _clock()
    seen = _sightings.get(key)
    if seen is None or seen[0] != value:
        if len(_sightings) >= _SIGHTINGS_MAX:
            _sightings.clear()
        _sightings[key] = (value, now)
        return 0.0
    return now - seen[1]


def _owner_of(value: bytes) -> bytes:
    return value.partition(b":")[0]


def acquire(
    conn: Connection,
    locks: list[str],
    owner: bytes,
    lease: int,
    declared: Mapping[str, int] | None = None,
) -> set[str]:
    """Take every lock that is free or foreign (see the module docstring). A lock is honoured
    for the longer of ``lease`` and its signal's ``declared`` lease (by lock key)."""
    expire = lock_expiry(lease)
    mine = lock_value(owner, lease)
    added = conn.add_many(dict.fromkeys(locks, mine), expire=expire)
    held = {key for key, ok in added.items() if ok}
    rest = [key for key in locks if not added[key]]
    if rest:
        honoured = {k: max(lease, (declared or {}).get(k, lease)) for k in rest}
        current = conn.gets_many(rest)
        free = {
            k: Cached(mine, current[k].token)
            for k in rest
            if k in current and _takeable(k, current[k].value, honoured[k])
        }
        if free:
            held.update(k for k, ok in conn.cas_many(free, expire=expire).items() if ok)
        gone = [k for k in rest if k not in current]
        if gone:
            held.update(
                k for k, ok in conn.add_many(dict.fromkeys(gone, mine), expire=expire).items() if ok
            )
    return held


def _takeable(key: str, value: bytes, honoured: int) -> bool:
    """Whether a lock that exists may be taken: released, or foreign (said in the log)."""
    if not value:
        return True
    if not is_foreign(key, value, honoured):
        return False
    logger.warning(
        "lock %r holds %d byte(s) no live deliverer wrote (not a lock of ours, or "
        "kept past the %d s lease its signal allows); taken over",
        key,
        len(value),
        honoured,
    )
    return True


def release(conn: Connection, locks: list[str], owner: bytes, lease: int) -> None:
    """Release only the locks this owner still holds: a lock whose lease ran out and was taken
    by another deliverer is left alone (compare-and-set, never a blind delete)."""
    rewrite_if_owner(conn, locks, owner, b"", lease)


def renew(conn: Connection, locks: list[str], owner: bytes, lease: int) -> set[str]:
    """Give the locks ``owner`` still holds a fresh lease; returns those renewed."""
    return rewrite_if_owner(conn, locks, owner, lock_value(owner, lease), lease)


def rewrite_if_owner(
    conn: Connection, locks: list[str], owner: bytes, value: bytes, lease: int
) -> set[str]:
    """Set the locks ``owner`` still holds to ``value`` with a fresh lease; returns those set."""
    if not locks:
        return set()
    current = conn.gets_many(locks)
    ours = {
        k: Cached(value, current[k].token)
        for k in locks
        if k in current and current[k].value and _owner_of(current[k].value) == owner
    }
    if not ours:
        return set()
    return {k for k, ok in conn.cas_many(ours, expire=lock_expiry(lease)).items() if ok}


class Holder:
    """The locks one reliable delivery holds, renewed between payloads once half the lease is
    gone, so a long backlog of quick handlers never outlives its lease. The lease itself runs
    on the cache server's clock; the local clock only decides when to renew."""

    def __init__(self, conn: Connection, owner: bytes, lease: int, held: set[str]) -> None:
        self.conn = conn
        self.owner = owner
        self.lease = lease
        self.held = set(held)
        self.renew_at = _clock() + lease / 2

    def let_go(self, locks: Iterable[str]) -> None:
        """Release ``locks`` before the delivery ends: shards it read and will not work on,
        left to other deliverers at once."""
        early = sorted(self.held.intersection(locks))
        if early:
            self.held.difference_update(early)
            release(self.conn, early, self.owner, self.lease)

    def still_holds(self, lock: str) -> bool:
        if _clock() >= self.renew_at and self.held:
            locks = sorted(self.held)
            self.held = renew(self.conn, locks, self.owner, self.lease)
            self.renew_at = _clock() + self.lease / 2
        return lock in self.held
