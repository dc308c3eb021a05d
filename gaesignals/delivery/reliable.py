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
from collections.abc import Mapping, Sequence

from .. import frames
from ..accounting import check_lost, flush_sent, read_order, schedule
from ..config import Settings
from ..exceptions import StoreUnavailable
from ..keys import Shard, SignalKeys, shard_keys, shard_queues, signal_keys
from ..mapping import SignalMapping
from ..queue.lease import Holder, acquire, release
from ..queue.progress import Cursor
from ..queue.reliable import learn_widths, move, read, widen_to
from ..queue.spread import Reach, learn, reach, sweeps
from ..queue.take import acknowledge
from ..registration import RetryPolicy, SignalSpec
from ..stores import Cached, Connection, home_key, is_stranded
from ..timing import now_ms
from .outcomes import Outcomes
from .plan import plan_of
from .runner import Runner
from .settling import settle
from .shard import RunState, ShardDelivery, ShardRead
from .sharing import Budget, cut_out, kept_shards, rotated, runnable, split, width_for

logger = logging.getLogger("gaesignals")


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
    # The shards known to be in use are locked; a sweep reads the others only to learn a width
    # (the delivery then runs again with it).
    known = {name: shards[name][: run.reach.known[name]] for name in keys}
    with settings.store.connection() as conn:
        declared = {shard.lock: specs[name].lease for name in keys for shard in known[name]}
        held = acquire(conn, list(declared), owner, lease, declared)
        holder = Holder(conn, owner, lease, held)
        try:
            # Shard 0 holds the width's marker: without its lock, learn it from the spread key.
            missed = [k.queue for n, k in keys.items() if not specs[n].fixed and k.lock not in held]
            run.learned = bool(missed) and bool(learn_widths(conn, settings, missed))
            if held:
                if checking:
                    flush_sent(conn, settings.store)  # sent counts this process still holds
                mine = {n: [s for s in known[n] if s.lock in held] for n in keys}
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


class _ReliableRun(RunState):
    """One reliable delivery: what its shards share, and how many payloads it delivered."""

    def __init__(
        self,
        settings: Settings,
        max_attempts: int,
        policy: RetryPolicy,
        outcomes: Outcomes,
        budget: Budget,
    ) -> None:
        super().__init__(settings, max_attempts, policy, outcomes, budget)
        self.delivered = 0
        #: Whether a signal was found spread over more shards than it was known to have.
        self.learned = False
        #: What this delivery reads of each signal (set before the locks are taken).
        self.reach = Reach({}, {}, {})
        #: Each key's cancellations (see :meth:`settle`).
        self.cancels: dict[str, list[frames.Frame]] = {}

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
        widened: set[str] = set()
        for key, item in current.items():
            name = queues.get(home_key(key))
            if name is None or not item.value:
                continue
            found, bad, seen, held, cancels = runners[name].parse_all(item.value, key)
            # A marker, or (in a sweep) anything on a shard past the known width, is learned.
            seen = max(seen, self.reach.beyond.get(home_key(key), 0))
            if seen > self.reach.known[name] and learn(self.settings, shards[name][0].queue, seen):
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
        what no handler gets, what stays and what a newer payload superseded (see
        :mod:`.settling`)."""
        marked = {queues[home_key(key)] for key in self.cancels}
        marked.update(
            queues[home_key(key)]
            for key, read_ in parsed.items()
            if any(frame.meta for frame in read_.found)
        )
        now = now_ms()
        for name in marked:
            keys = [key for key in parsed if queues[home_key(key)] == name]
            found = {key: parsed[key].found for key in keys}
            cancels = {key: self.cancels[key] for key in keys if key in self.cancels}
            self.settled.update(settle(found, cancels, self.held, now))

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
            every = name in checking or self.reach.read[name] != self.reach.known[name]
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
        parsed, widened = self._parse(current, queues, shards, runners)
        self.settle(parsed, queues)
        self.learned = self.learned or bool(widened)
        if self.settings.counters and checking:
            # Not the signals found spread wider than read: their new shards' payloads
            # were not counted, and would read as lost (checked next time).
            due = {name: k for name, k in mine.items() if name not in widened}
            check = check_lost(conn, due, queues, current, parsed)
            self.outcomes.adopt(check.changes)
            self.outcomes.lost(check.losses)
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
                        part = ShardDelivery(
                            holder, runner, signal, shard.lock, key, current[key], at
                        )
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
        on, within its bound; those holding payloads past it are let go at once. A bounded
        delivery first moves its shard 0's excess to the other shards (see
        :meth:`_move_excess`)."""
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
        # Those holding payloads past the bound go at once, for other deliverers; empty ones
        # with the rest, at the end (no round trip more).
        holder.let_go(s.lock for s in own if s not in kept and sizes.get(s.queue))
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
        shards, widened as the backlog wants, when that is at least another delivery's worth
        and no cursor says a predecessor was under way there. The frames are appended there
        first, then acknowledged from shard 0 (a crash in between costs duplicates, never a
        loss); this delivery then reads shard 0 only up to what it will handle."""
        key, limit = shard.queue, self.budget.limit
        read_ = parsed.get(key)
        if read_ is None or limit is None or current.get(shard.cursor, Cached(b"", None)).value:
            return
        indexes = runnable(read_.found, self.held.get(key, ()), now_ms())
        if len(indexes) - left < limit:
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
