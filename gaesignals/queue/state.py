"""Reading a signal's keys without changing them: its queues, counters, lock and dead letters.

What :mod:`gaesignals.inspection` reports (``pending``, ``stats``, ``overview``, ``health``)
is read here, each batch in one round trip per server on the connection the report holds.
Nothing is taken, locked or written; whatever a key holds (planted, half-written, garbage) reads
as what it can be taken for: a counter that is not one as 0, a lock that is not ours as
``foreign``, unreadable dead letters as none.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import NamedTuple

from .. import frames
from ..accounting import number
from ..keys import SignalKeys, shard_keys, signal_keys
from ..stores import Cached, Connection
from .lease import LockState, lock_state, most_notable


def scan_queues(conn: Connection, keys: Sequence[str]) -> dict[str, bytes]:
    """The bytes each queue key of ``keys`` holds, if it exists; on a cluster also the copies
    stranded on servers other than a key's home, under names made by
    :func:`~gaesignals.stores.stranded_key`."""
    return {key: value for key, (value, _) in conn.scan_many(keys).items()}


def ping(conn: Connection, namespace: str) -> None:
    """One small read, for a report with no signal to read: raises
    :class:`~gaesignals.StoreUnavailable` when the store does not answer."""
    conn.gets_many([signal_keys("health", namespace).counter("sent")])


def _counts(
    current: Mapping[str, Cached], keys: SignalKeys, counters: Sequence[str]
) -> dict[str, int]:
    return {counter: number(current, keys.counter(counter)) or 0 for counter in counters}


def read_counters(
    conn: Connection, signals: Mapping[str, SignalKeys], counters: Sequence[str]
) -> dict[str, dict[str, int]]:
    """Each signal's ``counters``, in one batch; a counter missing, or holding something that
    is not a count, reads as 0."""
    current = conn.gets_many([k.counter(c) for k in signals.values() for c in counters])
    return {name: _counts(current, k, counters) for name, k in signals.items()}


class SignalState(NamedTuple):
    """A signal's counters (those asked for), its reliable-delivery lock (free, held,
    overlong or foreign: see :mod:`.lease`; of a signal on several shards, the most notable of
    its shards' locks) and how many dead letters it keeps that verify."""

    counters: dict[str, int]
    lock: LockState
    dead_letters: int


def read_states(
    conn: Connection,
    signals: Mapping[str, SignalKeys],
    counters: Sequence[str],
    secret_keys: Sequence[bytes],
    leases: Mapping[str, int],
    widths: Mapping[str, int] | None = None,
) -> dict[str, SignalState]:
    """Each signal's counters, locks and dead letters, all in one batch. A dead letter counts
    when it verifies for the signal (with ``secret_keys``, if any); a lock is judged by the
    signal's declared lease in ``leases``; the locks of a signal's ``widths`` shards are read
    (one when not given)."""
    locks = {
        name: [shard.lock for shard in shard_keys(k, (widths or {}).get(name, 1))]
        for name, k in signals.items()
    }
    wanted = [k.counter(c) for k in signals.values() for c in counters]
    wanted += [k.dead for k in signals.values()]
    wanted += [lock for name in signals for lock in locks[name]]
    current = conn.gets_many(wanted)
    states = {}
    for name, k in signals.items():
        dead = current.get(k.dead)
        found = [] if dead is None else frames.parse(dead.value, k.queue.encode(), secret_keys)[0]
        lock = most_notable(
            lock_state(key, current[key].value if key in current else None, leases[name])
            for key in locks[name]
        )
        states[name] = SignalState(_counts(current, k, counters), lock, len(found))
    return states
