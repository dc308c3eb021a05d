"""Reliable delivery: a per-signal lock with a lease, at least once.

A deliverer takes each signal's lock, runs the handlers, and only then removes exactly the
payloads it delivered (:func:`~gaesignals.queue.take.acknowledge`). A crash or a raising
handler leaves the payload for the next delivery; after ``max_attempts`` failures it moves to
the signal's dead letters. A signal declared with ``shards=N`` takes one lock and keeps a
progress cursor per shard, so a deliverer killed mid-way costs the next one a repeat of the
payload that was running, not of the whole batch.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Collection, Mapping
from typing import NamedTuple

from .. import frames
from ..accounting import check_lost, flush_sent, read_order, schedule
from ..config import Settings
from ..exceptions import GaeSignalsError, Reject, Retry, StoreUnavailable
from ..keys import SignalKeys, shard_keys, signal_keys
from ..mapping import SignalMapping
from ..queue import dead_letters
from ..queue.held import held_by, reader
from ..queue.lease import Holder, acquire, release
from ..queue.progress import MAX_RESCHEDULED, Cursor, Progress, Rescheduled, Resume
from ..queue.reliable import read, reschedule
from ..queue.spread import Reach, kept_marker, learn, reach, sweeps
from ..queue.take import acknowledge
from ..registration import RetryPolicy, SignalSpec
from ..stores import Cached, home_key, is_stranded
from ..timing import now_ms
from .outcomes import Outcome, Outcomes
from .plan import plan_of
from .retries import due_after, error_text
from .runner import Runner
from .settling import NOTHING, ShardSettled, settle

logger = logging.getLogger("gaesignals")


class ShardRead(NamedTuple):
    """A shard's frames as read (those held for another deliverer among them, see
    :mod:`..queue.held`), and its unreadable regions."""

    found: list[frames.Frame]
    bad: list[frames.BadRegion]


class Ran(NamedTuple):
    """How far one shard's run got (see :meth:`_Shard._run`)."""

    delivered: int
    expired: int
    #: The bytes to keep at the head, in place of those read from ``cut`` on.
    keep: bytes
    #: Where the kept part of the value read starts; None if the lock was lost on the way
    #: (everything stays queued).
    cut: int | None


def deliver_reliable(
    signals: SignalMapping,
    settings: Settings,
    specs: Mapping[str, SignalSpec],
    lease: int,
    max_attempts: int,
    policy: RetryPolicy | None = None,
) -> int:
    """Deliver ``signals`` under their locks; returns how many payloads every handler took.
    A failed payload is retried as ``policy`` says (the defaults when None).

    A delivery that finds a signal spread over more shards than it read delivers again at
    once, with the new shards: a delivery that returns 0 met nothing but other holders' locks."""
    run = (signals, settings, specs, lease, max_attempts, policy or RetryPolicy())
    delivered, learned = _deliver_reliable(*run)
    if learned:
        delivered += _deliver_reliable(*run)[0]
    return delivered


def _deliver_reliable(
    signals: SignalMapping,
    settings: Settings,
    specs: Mapping[str, SignalSpec],
    lease: int,
    max_attempts: int,
    policy: RetryPolicy,
) -> tuple[int, bool]:
    owner = secrets.token_hex(16).encode()
    keys = {name: signal_keys(name, settings.namespace) for name in signals}
    plan = plan_of(signals)
    checking = schedule.due(signals, settings, plan.quiet)
    outcomes = Outcomes(keys, specs, counting=settings.counters)
    run = _ReliableRun(settings, max_attempts, policy, outcomes)
    with settings.store.connection() as conn:
        # One lock per signal, whatever its shards.
        declared = {k.lock: specs[name].lease for name, k in keys.items()}
        held = acquire(conn, [k.lock for k in keys.values()], owner, lease, declared)
        if not held:
            return 0, False
        if checking:
            flush_sent(conn, settings.store)  # sent counts this process still holds
        try:
            mine = {name: k for name, k in keys.items() if k.lock in held}
            runners = {name: plan.runner(name, settings, specs[name]) for name in mine}
            spreading = [k.queue for name, k in mine.items() if not specs[name].fixed]
            run.reach = reach(settings, mine, specs, sweeps.due(settings, spreading))
            shards = {name: shard_keys(k, run.reach.read[name]) for name, k in mine.items()}
            holder = Holder(conn, owner, lease, held)
            run.deliver(holder, mine, shards, runners, checking)
        except StoreUnavailable:
            # Not asked again for counters: what stays unwritten only makes ``accounted``
            # larger, so lost detection under-reports, never over-reports.
            run.outcomes.forget()
            raise
        finally:
            run.outcomes.write(conn, quietly=True)
            release(conn, sorted(held), owner, lease)
    return run.delivered, run.learned


class _ReliableRun:
    """One reliable delivery: its outcomes and how many payloads it delivered."""

    def __init__(
        self, settings: Settings, max_attempts: int, policy: RetryPolicy, outcomes: Outcomes
    ) -> None:
        self.settings = settings
        self.max_attempts = max_attempts
        self.policy = policy
        self.outcomes = outcomes
        self.delivered = 0
        #: Whether a signal was found spread over more shards than it was known to have.
        self.learned = False
        #: Each key's frames held for another deliverer, by start (see :meth:`_parse`).
        self.held: dict[str, set[int]] = {}
        #: What this delivery reads of each signal (set once the locks are held).
        self.reach = Reach({}, {}, {})
        #: Each key's cancellations, and what each shard does about them and coalescing
        #: (see :mod:`.settling`; keys of signals with neither are not in it).
        self.cancels: dict[str, list[frames.Frame]] = {}
        self.settled: dict[str, ShardSettled] = {}

    def _parse(
        self,
        current: Mapping[str, Cached],
        queues: Mapping[str, str],
        shards: Mapping[str, tuple[tuple[str, str], ...]],
        runners: Mapping[str, Runner],
    ) -> tuple[dict[str, ShardRead], set[str]]:
        """Each queue key read holding payloads (or garbage), parsed; and the signals found
        spread wider than read, whose width is learned (the delivery then runs again, with
        their new shards).
        A key holding only markers holds nothing to deliver. The frames held for another
        deliverer are among a key's frames, in order, their starts in :attr:`held`: they stay
        queued as those not due yet do."""
        parsed: dict[str, ShardRead] = {}
        widened: set[str] = set()
        for key, item in current.items():
            name = queues.get(home_key(key))
            if name is None or not item.value:
                continue
            found, bad, seen, held, cancels = runners[name].parse_all(item.value, key)
            # A marker, or (in a sweep) anything on a shard past the known width, is learned.
            seen = max(seen, self.reach.beyond.get(home_key(key), 0))
            if seen > self.reach.known[name] and learn(self.settings, shards[name][0][0], seen):
                widened.add(name)
            if held:
                self.held[key] = {frame.start for frame in held}
                found = sorted(found + held, key=lambda frame: frame.start)
            if cancels:
                self.cancels[key] = cancels
            if found or bad or cancels:
                parsed[key] = ShardRead(found, bad)
        return parsed, widened

    def settle(self, parsed: Mapping[str, ShardRead], queues: Mapping[str, str]) -> None:
        """Decide, for the signals whose shards hold cancellations or payloads with metadata,
        what no handler gets, what stays and what a newer payload superseded (:mod:`.settling`)."""
        marked = {queues[home_key(key)] for key in self.cancels}
        marked.update(
            queues[home_key(key)]
            for key, read in parsed.items()
            if any(frame.meta for frame in read.found)
        )
        now = now_ms()
        for name in marked:
            keys = [key for key in parsed if queues[home_key(key)] == name]
            found = {key: parsed[key].found for key in keys}
            cancels = {key: self.cancels[key] for key in keys if key in self.cancels}
            self.settled.update(settle(found, cancels, self.held, now))

    def deliver(
        self,
        holder: Holder,
        mine: Mapping[str, SignalKeys],
        shards: Mapping[str, tuple[tuple[str, str], ...]],
        runners: Mapping[str, Runner],
        checking: set[str],
    ) -> None:
        """Read every locked signal's shards and cursors in one batch, then deliver shard by
        shard; within a shard, copies stranded on other servers of a cluster first (older)."""
        conn = holder.conn
        queues = {queue: name for name in mine for queue, _ in shards[name]}
        wanted = []
        for name, signal in mine.items():
            own = [queue for queue, _ in shards[name]]
            wanted += read_order(signal, own) if name in checking else own
        current = read(conn, wanted, [cursor for name in mine for _, cursor in shards[name]])
        parsed, widened = self._parse(current, queues, shards, runners)
        self.settle(parsed, queues)
        self.learned = bool(widened)
        if self.settings.counters:
            if checking:
                # Not the signals found spread wider than read: their new shards' payloads
                # were not counted, and would read as lost (checked next time).
                due = {name: k for name, k in mine.items() if name not in widened}
                check = check_lost(conn, due, queues, current, parsed)
                self.outcomes.adopt(check.changes)
                self.outcomes.lost(check.losses)
                schedule.checked(checking & set(due), self.settings)
            # Everything read is accounted for before any handler runs (see check_lost), in
            # one call for all signals; what then stays in a queue is taken back at the end.
            # Done here, not before each acknowledgement, so a failing counter call can never
            # cost an acknowledgement its connection (its CAS token).
            for key, (found, bad) in parsed.items():
                self.outcomes.leaving(queues[home_key(key)], len(found) + frames.dropped(bad))
            self.outcomes.write(conn)
        secret_keys = self.settings.secret_keys
        for name, signal in mine.items():
            runner = runners[name]
            for queue, cursor_key in shards[name]:
                progress = current.get(cursor_key, Cached(b"", None)).value
                cursor = Cursor(conn, cursor_key, progress, runner.signature_name, secret_keys)
                stranded = [k for k in parsed if is_stranded(k) and home_key(k) == queue]
                for key in [*stranded, queue]:
                    if key in parsed:
                        at = cursor if key == queue else None
                        shard = _Shard(holder, runner, signal, key, current[key], at)
                        self.delivered += shard.deliver(parsed[key], self)


class _Shard:
    """One shard (or stranded copy) of one locked signal, delivered in order.

    After each payload its progress cursor (:class:`~..queue.progress.Cursor`) records it;
    a stranded copy on another server is delivered without one (``cursor`` None). A payload
    that fails stops this shard (it is retried first next time, the shard's order holds); the
    other shards go on. Payloads older than the signal's ttl are dropped (logged) and removed
    like handled ones.
    """

    def __init__(
        self,
        holder: Holder,
        runner: Runner,
        keys: SignalKeys,
        key: str,
        item: Cached,
        cursor: Cursor | None,
    ) -> None:
        self.holder = holder
        self.runner = runner
        self.keys = keys
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
        self.marker = (
            kept_marker(runner.settings, key, runner.spec.shards) if key == keys.queue else b""
        )
        #: How this deliverer reads frames, as its cursor says (see queue.held.reader).
        self.reader = reader(runner.settings.secret_keys, runner.settings.codec)
        #: What it does about cancellations and coalescing (see :mod:`.settling`).
        self.settled = NOTHING

    def _resume(self, found: list[frames.Frame]) -> Resume | None:
        """Where the predecessor's cursor says to resume, if it left one to believe."""
        progress = None if self.cursor is None else self.cursor.read(self.runner.name, now_ms())
        return None if progress is None else progress.resume(found)

    def deliver(self, read: ShardRead, run: _ReliableRun) -> int:
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
        self, found: list[frames.Frame], first: int, crashed: int | None, run: _ReliableRun
    ) -> Ran:
        """Run the handlers from ``first`` on (``crashed``: the attempts of that payload, whose
        run a predecessor never returned from).

        Before each payload runs, the cursor names it with the attempts it will have counted
        if this run never returns (a handler that kills the process), so such a payload still
        reaches the dead letters after ``max_attempts``."""
        keys, outcomes, value, name = self.keys, run.outcomes, self.value, self.runner.name
        delivered = expired = 0
        for index in range(first, len(found)):
            frame = found[index]
            if index in self.waiting:
                continue  # not due yet: it stays, and the cursor never names it
            if frame.start in self.settled.skip:  # cancelled or coalesced: done, never run
                outcomes.report(name, self.settled.skip[frame.start])
                continue
            if not self.holder.still_holds(keys.lock):
                logger.warning("lost the lock of %r mid-delivery; stopping there", self.runner.name)
                return Ran(delivered, expired, b"", None)
            if self.runner.expired(frame):
                expired += 1  # dropping it again after a crash costs nothing: no cursor needed
                continue
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
        self, index: int, frame: frames.Frame, tried: int, error: Exception, run: _ReliableRun
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
