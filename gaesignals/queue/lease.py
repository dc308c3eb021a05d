"""Reliable delivery's per-signal locks: taken with a lease, renewed, released by their owner.

A released lock is an empty value, a held one its owner's random token. The lease runs on the
cache server's clock (the key's expiry); the local clock only decides when to renew.
"""

from __future__ import annotations

import time

from ..stores import Connection


def lock_expiry(lease: int) -> int:
    """How long a lock lives: twice the lease, plus the second memcached's whole-tick expiry
    may shave off. A holder renews at the first payload boundary past half its lease, so any
    handler shorter than the lease finishes under a lock that is still its own."""
    return 2 * lease + 1


def acquire(conn: Connection, locks: list[str], owner: bytes, lease: int) -> set[str]:
    """Take every lock that is free; a released lock is an empty value, a held one its owner."""
    expire = lock_expiry(lease)
    added = conn.add_many(dict.fromkeys(locks, owner), expire=expire)
    held = {key for key, ok in added.items() if ok}
    rest = [key for key in locks if not added[key]]
    if rest:
        current = conn.gets_many(rest)
        free = {k: (owner, current[k][1]) for k in rest if k in current and not current[k][0]}
        if free:
            held.update(k for k, ok in conn.cas_many(free, expire=expire).items() if ok)
        gone = [k for k in rest if k not in current]
        if gone:
            held.update(
                k
                for k, ok in conn.add_many(dict.fromkeys(gone, owner), expire=expire).items()
                if ok
            )
    return held


def release(conn: Connection, locks: list[str], owner: bytes, lease: int) -> None:
    """Release only the locks this owner still holds: a lock whose lease ran out and was taken
    by another deliverer is left alone (compare-and-set, never a blind delete)."""
    rewrite_if_owner(conn, locks, owner, b"", lease)


def rewrite_if_owner(
    conn: Connection, locks: list[str], owner: bytes, value: bytes, lease: int
) -> set[str]:
    """Set the locks ``owner`` still holds to ``value`` with a fresh lease; returns those set."""
    current = conn.gets_many(locks)
    ours = {k: (value, current[k][1]) for k in locks if k in current and current[k][0] == owner}
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
        self.renew_at = time.monotonic() + lease / 2

    def still_holds(self, lock: str) -> bool:
        if time.monotonic() >= self.renew_at and self.held:
            locks = sorted(self.held)
            self.held = rewrite_if_owner(self.conn, locks, self.owner, self.owner, self.lease)
            self.renew_at = time.monotonic() + self.lease / 2
        return lock in self.held
