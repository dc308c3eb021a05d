"""Weak delivery: every pending payload of every signal taken in one queue operation, at most once.

The take (:func:`gaesignals.queue.weak_take.take`) empties every queue key of the mapping of
what is due and counts it; this module runs the handlers on what it took and reports their
outcomes (:mod:`.outcomes`). At most once: a handler that raises, or a process that dies
after the take, loses those payloads.
"""

from __future__ import annotations

from collections.abc import Mapping

from .. import frames, tracing
from ..accounting import schedule
from ..config import Settings
from ..mapping import SignalMapping
from ..queue import weak_take
from ..queue.weak_take import Found, Parse, WeakTaken
from ..registration import SignalSpec
from ..timing import now_ms
from .outcomes import CANCELLED, COALESCED, DELIVERED, DROPPED, EXPIRED, FAILED, Outcomes
from .plan import Layout, plan_of


def deliver_weak(
    signals: SignalMapping,
    settings: Settings,
    specs: Mapping[str, SignalSpec],
    limit: int | None = None,
) -> int:
    """Deliver ``signals`` weakly; returns how many payloads every handler took. ``limit``
    takes at most that many payloads of each signal (None: all that is due).

    A delivery that finds a signal spread over more shards than it read takes again at once,
    with the new shards: a delivery that returns 0 found nothing pending anywhere."""
    limits = None if limit is None else dict.fromkeys(signals, limit)
    delivered, taken, learned = _deliver_weak(signals, settings, specs, limits)
    if learned:
        if limits is not None:  # the second take gives what the first left of each limit
            limits = {name: quota - taken.get(name, 0) for name, quota in limits.items()}
        delivered += _deliver_weak(signals, settings, specs, limits)[0]
    return delivered


def _deliver_weak(
    signals: SignalMapping,
    settings: Settings,
    specs: Mapping[str, SignalSpec],
    limits: dict[str, int] | None,
) -> tuple[int, dict[str, int], bool]:
    """One take and its run: how many payloads every handler took, how many payloads of each
    signal were taken (only counted for a bounded take), and whether a signal was found spread
    wider than read."""
    plan = plan_of(signals)
    layout = plan.layout(settings, specs)
    for timed in layout.timed:
        timed.restart()
    checking = schedule.due(signals, settings, plan.quiet)
    reader = _Reader(layout, settings)
    outcomes = Outcomes(layout.keys, specs, counting=settings.counters, counted_by_take=True)
    with settings.store.connection() as conn:
        try:
            taken = weak_take.take(
                conn, settings, layout, reader, checking=checking, now=now_ms(), limits=limits
            )
            outcomes.adopt(taken.counts)
            outcomes.lost(taken.losses)
            if checking:
                schedule.checked([name for name in checking if name not in taken.widened], settings)
            delivered = _run(layout, taken, outcomes)
        finally:
            outcomes.write(conn, quietly=True)
    if taken.failure is not None:
        raise taken.failure
    counted: dict[str, int] = {}
    if limits is not None:
        for key in taken.taken:
            counted[key.name] = counted.get(key.name, 0) + len(key.found)
    return delivered, counted, bool(taken.widened)


class _Reader:
    """How this delivery reads each signal's queue values (:class:`.weak_take.Reader`): by
    its runner, as bare pickled bodies when nothing needs the frames."""

    def __init__(self, layout: Layout, settings: Settings) -> None:
        self.runners = layout.runners
        self.secret_keys = settings.secret_keys
        #: Whether payloads are traced or measured: then each needs its frame, never the bare
        #: pickled bodies.
        self.traced = tracing.active()

    def read(self, name: str, key: str, value: bytes) -> list[bytes] | Parse:
        runner = self.runners[name]
        if runner.bodies_suffice and not self.traced:
            bodies = frames.pickled_bodies(value, runner.signature_name, self.secret_keys)
            if bodies is not None:
                return bodies
        return runner.parse_all(value, key)

    def parse(self, name: str, key: str, value: bytes) -> Parse:
        return self.runners[name].parse_all(value, key)

    def within_ttl(self, name: str, found: Found) -> Found:
        runner = self.runners[name]
        return found if runner.ttl is None else runner.within_ttl(found)


def _run(layout: Layout, taken: WeakTaken, outcomes: Outcomes) -> int:
    """Run the handlers on what was taken, in the take's order, and report what became of
    each key's payloads. Returns how many every handler took."""
    delivered, hears_delivered = 0, outcomes.hears_delivered
    for key in taken.taken:
        runner = layout.runners[key.name]
        due = key.within_ttl
        if runner.one_handler and due and isinstance(due[0], bytes):
            ok, failed = runner.drain_bodies(due)  # runner.drain, one call less
        else:
            ok, failed = runner.drain(due)
        delivered += ok
        if hears_delivered:  # else a report that changes nothing, once per key
            outcomes.report(key.name, DELIVERED, ok)
        if failed:
            outcomes.report(key.name, FAILED, failed)
        if len(due) != len(key.found):
            gone = key.coalesced + key.cancelled
            outcomes.report(key.name, EXPIRED, len(key.found) - len(due) - gone)
            if gone:
                outcomes.report(key.name, COALESCED, key.coalesced)
                outcomes.report(key.name, CANCELLED, key.cancelled)
        if key.bad:
            outcomes.report(key.name, DROPPED, frames.dropped(key.bad))
    return delivered
