"""Reliable delivery's per-signal locks: taken with a lease, renewed, released by their owner.

A released lock is an empty value; a held one is ``<owner>:<lease>:<write>``: its owner's random
token, the lease it was taken with, and a count that makes every renewal a new value. The lease
runs on the cache server's clock (the key's expiry); the local clock only decides when to renew,
and tells a foreign lock from ours. Every lock we write expires within
:func:`lock_expiry` of being written, and every renewal changes it; so a held value not in our
format, or one this process sees unchanged for longer than its lease allows (planted with no
expiry, or a longer one), was written by someone else. It is taken over with a warning instead
of halting the signal for ever. Elapsed time on one host's monotonic clock matches the cache
server's, whatever the offset between their clocks.
"""

from __future__ import annotations

import itertools
import logging
import re
import time

from ..stores import Connection

logger = logging.getLogger("gaesignals")

#: The longest lease a deliverer may hold, in seconds (14 days): its lock lives twice as long,
#: and memcached and App Engine read an expiry past 30 days as an absolute Unix time.
MAX_LEASE = 14 * 24 * 3600
#: Our lock values: 32 hex digits of owner token, the lease in seconds, a write count.
_LOCK_VALUE = re.compile(rb"([0-9a-f]{32}):([0-9]{1,7}):([0-9]{1,20})")
#: Held lock values of others seen by this process: key -> (value, lease, first seen).
_sightings: dict[str, tuple[bytes, int, float]] = {}
_SIGHTINGS_MAX = 4096
_writes = itertools.count()


def _clock() -> float:
    """Monotonic seconds: when to renew, how long a lock value has been seen (a test seam)."""
    return time.monotonic()


def lock_expiry(lease: int) -> int:
    """How long a lock lives: twice the lease, plus the second memcached's whole-tick expiry
    may shave off. A holder renews at the first payload boundary past half its lease, so any
    handler shorter than the lease finishes under a lock that is still its own."""
    return 2 * lease + 1


def lock_value(owner: bytes, lease: int) -> bytes:
    """What a holder writes: its token, its lease, and a count that changes on every write."""
    return b"%s:%d:%d" % (owner, lease, next(_writes))


def is_foreign(key: str, value: bytes) -> bool:
    """Whether a held lock's value is one no live deliverer of ours holds: not in our format,
    or seen by this process, unchanged, for longer than the cache should have kept it."""
    match = _LOCK_VALUE.fullmatch(value)
    if match is None or int(match[2]) > MAX_LEASE:
        return True
    now = _clock()
    seen = _sightings.get(key)
    if seen is None or seen[0] != value:
        if len(_sightings) >= _SIGHTINGS_MAX:
            _sightings.clear()
        _sightings[key] = (value, int(match[2]), now)
        return False
    return now - seen[2] > lock_expiry(seen[1]) + 1


def lock_state(key: str, item: tuple[bytes, object] | None) -> str:
    """``free``, ``held`` or ``foreign`` (see :func:`is_foreign`), for reports."""
    if item is None or not item[0]:
        return "free"
    return "foreign" if is_foreign(key, item[0]) else "held"


def _owner_of(value: bytes) -> bytes:
    return value.partition(b":")[0]


def acquire(conn: Connection, locks: list[str], owner: bytes, lease: int) -> set[str]:
    """Take every lock that is free or foreign (see the module docstring)."""
    expire = lock_expiry(lease)
    mine = lock_value(owner, lease)
    added = conn.add_many(dict.fromkeys(locks, mine), expire=expire)
    held = {key for key, ok in added.items() if ok}
    rest = [key for key in locks if not added[key]]
    if rest:
        current = conn.gets_many(rest)
        free = {
            k: (mine, current[k][1]) for k in rest if k in current and _takeable(k, current[k][0])
        }
        if free:
            held.update(k for k, ok in conn.cas_many(free, expire=expire).items() if ok)
        gone = [k for k in rest if k not in current]
        if gone:
            held.update(
                k for k, ok in conn.add_many(dict.fromkeys(gone, mine), expire=expire).items() if ok
            )
    return held


def _takeable(key: str, value: bytes) -> bool:
    """Whether a lock that exists may be taken: released, or foreign (said in the log)."""
    if not value:
        return True
    if not is_foreign(key, value):
        return False
    logger.warning(
        "lock %r holds %d byte(s) no live deliverer wrote (not a lock of ours, or "
        "kept past its lease); taken over",
        key,
        len(value),
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
    current = conn.gets_many(locks)
    ours = {
        k: (value, current[k][1])
        for k in locks
        if k in current and current[k][0] and _owner_of(current[k][0]) == owner
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

    def still_holds(self, lock: str) -> bool:
        if _clock() >= self.renew_at and self.held:
            locks = sorted(self.held)
            self.held = renew(self.conn, locks, self.owner, self.lease)
            self.renew_at = _clock() + self.lease / 2
        return lock in self.held
