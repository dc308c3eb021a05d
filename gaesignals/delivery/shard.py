"""One shard of a locked signal, delivered in order under its lock (see :mod:`.reliable`).

The handlers run from the head of the shard; before each payload its progress cursor names it,
and the shard's acknowledgement then removes exactly what was handled, keeping what senders
appended meanwhile, what is not due yet, what was rescheduled and what is held for another
deliverer.
"""

from __future__ import annotations

import logging
from collections.abc import Collection
from typing import NamedTuple

from .. import frames
from ..config import Settings
from ..exceptions import GaeSignalsError, Reject, Retry
from ..keys import SignalKeys
from ..queue import dead_letters
from ..queue.held import held_by, reader
from ..queue.lease import Holder
from ..queue.progress import MAX_RESCHEDULED, Cursor, Progress, Rescheduled, Resume
from ..queue.reliable import reschedule
from ..queue.spread import kept_marker
from ..queue.take import acknowledge
from ..registration import RetryPolicy
from ..stores import Cached
from ..timing import now_ms
from .outcomes import Outcome, Outcomes
from .retries import due_after, error_text
from .runner import Runner
from .settling import NOTHING, ShardSettled
from .sharing import Budget

logger = logging.getLogger("gaesignals")


class ShardRead(NamedTuple):
    """A shard's frames as read (those held for another deliverer among them, see
    :mod:`..queue.held`), and its unreadable regions."""

    found: list[frames.Frame]
    bad: list[frames.BadRegion]


class Ran(NamedTuple):
    """How far one shard's run got (see :meth:`ShardDelivery._run`)."""

    delivered: int
    expired: int
    #: The bytes to keep at the head, in place of those read from ``cut`` on.
    keep: bytes
    #: Where the kept part of the value read starts; None if the lock was lost on the way
    #: (everything stays queued).
    cut: int | None


class RunState:
    """What the shards of one reliable delivery share: its settings, its attempts and retry
    policy, its outcomes, its bound, and each key's frames held for another deliverer."""

    def __init__(
        self,
        settings: Settings,
        max_attempts: int,
        policy: RetryPolicy,
        outcomes: Outcomes,
        budget: Budget,
    ) -> None:
        self.settings = settings
        self.max_attempts = max_attempts
        self.policy = policy
        self.outcomes = outcomes
        self.budget = budget
        #: Each key's frames held for another deliverer, by start.
        self.held: dict[str, set[int]] = {}
        #: What each shard does about cancellations and coalescing (see :mod:`.settling`;
        #: keys of signals with neither are not in it).
        self.settled: dict[str, ShardSettled] = {}


class ShardDelivery:
    """One shard (or stranded copy) of one locked signal, delivered in order.

    After each payload its progress cursor (:class:`~..queue.progress.Cursor`) records it;
    a stranded copy on another server is delivered without one (``cursor`` None). A payload
    that fails stops this shard (it is retried first next time, the shard's order holds); the
    other shards go on. Payloads older than the signal's ttl are dropped (logged) and removed
    like handled ones. Once the delivery's bound (:class:`~.sharing.Budget`) is spent, the
    rest stays queued as it is. Every payload runs under the shard's ``lock``, checked (and
    renewed when due) before each one.
    """

    def __init__(
        self,
        holder: Holder,
        runner: Runner,
        keys: SignalKeys,
        lock: str,
        key: str,
        item: Cached,
        cursor: Cursor | None,
    ) -> None:
        self.holder = holder
        self.runner = runner
        self.keys = keys
        self.lock = lock
        self.key = key
        self.value, self.token = item
        self.cursor = cursor
        #: When what is due was decided (Unix ms), and the indexes of the payloads not due.
        self.now = 0
        self.waiting: set[int] = set()
        #: What stays of the payloads not removed before the cut, by index: those not due, as
        #: they are, and those rescheduled, rewritten; and the rescheduled, as the cursor
        #: names them.
        self.kept: dict[int, bytes] = {}
        self.rescheduled: list[Rescheduled] = []
        #: What stays at the head whatever is removed: a spread signal's marker, in its own key.
        self.marker = kept_marker(runner.settings, keys.queue, runner.spec.shards, key)
        #: How this deliverer reads frames, as its cursor says (see queue.held.reader).
        self.reader = reader(runner.settings.secret_keys, runner.settings.codec)
        #: What it does about cancellations and coalescing (see :mod:`.settling`).
        self.settled = NOTHING

    def _resume(self, found: list[frames.Frame]) -> Resume | None:
        """Where the predecessor's cursor says to resume, if it left one to believe."""
        progress = None if self.cursor is None else self.cursor.read(self.runner.name, now_ms())
        return None if progress is None else progress.resume(found)

    def deliver(self, read: ShardRead, run: RunState) -> int:
        found, bad = read
        self.settled = run.settled.get(self.key, NOTHING)
        resumed = self._resume(found)
        # What is due is decided once per shard, and a successor decides as its predecessor
        # did (the cursor says when): a payload it skipped as not due is never taken as done.
        self.now = now_ms() if resumed is None else resumed.decided
        first = 0 if resumed is None else resumed.first
        held_by_before = b"" if resumed is None else resumed.reader
        self.waiting = self._waiting(found, run.held.get(self.key, ()), first, held_by_before)
        self.kept = {i: self.value[found[i].start : found[i].end] for i in self.waiting}
        if self.settled is not NOTHING:
            self._retire(found)
        if resumed is not None:
            self._reschedule_as_before(found[:first], resumed.rescheduled)
        if len(self.waiting) == len(found) and not bad and not self.settled.cancels:
            run.outcomes.leaving(self.runner.name, -len(found))
            return 0
        crashed = None if resumed is None else resumed.crashed
        if crashed is not None:
            logger.warning(
                "a delivery of signal %r died running a payload (its attempt %d of "
                "%d); resuming there",
                self.runner.name,
                crashed,
                run.max_attempts,
            )
        elif first:
            logger.warning(
                "resuming signal %r after %d payload(s) an interrupted delivery finished",
                self.runner.name,
                first,
            )
        ran = self._run(found, first, crashed, run)
        if ran.cut is None:  # lost the lock: everything stays queued
            run.outcomes.leaving(self.runner.name, -len(found) - frames.dropped(bad))
            return ran.delivered
        # Payloads not due yet and rescheduled before the cut stay, in order, ahead of what
        # _run kept.
        held = [self.kept[i] for i in sorted(self.kept) if found[i].end <= ran.cut]
        if self.settled.cancels:
            held.append(self.settled.kept_cancels(self.value, self.key, ran.cut))
        keep = self.marker + b"".join(held) + ran.keep
        self._remove(found, bad, ran.expired, keep, ran.cut, run.outcomes)
        return ran.delivered

    def _waiting(
        self, found: list[frames.Frame], held: Collection[int], first: int, reader: bytes
    ) -> set[int]:
        """The indexes of the payloads that stay queued, never run: those not due yet, those
        ``held`` (by start) for another deliverer, and those before ``first`` that a
        predecessor reading as ``reader`` held (it never ran them)."""
        now = self.now
        waiting = {
            i
            for i, f in enumerate(found)
            if f.start in held or (f.meta and frames.not_before(f) > now)
        }
        if reader and reader != self.reader:
            waiting.update(i for i in range(first) if held_by(reader, self.value, found[i]))
        if self.settled.stay:
            waiting.update(i for i, f in enumerate(found) if f.start in self.settled.stay)
        return waiting

    def _retire(self, found: list[frames.Frame]) -> None:
        """Payloads waiting for a retry that a newer one of their key superseded no longer
        stay: the run skips them (counted coalesced) and they are removed with what is done."""
        for index in [i for i in self.kept if found[i].start in self.settled.retired]:
            del self.kept[index]
            self.waiting.discard(index)

    def _reschedule_as_before(
        self, done: list[frames.Frame], rescheduled: tuple[Rescheduled, ...]
    ) -> None:
        """Keep, rewritten as its predecessor did, each payload before the resume point that
        the predecessor's cursor says it rescheduled; never one already kept as it is (not
        due, or held: rewriting a held frame would sign bytes this process never verified)."""
        by_id = {frame.ident: index for index, frame in enumerate(done)}
        for again in rescheduled:
            index = by_id.get(again.ident)
            if index is not None and index not in self.kept:
                self.kept[index] = self._rebuild(done[index], again.attempts, again.due)
                self.rescheduled.append(again)

    def _rebuild(
        self, frame: frames.Frame, attempts: int, due: int, error: str | None = None
    ) -> bytes:
        secret_keys = self.runner.settings.secret_keys
        return reschedule(
            frame, self.runner.signature_name, secret_keys, attempts=attempts, due=due, error=error
        )

    def _progress(self, frame: frames.Frame, running: int | None) -> None:
        """Record in the cursor that ``frame`` is finished, or (with ``running``) about to
        run, with the attempts it counts should that run never return."""
        if self.cursor is not None:
            named = Progress(
                frame.end, frame.ident, running, self.now, tuple(self.rescheduled), self.reader
            )
            self.cursor.keep(named)

    def _run(
        self, found: list[frames.Frame], first: int, crashed: int | None, run: RunState
    ) -> Ran:
        """Run the handlers from ``first`` on (``crashed``: the attempts of that payload, whose
        run a predecessor never returned from).

        Before each payload runs, the cursor names it with the attempts it will have counted
        if this run never returns (a handler that kills the process), so such a payload still
        reaches the dead letters after ``max_attempts``."""
        outcomes, value, name = run.outcomes, self.value, self.runner.name
        delivered = expired = 0
        for index in range(first, len(found)):
            frame = found[index]
            if index in self.waiting:
                continue  # not due yet: it stays, and the cursor never names it
            if frame.start in self.settled.skip:  # cancelled or coalesced: done, never run
                outcomes.report(name, self.settled.skip[frame.start])
                continue
            if not self.holder.still_holds(self.lock):
                logger.warning("lost the lock of %r mid-delivery; stopping there", self.runner.name)
                return Ran(delivered, expired, b"", None)
            if self.runner.expired(frame):
                expired += 1  # dropping it again after a crash costs nothing: no cursor needed
                continue
            if run.budget.left(name) == 0:  # bounded: the rest stays for the next delivery
                return Ran(delivered, expired, value[frame.start :], frame.start)
            run.budget.spend(name)
            died = crashed if index == first and crashed is not None else None
            tried = frame.attempts if died is None else died
            error: Exception | None
            if died is not None and died >= run.max_attempts:
                error = RuntimeError("killed its deliverer")  # max_attempts times: not run again
            else:
                self._progress(frame, tried + 1)
                error = self.runner.attempt(frame)
                tried += 1
            outcomes.report(name, Outcome.FAILED if error else Outcome.DELIVERED)
            if error is None:
                delivered += 1
                continue
            if self._retry_later(index, frame, tried, error, run):
                outcomes.report(name, Outcome.RETRIED)
                continue
            text = error_text(error)
            if tried < run.max_attempts and not isinstance(error, Reject):
                # Stop so the shard's order holds: this payload is retried first next time.
                outcomes.report(name, Outcome.RETRIED)
                raw = frames.with_attempts(value[frame.start : frame.end], tried)
                return Ran(delivered, expired, raw + value[frame.end :], frame.start)
            raw = self._rebuild(frame, tried, 0, text)
            if not self._dead_letter(raw):
                return Ran(delivered, expired, raw + value[frame.end :], frame.start)
            outcomes.report(name, Outcome.DEAD_LETTERED, attempts=tried)
        return Ran(delivered, expired, b"", len(value))

    def _retry_later(
        self, index: int, frame: frames.Frame, tried: int, error: Exception, run: RunState
    ) -> bool:
        """Reschedule a failed payload after its wait, in place, and go on with the ones behind
        it (True); not when it is to be dead-lettered, when the signal retries at once (its
        ``retry_delay`` is 0, the shard then stops), or when this delivery rescheduled enough."""
        if isinstance(error, Reject) or tried >= run.max_attempts:
            return False
        asked = error.delay if isinstance(error, Retry) else None
        wait = run.policy.wait(tried) if asked is None else asked
        if wait <= 0 or len(self.rescheduled) >= MAX_RESCHEDULED:
            return False
        due = due_after(now_ms(), wait)
        self.kept[index] = self._rebuild(frame, tried, due, error_text(error))
        self.rescheduled.append(Rescheduled(frame.ident, tried, due))
        return True

    def _remove(
        self,
        found: list[frames.Frame],
        bad: list[frames.BadRegion],
        expired: int,
        keep: bytes,
        cut: int,
        outcomes: Outcomes,
    ) -> None:
        """Acknowledge what was done. Everything read was accounted for up front: take back
        what stays queued, and all of it if the acknowledgement surely did not happen (a
        timed-out one may still apply: kept)."""
        conn = self.holder.conn
        dropped = sum(r.payloads for r in bad if r.end <= cut)
        kept = self.kept
        removed = sum(f.end <= cut and i not in kept for i, f in enumerate(found)) + dropped
        name = self.runner.name
        outcomes.report(name, Outcome.DROPPED, dropped)
        outcomes.report(name, Outcome.EXPIRED, expired)
        outcomes.leaving(name, removed - len(found) - frames.dropped(bad))
        store = self.runner.settings.store
        if not acknowledge(conn, store, self.runner.name, self.key, self.value, self.token, keep):
            outcomes.leaving(name, -removed)
            done = [f for i, f in enumerate(found) if f.end <= cut and i not in kept]
            if self.cursor is not None and done:
                # Not removed, but done: the cursor says so, and the next holder resumes after
                # it (and removes them) instead of running them again.
                self._progress(done[-1], None)
                return
        if self.cursor is not None:
            self.cursor.clear()

    def _dead_letter(self, raw: bytes) -> bool:
        """Move a payload to its dead letters; False (logged) if it stays queued."""
        try:
            dead_letters.put(self.holder.conn, self.runner.settings.store, self.keys, raw)
        except GaeSignalsError:
            name = self.runner.name
            logger.exception("could not dead-letter a payload of %r; it stays queued", name)
            return False
        return True
