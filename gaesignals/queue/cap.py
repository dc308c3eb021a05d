"""A signal's ``max_pending``: the most payloads it may hold, checked before each send.

A signal holds as much as the store has room for (:mod:`.spread`); a user who wants less
declares ``max_pending`` (:func:`~gaesignals.declare`), a count of payloads rather than bytes:
it is what a user reasons about (a backlog of jobs), and it is what the store counters already
keep, so a check is one read of two counters (``sent`` and ``accounted``: pending is their
difference) in the send's own connection. A signal without a cap pays nothing.

The check is not atomic with the append: senders that check at once may each add their
payloads, so a cap may be passed by what concurrent senders send at the same moment. Counters
are best-effort (the cache may evict them): an evicted ``sent`` lets more in, an evicted
``accounted`` refuses early until the lost check repairs it. Nothing stored is ever refused
after the fact: a send that passes the check stores or raises as any send.
"""

from __future__ import annotations

from ..accounting import pending_sent
from ..config import Settings
from ..exceptions import ConfigurationError, QueueFull
from ..keys import SignalKeys
from ..stores import Connection, counter_value


def check(
    conn: Connection,
    settings: Settings,
    keys: SignalKeys,
    cap: int,
    adding: int,
    unwritten: tuple[str, ...],
) -> None:
    """Raise :class:`QueueFull` (naming ``unwritten``, the send's keys) when ``adding`` more
    payloads would take the signal of ``keys`` past ``cap``."""
    if not settings.counters:
        raise ConfigurationError(
            "max_pending counts a signal's payloads with the store counters: configure "
            "counters=True to send to a signal declared with it"
        )
    sent, accounted = keys.counter("sent"), keys.counter("accounted")
    found = conn.gets_many([sent, accounted])
    counts = {key: counter_value(item.value) or 0 for key, item in found.items()}
    held = counts.get(sent, 0) + pending_sent(settings.store, sent) - counts.get(accounted, 0)
    if held + adding > cap:
        full = QueueFull(
            f"the signal holds {max(held, 0)} payloads; {adding} more would pass its "
            f"max_pending of {cap}",
            unwritten,
        )
        full.cap = cap
        raise full
