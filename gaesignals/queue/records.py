"""Small records kept in the cache beside the queues: the dashboard's login sessions, Django
tasks' results. A record is written whole, read whole and deleted; what it holds and whether
to believe it is its owner's business. Each call is one unit of work on its own connection.
"""

from __future__ import annotations

from ..stores import Store


def keep(store: Store, key: str, value: bytes, seconds: int) -> bool:
    """Write the record at ``key`` (replacing what was there) for ``seconds`` (0: no expiry);
    whether the store kept it."""
    with store.connection() as conn:
        return all(conn.set_many({key: value}, expire=seconds).values())


def fetch(store: Store, key: str) -> bytes | None:
    """The record at ``key`` as stored, or None: never written, deleted, evicted or expired."""
    with store.connection() as conn:
        item = conn.gets_many([key]).get(key)
    return None if item is None else item.value


def forget(store: Store, key: str) -> None:
    """Delete the record at ``key``, present or not."""
    with store.connection() as conn:
        conn.delete_many([key])
