"""What became of each payload a delivery took, reported once and heard three ways.

The code that decides a payload's fate calls :meth:`Outcomes.report` once; the signal's
counters in the store, the OpenTelemetry counters ``gaesignals.payloads.<outcome>`` (see
:mod:`..tracing`) and the logs each hear it from there. The counter changes are gathered and
written in one call at the end of the delivery (:meth:`Outcomes.write`), in the round trips it
makes anyway.

``lost`` is the one outcome no delivery decides: the queue layer's lost check finds it (see
:func:`gaesignals.accounting.check_lost`), from the counters it read with the queues, and
keeps the estimate in the ``lost`` counter by CAS as it finds it (a maximum, not a sum: two
deliverers must not count one loss twice). The check returns what it newly found, and the
delivery that ran it hands that to :meth:`Outcomes.lost`: the metrics and the log hear it
from here like every other outcome, and the counter is not bumped again.

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
from ..accounting import Loss, flush
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
    #: A reliable payload failed and stays queued to be tried again (reported besides
    #: ``failed``, once per failed attempt that is not its last).
    RETRIED = tracing.RETRIED
    #: It failed ``max_attempts`` reliable deliveries, or was rejected, and moved to the
    #: signal's dead letters.
    DEAD_LETTERED = tracing.DEAD_LETTERED
    #: Its bytes were unreadable (garbage, tampered with, or held past their bound).
    DROPPED = tracing.DROPPED
    #: It was older than the signal's ``ttl`` and never ran.
    EXPIRED = tracing.EXPIRED
    #: The cache lost it (evicted) before any delivery took it; found by the lost check.
    LOST = tracing.LOST
    #: A newer pending payload with its coalesce key superseded it: it never ran.
    COALESCED = tracing.COALESCED
    #: It was cancelled while pending: it never ran.
    CANCELLED = tracing.CANCELLED
    #: An operator purged its signal while it was pending: it never ran.
    PURGED = tracing.PURGED


#: The members as module globals, cheaper to look up than the enum's attributes (a weak
#: delivery reports a few outcomes per signal).
(
    DELIVERED,
    FAILED,
    RETRIED,
    DEAD_LETTERED,
    DROPPED,
    EXPIRED,
    LOST,
    COALESCED,
    CANCELLED,
    PURGED,
) = Outcome

#: What a weak take counts itself as it takes (see :mod:`gaesignals.queue.weak_take`).
_COUNTED_BY_TAKE = frozenset({DELIVERED, EXPIRED, DROPPED, COALESCED, CANCELLED})


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
        #: Whether a ``delivered`` report changes anything: not after a weak take that counted
        #: it, with nothing measuring. A hot loop may then leave it out (nothing else happened
        #: to those payloads).
        self.hears_delivered = self.measuring or (counting and not counted_by_take)
        #: Counter changes not written yet, by counter key.
        self.changes: Counter[str] = Counter()

    def report(
        self,
        name: str,
        outcome: Outcome,
        n: int = 1,
        *,
        attempts: int | None = None,
        lost_in_all: int | None = None,
    ) -> None:
        """``n`` payloads of signal ``name`` met ``outcome`` (``attempts``: how many times a
        dead-lettered one was tried; ``lost_in_all``: the signal's loss estimate; both for
        the log)."""
        if n <= 0:
            return
        # The lost check keeps its own counter; a weak take counts what it takes itself.
        counted_by_take = self.counted_by_take and outcome in _COUNTED_BY_TAKE
        if self.counting and outcome is not LOST and not counted_by_take:
            self._count(name, outcome, n)
        if self.measuring:
            tracing.count(outcome, name, n)
        if outcome is EXPIRED or outcome is DEAD_LETTERED or outcome is LOST:
            self._log(name, outcome, n, attempts if outcome is DEAD_LETTERED else lost_in_all)

    def lost(self, losses: Mapping[str, Loss]) -> None:
        """Report what a lost check newly found gone, by signal (see the module's docstring)."""
        for name, loss in losses.items():
            self.report(name, LOST, loss.more, lost_in_all=loss.total)

    def _count(self, name: str, outcome: Outcome, n: int) -> None:
        counter = self.keys[name].counter
        self.changes[counter(outcome)] += n
        if self.counted_by_take and outcome is FAILED:  # counted delivered by the take
            self.changes[counter(DELIVERED)] -= n

    def _log(self, name: str, outcome: Outcome, n: int, detail: int | None) -> None:
        if outcome is EXPIRED:
            logger.warning(
                "dropped %d payload(s) of signal %r older than its ttl of %d s",
                n,
                name,
                self.specs[name].ttl,
            )
        elif outcome is LOST:
            logger.warning(
                "%d payload(s) of signal %r vanished from the cache before delivery "
                "(evicted?); %d lost in all",
                n,
                name,
                detail,
            )
        else:
            logger.error(
                "a payload of signal %r failed %d times and moved to its dead letters",
                name,
                detail,
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
