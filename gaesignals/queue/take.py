"""Taking frames off a queue: reliable delivery's acknowledgement, generic or native.

Under a reliable deliverer's lock only senders' appends can change a queue, so removing what was
delivered means replacing the head it read by what stays, keeping whatever was appended since.
Over the memcache primitives that is a compare-and-set loop; a store with native queue
operations (:class:`~gaesignals.stores.NativeQueue`) does it in one call.
"""

from __future__ import annotations

import logging

from ..stores import Cached, Connection, Store, is_stranded

logger = logging.getLogger("gaesignals")

#: Rounds of CAS a reliable delivery makes to remove what it delivered.
ACK_ROUNDS = 32


def acknowledge(
    conn: Connection, store: Store, name: str, key: str, taken: bytes, token: object, keep: bytes
) -> bool:
    """Replace the bytes ``taken`` at the head of the key by ``keep``, keeping whatever senders
    appended meanwhile; False when the head changed (the lease ran out and another deliverer
    acknowledged: nothing is written) or the queue kept changing."""
    native = store.native
    if native is not None and not is_stranded(key):
        if native.acknowledge(key, taken, keep):
            return True
        _changed(name)
        return False
    return _acknowledge(conn, name, key, taken, token, keep)


def _changed(name: str) -> None:
    logger.warning(
        "signal %r changed under its lock (lease too short?); "
        "its delivered payloads may be delivered again",
        name,
    )


def _acknowledge(
    conn: Connection, name: str, key: str, taken: bytes, token: object, keep: bytes
) -> bool:
    """Replace the bytes ``taken`` at the head of the key by ``keep``, keeping whatever senders
    appended meanwhile. Only appends can happen under our lock, so the head is still ``taken``;
    if it is not (the lease ran out and another deliverer acknowledged), nothing is written."""
    tail = b""
    for _ in range(ACK_ROUNDS):
        if conn.cas_many({key: Cached(keep + tail, token)})[key]:
            return True
        current = conn.gets_many([key]).get(key)
        if current is None:
            if not keep or conn.add_many({key: keep})[key]:
                return True
            continue
        if not current.value.startswith(taken):
            _changed(name)
            return False
        tail, token = current.value[len(taken) :], current.token
    logger.warning(
        "could not acknowledge signal %r (its queue kept changing); the progress "
        "cursor marks what was done, so the next delivery resumes after it",
        name,
    )
    return False
