"""A signal's counters in the store: bumped, read, and the loss estimate kept by CAS.

:mod:`gaesignals.accounting` decides what to count and when; this is where the counts meet the
store. Every call here takes the connection of the unit of work it belongs to (a send, a
delivery, a report), so a bump rides in that work's round trips.
"""

from __future__ import annotations

from collections.abc import Mapping

from ..stores import Cached, Connection


def bump(conn: Connection, deltas: Mapping[str, int]) -> None:
    """Add each delta to its counter, atomically (a negative delta subtracts, stopping at 0)."""
    conn.incr_many(deltas)


def record_estimates(
    conn: Connection, created: Mapping[str, bytes], grown: Mapping[str, tuple[bytes, Cached]]
) -> dict[str, bool]:
    """Write loss estimates: each of ``created`` written where it does not exist yet, each of
    ``grown`` (its new value, and the counter as it was read, its token None where the read
    gave none) only where the counter still
    holds what was read; True for each written.

    A counter read without a token (a native take reads none) is read again for one, and only
    replaced if still unchanged, so two deliverers never both write over one value."""
    untokened = [key for key, (_, (_, token)) in grown.items() if token is None]
    again = conn.gets_many(untokened) if untokened else {}
    swaps = {}
    for key, (value, (was, token)) in grown.items():
        current = again.get(key) if token is None else Cached(was, token)
        if current is not None and current.value == was:  # unchanged since it was read
            swaps[key] = Cached(value, current.token)
    added = conn.add_many(created) if created else {}
    return added | (conn.cas_many(swaps) if swaps else {})
