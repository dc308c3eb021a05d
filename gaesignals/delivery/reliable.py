"""Reliable delivery: a lock per shard with a lease, at least once.

A deliverer takes the locks of the shards it can get (one for a signal on one key), runs the
handlers, and only then removes exactly the payloads it delivered
(:func:`~gaesignals.queue.take.acknowledge`). A crash or a raising handler leaves the payload
for the next delivery; after ``max_attempts`` failures it moves to the signal's dead letters.
Each shard keeps a progress cursor, so a deliverer killed mid-way costs the next one a repeat
of the payload that was running, not of the whole batch. With a ``limit`` a delivery handles
at most that many payloads of each signal and shares the rest with other deliverers (see
:mod:`.sharing`).
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Collection, Mapping, Sequence
from typing import NamedTuple

from .. import frames
from ..accounting import check_lost, flush_sent, read_order, schedule
from ..config import Settings
from ..exceptions import GaeSignalsError, Reject, Retry, StoreUnavailable
from ..keys import Shard, SignalKeys, shard_keys, shard_queues, signal_keys
from ..mapping import SignalMapping
from ..queue import dead_letters
from ..queue.held import held_by, reader
from ..queue.lease import Holder, acquire, release
from ..queue.progress import MAX_RESCHEDULED, Cursor, Progress, Rescheduled, Resume
from ..queue.reliable import learn_widths, move, read, reschedule, widen_to
from ..queue.spread import Reach, kept_marker, learn, reach, sweeps
from ..queue.take import acknowledge
from ..registration import RetryPolicy, SignalSpec
from ..stores import Cached, Connection, home_key, is_stranded
from ..timing import now_ms
from .outcomes import Outcome, Outcomes
from .plan import plan_of
from .retries import due_after, error_text
from .runner import Runner
from .sharing import Budget, cut_out, kept_shards, rotated, runnable, split, width_for

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
    *,
    limit: int | None = None,
) -> int:
    """Deliver ``signals`` under their shards' locks; returns how many payloads every handler
    took. A failed payload is retried as ``policy`` says (the defaults when None).

    ``limit``: at most that many payloads of each signal (None: no bound); the rest stays for
    the next delivery or another deliverer (see :mod:`.sharing`).

    A delivery that finds a signal spread over more shards than it read delivers again at
    once, with the new shards (within the same ``limit``): a delivery that returns 0 met
    nothing but other holders' locks."""
    budget = Budget(limit)
    run = (signals, settings, specs, lease, max_attempts, policy or RetryPolicy(), budget)
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
    budget: Budget,
) -> tuple[int, bool]:
    owner = secrets.token_hex(16).encode()
    keys = {name: signal_keys(name, settings.namespace) for name in signals}
    plan = plan_of(signals)
    checking = schedule.due(signals, settings, plan.quiet)
    outcomes = Outcomes(keys, specs, counting=settings.counters)
    run = _ReliableRun(settings, max_attempts, policy, outcomes, budget)
    spreading = [k.queue for name, k in keys.items() if not specs[name].fixed]
    run.reach = reach(settings, keys, specs, sweeps.due(settings, spreading))
    shards = {name: shard_keys(k, run.reach.read[name]) for name, k in keys.items()}
    with settings.store.connection() as conn:
        declared = {shard.lock: specs[name].lease for name in keys for shard in shards[name]}
        held = acquire(conn, list(declared), owner, lease, declared)
        holder = Holder(conn, owner, lease, held)
        try:
            # Shard 0 holds the width's marker: without its lock, learn it from the spread key.
            missed = [k.queue for n, k in keys.items() if not specs[n].fixed and k.lock not in held]
            run.learned = bool(missed) and bool(learn_widths(conn, settings, missed))
            if held:
                if checking:
                    flush_sent(conn, settings.store)  # sent counts this process still holds
                mine = {n: [s for s in shards[n] if s.lock in held] for n in keys}
                mine = {name: own for name, own in mine.items() if own}
                runners = {name: plan.runner(name, settings, specs[name]) for name in mine}
                run.deliver(holder, {n: keys[n] for n in mine}, shards, mine, runners, checking)
        except StoreUnavailable:
            # Not asked again for counters: what stays unwritten only makes ``accounted``
            # larger, so lost detection under-reports, never over-reports.
            run.outcomes.forget()
            raise
        finally:
            if held:
                run.outcomes.write(conn, quietly=True)
                release(conn, sorted(holder.held), owner, lease)
    return run.delivered, run.learned


class _ReliableRun:
    """One reliable delivery: its outcomes, its bound, and how many payloads it delivered."""

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
        self.delivered = 0
        #: Whether a signal was found spread over more shards than it was known to have.
        self.learned = False
        #: Each key's frames held for another deliverer, by start (see :meth:`_parse`).
        self.held: dict[str, set[int]] = {}
        #: What this delivery reads of each signal (set before the locks are taken).
        self.reach = Reach({}, {}, {})

    def _parse(
        self,
        current: Mapping[str, Cached],
        queues: Mapping[str, str],
        shards: Mapping[str, tuple[Shard, ...]],
        runners: Mapping[str, Runner],
    ) -> tuple[dict[str, ShardRead], set[str]]:
        """Each queue key read holding payloads (or garbage), parsed; and the signals found
        spread wider than read, whose width is learned (the delivery then runs again, with
        their new shards).
        A key holding only markers holds nothing to deliver. The frames held for another
        deliverer are among a key's frames, in order, their starts in :attr:`held`: they stay
        queued as those not due yet do."""
        parsed: dict[str, ShardRead] = {}
        spread: set[str] = set()
        for key, item in current.items():
            name = queues.get(home_key(key))
            if name is None or not item.value:
                continue
            found, bad, seen, held = runners[name].parse_all(item.value, key)
            # A marker, or (in a sweep) anything on a shard past the known width, is learned.
            seen = max(seen, self.reach.beyond.get(home_key(key), 0))
            if seen > self.reach.known[name] and learn(self.settings, shards[name][0].queue, seen):
                spread.add(name)
            if held:
                self.held[key] = {frame.start for frame in held}
                found = sorted(found + held, key=lambda frame: frame.start)
            if found or bad:
                parsed[key] = ShardRead(found, bad)
        return parsed, spread

    def _read(
        self,
        conn: Connection,
        mine: Mapping[str, SignalKeys],
        shards: Mapping[str, tuple[Shard, ...]],
        own: Mapping[str, list[Shard]],
        checking: set[str],
    ) -> dict[str, Cached]:
        """The locked shards with their cursors, in one batch; of a signal being checked for
        losses or swept, every shard read (the others only to count and learn)."""
        wanted = []
        for name, signal in mine.items():
            every = name in checking or self.reach.read[name] > self.reach.known[name]
            queues = [shard.queue for shard in (shards[name] if every else own[name])]
            wanted += read_order(signal, queues) if name in checking else queues
        return read(conn, wanted, [shard.cursor for name in mine for shard in own[name]])

    def deliver(
        self,
        holder: Holder,
        mine: Mapping[str, SignalKeys],
        shards: Mapping[str, tuple[Shard, ...]],
        own: Mapping[str, list[Shard]],
        runners: Mapping[str, Runner],
        checking: set[str],
    ) -> None:
        """Read the locked shards (``own``) and their cursors in one batch, keep those this
        delivery works on (letting the others go, see :mod:`.sharing`), then deliver shard by
        shard; within a shard, copies stranded on other servers of a cluster first (older)."""
        conn = holder.conn
        queues = {shard.queue: name for name in mine for shard in shards[name]}
        current = self._read(conn, mine, shards, own, checking)
        parsed, spread = self._parse(current, queues, shards, runners)
        self.learned = self.learned or bool(spread)
        if self.settings.counters and checking:
            # Not the signals found spread wider than read: their new shards' payloads
            # were not counted, and would read as lost (checked next time).
            due = {name: k for name, k in mine.items() if name not in spread}
            self.outcomes.adopt(check_lost(conn, due, queues, current, parsed))
            schedule.checked(checking & set(due), self.settings)
        work = {
            name: self._share(holder, runners[name], mine[name], own[name], current, parsed)
            for name in mine
        }
        if self.settings.counters:
            # Everything to be worked on is accounted for before any handler runs (see
            # check_lost), in one call for all signals; what then stays in a queue is taken
            # back at the end. Done here, not before each acknowledgement, so a failing
            # counter call can never cost an acknowledgement its connection (its CAS token).
            working = {shard.queue for kept in work.values() for shard in kept}
            for key, (found, bad) in parsed.items():
                if home_key(key) in working:
                    self.outcomes.leaving(queues[home_key(key)], len(found) + frames.dropped(bad))
            self.outcomes.write(conn)
        secret_keys = self.settings.secret_keys
        for name, signal in mine.items():
            runner = runners[name]
            for shard in work[name]:
                progress = current.get(shard.cursor, Cached(b"", None)).value
                cursor = Cursor(conn, shard.cursor, progress, runner.signature_name, secret_keys)
                stranded = [k for k in parsed if is_stranded(k) and home_key(k) == shard.queue]
                for key in [*stranded, shard.queue]:
                    if key in parsed:
                        at = cursor if key == shard.queue else None
                        part = _Shard(holder, runner, signal, shard.lock, key, current[key], at)
                        self.delivered += part.deliver(parsed[key], self)

    def _share(
        self,
        holder: Holder,
        runner: Runner,
        signal: SignalKeys,
        own: Sequence[Shard],
        current: dict[str, Cached],
        parsed: dict[str, ShardRead],
    ) -> list[Shard]:
        """The locked shards of ``runner``'s signal this delivery works on, from a random one
        on, within its bound; the others are let go at once. A bounded delivery first moves
        its shard 0's excess to the other shards (see :meth:`_move_excess`)."""
        left = self.budget.left(runner.name)
        first = own[0]
        if left and not runner.spec.fixed and first.queue == signal.queue:
            self._move_excess(holder, runner, first, left, current, parsed)
        sizes: dict[str, int] = {}
        for key, (found, bad) in parsed.items():
            home = home_key(key)
            sizes[home] = sizes.get(home, 0) + len(found) + frames.dropped(bad)
        # Bounded, from a random shard on (others start elsewhere); else all, in shard order.
        kept = kept_shards(own if left is None else rotated(own), sizes, left)
        holder.let_go(shard.lock for shard in own if shard not in kept)
        return kept

    def _move_excess(
        self,
        holder: Holder,
        runner: Runner,
        shard: Shard,
        left: int,
        current: dict[str, Cached],
        parsed: dict[str, ShardRead],
    ) -> None:
        """Move what shard 0 holds past this delivery's ``left`` payloads to the signal's other
        shards, widened as the backlog wants, when that is more than another delivery's worth
        and no cursor says a predecessor was under way there. The frames are appended there
        first, then acknowledged from shard 0 (a crash in between costs duplicates, never a
        loss); this delivery then reads shard 0 only up to what it will handle."""
        key, limit = shard.queue, self.budget.limit
        read_ = parsed.get(key)
        if read_ is None or limit is None or current.get(shard.cursor, Cached(b"", None)).value:
            return
        indexes = runnable(read_.found, self.held.get(key, ()), now_ms())
        if len(indexes) - left <= limit:
            return
        conn, settings, name = holder.conn, self.settings, runner.name
        known = self.reach.known[name]
        wanted = width_for(len(indexes), limit, known)
        targets = widen_to(conn, settings, shard_queues(key, known), wanted)[1:]
        if not targets:
            return
        value, token = current[key]
        runs = split([read_.found[i] for i in indexes[left:]], targets)
        moving = {k: b"".join(value[f.start : f.end] for f in run) for k, run in runs.items()}
        gone = sorted(f for k in move(conn, settings.store, moving) for f in runs[k])
        if not gone:
            return
        if not acknowledge(conn, settings.store, name, key, value, token, cut_out(value, gone)):
            del parsed[key]  # changed under its lock: left alone (the copies moved: duplicates)
            return
        logger.info("moved %d payload(s) of %r to %d other shard(s)", len(gone), name, len(runs))
        boundary = read_.found[indexes[left - 1]].end
        current[key] = Cached(value[:boundary], token)
        found = [frame for frame in read_.found if frame.end <= boundary]
        parsed[key] = ShardRead(found, [region for region in read_.bad if region.end <= boundary])


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
        self.marker = (
            kept_marker(runner.settings, key, runner.spec.shards) if key == keys.queue else b""
        )
        #: How this deliverer reads frames, as its cursor says (see queue.held.reader).
        self.reader = reader(runner.settings.secret_keys, runner.settings.codec)

    def _resume(self, found: list[frames.Frame]) -> Resume | None:
        """Where the predecessor's cursor says to resume, if it left one to believe."""
        progress = None if self.cursor is None else self.cursor.read(self.runner.name, now_ms())
        return None if progress is None else progress.resume(found)

    def deliver(self, read: ShardRead, run: _ReliableRun) -> int:
        found, bad = read
        resumed = self._resume(found)
        # What is due is decided once per shard, and a successor decides as its predecessor
        # did (the cursor says when): a payload it skipped as not due is never taken as done.
        self.now = now_ms() if resumed is None else resumed.decided
        first = 0 if resumed is None else resumed.first
        held_by_before = b"" if resumed is None else resumed.reader
        self.waiting = self._waiting(found, run.held.get(self.key, ()), first, held_by_before)
        self.kept = {i: self.value[found[i].start : found[i].end] for i in self.waiting}
        if resumed is not None:
            self._reschedule_as_before(found[:first], resumed.rescheduled)
        if len(self.waiting) == len(found) and not bad:  # nothing due: nothing to write
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
        return waiting

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
        outcomes, value, name = run.outcomes, self.value, self.runner.name
        delivered = expired = 0
        for index in range(first, len(found)):
            frame = found[index]
            if index in self.waiting:
                continue  # not due yet: it stays, and the cursor never names it
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
                continue
            text = error_text(error)
            if tried < run.max_attempts and not isinstance(error, Reject):
                # Stop so the shard's order holds: this payload is retried first next time.
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
