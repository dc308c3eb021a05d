"""What became of each payload a delivery took, reported once and heard three ways.

The code that decides a payload's fate calls :meth:`Outcomes.report` once; the signal's
counters in the store, the OpenTelemetry counters ``gaesignals.payloads.<outcome>`` (see
:mod:`..tracing`) and the logs each hear it from there. The counter changes are gathered and
written in one call at the end of the delivery (:meth:`Outcomes.write`), in the round trips it
makes anyway.

Besides outcomes, the store counters take the queue layer's own bookkeeping: ``accounted``
(payloads that left a queue, however they left it) and the corrections a weak take or a lost
check returns. Those are counter changes, not outcomes: :meth:`Outcomes.leaving` and
:meth:`Outcomes.adopt` add them to the same write, and neither metrics nor logs hear them.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Mapping
from enum import StrEnum

from .. import tracing
from ..accounting import flush
from ..keys import SignalKeys
from ..registration import SignalSpec
from ..stores import Connection

logger = logging.getLogger("gaesignals")


class Outcome(StrEnum):
    """What became of a payload a delivery took; each value names its store counter and its
    metric (``gaesignals.payloads.<value>``)."""

    #: Every handler took it.
    DELIVERED = tracing.DELIVERED
    #: A handler raised, or it could not be decoded (a reliable one is retried).
    FAILED = tracing.FAILED
    #: It failed ``max_attempts`` reliable deliveries, or was rejected, and moved to the
    #: signal's dead letters.
    DEAD_LETTERED = tracing.DEAD_LETTERED
    #: Its bytes were unreadable (garbage, tampered with, or held past their bound).
    DROPPED = tracing.DROPPED
    #: It was older than the signal's ``ttl`` and never ran.
    EXPIRED = tracing.EXPIRED


#: The members as module globals, cheaper to look up than the enum's attributes (a weak
#: delivery reports a few outcomes per signal).
DELIVERED, FAILED, DEAD_LETTERED, DROPPED, EXPIRED = Outcome


class Outcomes:
    """One delivery's outcomes, told to the counters, the metrics and the logs.

    ``counting``: whether the store counters are kept (``Settings.counters``).
    ``counted_by_take``: the weak take already counted every payload it took as delivered,
    expired or dropped (ahead of its reset, so nothing taken is ever unaccounted); here a
    failure then moves one from ``delivered`` to ``failed``, and the other outcomes reach the
    metrics and the logs only."""

    def __init__(
        self,
        keys: Mapping[str, SignalKeys],
        specs: Mapping[str, SignalSpec],
        *,
        counting: bool,
        counted_by_take: bool = False,
    ) -> None:
        self.keys = keys
        self.specs = specs
        self.counting = counting
        self.counted_by_take = counted_by_take
        #: Whether a tracer or meter provider is set: asked once per delivery.
        self.measuring = tracing.active()
        #: Counter changes not written yet, by counter key.
        self.changes: Counter[str] = Counter()

    def report(
        self, name: str, outcome: Outcome, n: int = 1, *, attempts: int | None = None
    ) -> None:
        """``n`` payloads of signal ``name`` met ``outcome`` (``attempts``: how many times a
        dead-lettered one was tried, for its log)."""
        if n <= 0:
            return
        if self.counting and (outcome is FAILED or not self.counted_by_take):
            self._count(name, outcome, n)
        if self.measuring:
            tracing.count(outcome, name, n)
        if outcome is EXPIRED or outcome is DEAD_LETTERED:
            self._log(name, outcome, n, attempts)

    def _count(self, name: str, outcome: Outcome, n: int) -> None:
        counter = self.keys[name].counter
        self.changes[counter(outcome)] += n
        if self.counted_by_take:  # a failure, counted delivered by the take
            self.changes[counter(DELIVERED)] -= n

    def _log(self, name: str, outcome: Outcome, n: int, attempts: int | None) -> None:
        if outcome is EXPIRED:
            logger.warning(
                "dropped %d payload(s) of signal %r older than its ttl of %d s",
                n,
                name,
                self.specs[name].ttl,
            )
        else:
            logger.error(
                "a payload of signal %r failed %d times and moved to its dead letters",
                name,
                attempts,
            )

    def leaving(self, name: str, n: int) -> None:
        """``n`` payloads of ``name`` left its queue (negative: were counted so, and stay)."""
        if self.counting and n:
            self.changes[self.keys[name].counter("accounted")] += n

    def adopt(self, changes: Mapping[str, int]) -> None:
        """Write the queue layer's counter changes (a take's corrections, a lost check's
        restart of ``accounted``) with this delivery's own."""
        if self.counting:
            self.changes.update(changes)

    def write(self, conn: Connection, *, quietly: bool = False) -> None:
        """Write the counter changes gathered so far in one call, then forget them
        (``quietly``: a failure is logged, not raised; counters are best-effort)."""
        if self.counting:
            flush(conn, self.changes, quietly=quietly)

    def forget(self) -> None:
        """Drop the counter changes not written (the store is gone: they would only make
        ``accounted`` larger, and lost detection under-report, never over-report)."""
        self.changes.clear()
