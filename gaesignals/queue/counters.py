"""A signal's counters in the store: bumped, read, and the loss estimate kept by CAS.

:mod:`gaesignals.accounting` decides what to count and when; this is where the counts meet the
store. Every call here takes the connection of the unit of work it belongs to (a send, a
delivery, a report), so a bump rides in that work's round trips.
"""

from __future__ import annotations

from collections.abc import Mapping

from ..stores import Connection

#: A counter as read: its bytes and their CAS token (None where the read gave none).
Read = tuple[bytes, object]


def bump(conn: Connection, deltas: Mapping[str, int]) -> None:
    """Add each delta to its counter, atomically (a negative delta subtracts, stopping at 0)."""
    conn.incr_many(deltas)


def record_estimates(
    conn: Connection, fresh: Mapping[str, bytes], grown: Mapping[str, tuple[bytes, Read]]
) -> dict[str, bool]:
    """Write loss estimates: each of ``fresh`` created where it does not exist yet, each of
    ``grown`` (its new value, and the counter as it was read) only where the counter still
    holds what was read; True for each written.

    A counter read without a token (a native take reads none) is read again for one, and only
    replaced if still unchanged, so two deliverers never both write over one value."""
    untokened = [key for key, (_, item) in grown.items() if item[1] is None]
    again = conn.gets_many(untokened) if untokened else {}
    swaps = {}
    for key, (value, item) in grown.items():
        current = again.get(key) if item[1] is None else item
        if current is not None and current[0] == item[0]:  # unchanged since it was read
            swaps[key] = (value, current[1])
    added = conn.add_many(fresh) if fresh else {}
    return added | (conn.cas_many(swaps) if swaps else {})
