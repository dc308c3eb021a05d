"""Weak delivery: every pending payload of every signal taken in two batched calls, at most once.

Over the memcache primitives: one read of all keys with CAS tokens, one CAS reset of the
non-empty ones with the counter updates ahead of the resets in the same pipeline (and, at most
once per ``lost_check_interval`` per process, three counters per signal in the read, see
:func:`~gaesignals.accounting.check_lost`). A payload goes to the handlers only if the reset of
its key won, so no payload is delivered twice and none is lost to a race; keys that lost a race
are read and reset again a few times within the call. A store with native queue operations
takes every key in one atomic call instead, counting as it takes. At most once: a handler that
raises, or a process that dies after the take, loses those payloads.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Collection, Mapping, Sequence, Sized
from typing import NamedTuple

from .. import frames, tracing
from ..accounting import check_lost, flush, flush_sent, lost_keys, read_order, schedule, take, tally
from ..config import Settings
from ..exceptions import GaeSignalsError, PartialFailure, StoreUnavailable
from ..keys import located
from ..mapping import SignalMapping
from ..queue.append import append_frames, widen
from ..queue.spread import home_value, learn
from ..registration import SignalSpec
from ..stores import Connection, NativeQueue, TakeGroup
from ..timing import now_ms
from .plan import Layout, plan_of
from .runner import Found

logger = logging.getLogger("gaesignals")

#: Rounds of read + reset a weak delivery makes for keys whose reset lost a race.
WEAK_ROUNDS = 4

#: Each key read: its payloads (frames or bare pickled bodies) and its unreadable regions.
Parsed = dict[str, tuple[Found, list[frames.BadRegion]]]


class _Kept(NamedTuple):
    """What a key's take leaves queued, and the value (and how far into the key's bytes it
    starts) its frames were parsed from."""

    #: Payloads not due yet: a native take keeps them itself (up to its walk's reach).
    later: list[frames.Frame]
    #: Payloads held for a deliverer that can read them (see :mod:`..queue.held`): a native
    #: take removes them, and they are appended back.
    held: list[frames.Frame]
    value: bytes
    shift: int

    def raw(self) -> bytes:
        """The bytes of every frame kept, in queue order."""
        value, kept = self.value, self.later + self.held
        if self.held and self.later:
            kept.sort(key=lambda frame: frame.start)
        return b"".join(value[frame.start : frame.end] for frame in kept)


def deliver_weak(
    signals: SignalMapping, settings: Settings, specs: Mapping[str, SignalSpec]
) -> int:
    """Deliver ``signals`` weakly; returns how many payloads every handler took.

    A delivery that finds a signal spread over more shards than it read takes again at once,
    with the new shards: a delivery that returns 0 found nothing pending anywhere."""
    delivered, learned = _deliver_weak(signals, settings, specs)
    if learned:
        delivered += _deliver_weak(signals, settings, specs)[0]
    return delivered


def _deliver_weak(
    signals: SignalMapping, settings: Settings, specs: Mapping[str, SignalSpec]
) -> tuple[int, bool]:
    plan = plan_of(signals)
    layout = plan.layout(settings, specs)
    for timed in layout.timed:
        timed.restart()
    checking = schedule.due(signals, settings, plan.quiet)
    run = _WeakRun(layout, settings, checking)
    store = settings.store
    with store.connection() as conn:
        if checking:
            flush_sent(conn, store)  # sent counts this process still holds
        try:
            if store.native is not None:
                run.take_natively(conn, store.native)
            else:
                run.take_in_rounds(conn)
        finally:
            if settings.counters:
                flush(conn, run.bumps, quietly=True)
    if run.failure is not None:
        raise run.failure
    return run.delivered, bool(run.spread)


class _WeakRun:
    """One weak delivery's state: what it counted, delivered, and the failure to raise."""

    def __init__(self, layout: Layout, settings: Settings, checking: Collection[str]) -> None:
        self.layout = layout
        self.settings = settings
        self.checking = checking
        self.counting = settings.counters
        self.bumps: Counter[str] = Counter()
        self.delivered = 0
        self.failure: StoreUnavailable | None = None
        #: What each spread signal's own queue key holds once emptied: its marker.
        self.homes = dict(layout.homes)
        #: The signals found spread wider than this delivery reads them, and how wide.
        self.spread: dict[str, int] = {}
        #: When this delivery decides what is due (Unix ms), once for all keys.
        self.now = now_ms()
        #: Each key's payloads that stay queued: not due yet, or held for another deliverer.
        self.waiting: dict[str, _Kept] = {}
        #: Whether payloads are traced or measured: then each needs its frame, never the bare
        #: pickled bodies of the fast path.
        self.observed = tracing.active()

    # -- over the memcache primitives -------------------------------------------------------

    def take_in_rounds(self, conn: Connection) -> None:
        layout = self.layout
        todo = list(layout.names)
        for first in (True, *[False] * (WEAK_ROUNDS - 1)):
            current = conn.scan_many(self._first_read() if first else todo)
            parsed, owners = self.parse(current)
            if first and self.checking:
                self.check_lost(conn, current, parsed)
            if not parsed:
                return
            fresh = self.count(parsed, owners)
            counters = take(self.bumps) if self.counting else {}
            won = self._reset(conn, current, parsed, counters)
            self.run(parsed, owners, fresh, won, taken_back=bool(counters))
            if self.failure is not None:
                return
            todo = list(dict.fromkeys(located(key) for key in parsed if not won[key]))
            if not todo:
                return
        # Normal under heavy sending: nothing is lost, the next delivery takes them. The
        # appends keep winning over the resets there: spread those signals over more keys.
        logger.info("%d signal key(s) stayed contended; left for the next delivery", len(todo))
        for name in dict.fromkeys(layout.names[key] for key in todo):
            widen(conn, self.settings, layout.shards[name][: layout.widths[name]])

    def _first_read(self) -> list[str]:
        """Every queue key, with each signal due for a lost check's counters around its own."""
        layout, checking = self.layout, self.checking
        if not checking:
            return list(layout.names)
        return [
            key
            for name, queues in layout.shards.items()
            for key in (read_order(layout.keys[name], queues) if name in checking else queues)
        ]

    def _reset(
        self,
        conn: Connection,
        current: Mapping[str, tuple[bytes, object]],
        parsed: Parsed,
        counters: dict[str, int],
    ) -> dict[str, bool]:
        """Empty every key read non-empty if it is unchanged, with the counters ahead of the
        resets (see ``Connection.cas_many``), so a reader never sees frames gone yet
        unaccounted; what a lost race or a failing handler changes is corrected afterwards."""
        homes = self.homes
        taken = {key: (homes.get(key, b"") + self.kept(key), current[key][1]) for key in parsed}
        try:
            return conn.cas_many(taken, counters=counters or None)
        except PartialFailure as error:  # a cluster node failed: keep what was won
            self.failure = error
            for key in taken:
                if key not in error.results:  # its node took the reset, or did not
                    self._log_unanswered(key, len(parsed[key][0]), "got no answer")
            return {key: error.results.get(key) is True for key in taken}
        except StoreUnavailable as error:
            # Maybe applied later (a hung server): then those payloads are lost. The counters
            # may or may not have landed: left as they are, so lost detection can only
            # under-report; the log says how many payloads are at stake.
            self.failure = error
            counters.clear()
            for key, (found, _) in parsed.items():
                self._log_unanswered(key, len(found), "timed out or failed")
            return dict.fromkeys(taken, False)

    def _log_unanswered(self, key: str, count: int, what: str) -> None:
        logger.error(
            "the reset of signal %r %s; if the cache applies it, its %d "
            "payload(s) read now are lost",
            self.layout.names[located(key)],
            what,
            count,
        )

    # -- native ------------------------------------------------------------------------------

    def take_natively(self, conn: Connection, native: NativeQueue) -> None:
        """One atomic take of every key (and, for signals due, their lost-check counters); the
        store counted each key's frames into ``accounted`` and ``delivered`` as it took them,
        so only what Python's parse finds different (bad regions, expired, failed) is
        corrected afterwards."""
        layout, checking = self.layout, self.checking
        groups = []
        for name, queues in layout.shards.items():
            keys = layout.keys[name]
            counters = (keys.counter("accounted"), keys.counter("delivered"))
            groups.append(
                TakeGroup(
                    queues,
                    counters if self.counting else None,
                    lost_keys(keys) if name in checking else (),
                    self.homes.get(keys.queue, b""),
                )
            )
        taken = native.take_many(groups, self.now)
        self.failure = taken.failure
        current = {key: (value, None) for key, value in (taken.read | taken.values).items()}
        parsed, owners = self.parse(current)
        if self.spread:
            self.put_back_markers(conn)
        if self.waiting:
            self.put_back_waiting(conn, taken.walked or {})
        if checking:
            self.check_lost(conn, current, parsed)
        fresh = self.count(parsed, owners)
        if self.counting:
            for key, frames_counted in taken.counted.items():
                owner = layout.names[located(key)]  # owners lacks a key holding only markers
                accounted, _, _, delivered = layout.runners[owner].weak_counters
                self.bumps[accounted] -= frames_counted
                self.bumps[delivered] -= frames_counted
        self.run(parsed, owners, fresh, dict.fromkeys(parsed, True), taken_back=False)

    def put_back_markers(self, conn: Connection) -> None:
        """The take emptied the own key of a signal it did not know was spread, marker and
        all: write the marker back, so that other deliverers still find every shard."""
        queues = [self.layout.keys[name].queue for name in self.spread]
        homes = {queue: self.homes[queue] for queue in queues}
        try:
            append_frames(conn, self.settings.store, homes)
        except GaeSignalsError:
            logger.warning("could not write back spread markers", exc_info=True)

    def put_back_waiting(self, conn: Connection, walked: Mapping[str, int]) -> None:
        """The store keeps the payloads not due yet that its walk of whole frames reached;
        those past garbage it could not walk, and the held ones it took, are appended back."""
        now, lost = self.now, {}
        for key, kept in self.waiting.items():
            reach = walked.get(key)  # None: walked to its end
            shift = kept.shift
            past = [f for f in kept.later if reach is not None and f.start + shift >= reach]
            past += [  # held ones the store did not keep as not due (see frames.not_before)
                f
                for f in kept.held
                if (reach is not None and f.start + shift >= reach)
                or not (f.meta and frames.not_before(f) > now)
            ]
            if past:
                past.sort(key=lambda frame: frame.start)
                lost[key] = b"".join(kept.value[f.start : f.end] for f in past)
        if lost:
            try:
                append_frames(conn, self.settings.store, lost)
            except GaeSignalsError:
                logger.error("could not put back payloads not due yet or held", exc_info=True)

    # -- shared by both ----------------------------------------------------------------------

    def kept(self, key: str) -> bytes:
        """The bytes of ``key``'s payloads not due yet or held, which its reset keeps."""
        kept = self.waiting.get(key)
        return b"" if kept is None else kept.raw()

    def check_lost(
        self, conn: Connection, current: Mapping[str, tuple[bytes, object]], parsed: Parsed
    ) -> None:
        """The lost check of the signals due, but those found spread wider than read: their
        new shards' payloads were not counted, and would read as lost (checked next time).
        Payloads not due yet are still queued, and counted so."""
        layout, spread = self.layout, self.spread
        keys = {name: k for name, k in layout.keys.items() if name not in spread}
        queued: dict[str, tuple[Sized, Sequence[frames.BadRegion]]] = dict(parsed)
        for key, kept in self.waiting.items():
            found, bad = parsed.get(key, ((), []))
            queued[key] = (range(len(found) + len(kept.later) + len(kept.held)), bad)
        check_lost(conn, keys, layout.names, current, queued, self.bumps)
        schedule.checked([name for name in self.checking if name not in spread], self.settings)

    def parse(self, current: Mapping[str, tuple[bytes, object]]) -> tuple[Parsed, dict[str, str]]:
        """The payloads of every queue key read holding any, and each such key's signal; a
        spread signal's marker at the head of its own key is skipped, a marker wider than
        this delivery reads is learned (the delivery then takes again, with its new shards).
        What a key read again held back before is decided anew from what it holds now."""
        layout, homes = self.layout, self.homes
        names, runners = layout.names, layout.runners
        secret_keys = self.settings.secret_keys
        bodies_of = frames.pickled_bodies
        bare = not self.observed  # traced or measured: every payload needs its frame
        parsed: Parsed = {}
        owners: dict[str, str] = {}  # each key read (home or stranded) -> its signal
        if self.waiting:  # a later round: another deliverer may have taken them since
            for key in current:
                self.waiting.pop(key, None)
        for key, item in current.items():
            value = item[0]
            if not value:
                continue
            at = key if " " not in key else located(key)
            owner = names.get(at)
            if owner is None:
                continue
            if at in layout.beyond:  # a sweep found a shard past the known width in use
                self.learn(owner, layout.beyond[at])
            home = homes.get(key)
            if home and value.startswith(home):
                value = value[len(home) :]
                if not value:
                    continue  # only the marker: nothing pending
            runner = runners[owner]
            # the frame walker's bodies mode first: it runs for every key of every delivery
            bodies = bodies_of(value, runner.signer, secret_keys) if runner.quick and bare else None
            if bodies is not None:
                parsed[key] = (bodies, [])
            else:
                found, bad, seen, held = runner.parse_all(value, key)
                if seen > layout.widths[owner]:
                    self.learn(owner, seen)
                if held or any(frame.meta for frame in found):
                    found = self.hold(key, found, held, value, len(item[0]) - len(value))
                if not found and not bad:
                    continue  # only markers, or payloads not due yet or held
                parsed[key] = (found, bad)
            owners[key] = owner
        return parsed, owners

    def hold(
        self,
        key: str,
        found: list[frames.Frame],
        held: list[frames.Frame],
        value: bytes,
        shift: int,
    ) -> list[frames.Frame]:
        """The payloads of ``found`` due now; the others, and ``held``, wait (see
        :attr:`waiting`)."""
        now = self.now
        due: list[frames.Frame] = []
        later: list[frames.Frame] = []
        for frame in found:
            (later if frame.meta and frames.not_before(frame) > now else due).append(frame)
        if later or held:
            self.waiting[key] = _Kept(later, held, value, shift)
        return due

    def learn(self, name: str, seen: int) -> None:
        """``name`` spreads over ``seen`` shards: keep its marker when emptying its own key."""
        settings, keys = self.settings, self.layout.keys[name]
        learn(settings, keys.queue, seen)
        self.spread[name] = seen
        self.homes[keys.queue] = home_value(settings, keys.queue, self.layout.specs[name].shards)

    def count(self, parsed: Parsed, owners: Mapping[str, str]) -> dict[str, Found]:
        """Each key's payloads within their ttl, counted as if every take wins."""
        runners, keys, bumps = self.layout.runners, self.layout.keys, self.bumps
        fresh: dict[str, Found] = {}
        for key, (found, bad) in parsed.items():
            name = owners[key]
            runner = runners[name]
            fresh[key] = kept = found if runner.ttl is None else runner.within_ttl(found)
            if not self.counting:
                continue
            if bad or len(kept) != len(found):
                tally(bumps, keys[name], found, bad, kept, 1)
            else:  # the usual case, inline: every frame read is (so far) delivered
                accounted, _, _, delivered = runner.weak_counters
                bumps[accounted] = bumps.get(accounted, 0) + len(found)
                bumps[delivered] = bumps.get(delivered, 0) + len(found)
        return fresh

    def run(
        self,
        parsed: Parsed,
        owners: Mapping[str, str],
        fresh: Mapping[str, Found],
        won: Mapping[str, bool],
        *,
        taken_back: bool,
    ) -> None:
        """Run the handlers on what was taken, in mapping order (the read's, for keys at home;
        a copy stranded on another server is older than the home copy). What was counted for
        a key whose take lost is taken back (``taken_back``: those counts went out)."""
        layout = self.layout
        if any(" " in key for key in parsed):
            order = layout.order
            ordered = sorted(parsed, key=lambda k: (order[located(k)], " " not in k))
        else:  # a store may answer in any order
            ordered = [key for key in layout.names if key in parsed]
        for key in ordered:
            found, bad = parsed[key]
            name = owners[key]
            if not won[key]:
                if taken_back:
                    tally(self.bumps, layout.keys[name], found, bad, fresh[key], -1)
                continue
            runner = layout.runners[name]
            kept = fresh[key]
            if len(kept) != len(found):
                runner.log_expired(len(found) - len(kept))
            if runner.single and kept and isinstance(kept[0], bytes):
                ok, failed = runner.drain_bodies(kept)  # runner.drain, one call less
            else:
                ok, failed = runner.drain(kept)
            self.delivered += ok
            if failed and self.counting:
                signal = layout.keys[name]
                self.bumps[signal.counter("delivered")] -= failed
                self.bumps[signal.counter("failed")] += failed
            if self.observed:
                self.measure(name, ok, failed, len(found) - len(kept), frames.dropped(bad))

    def measure(self, name: str, delivered: int, failed: int, expired: int, dropped: int) -> None:
        """What became of one key's payloads, to the metrics (:mod:`..tracing`)."""
        tracing.count(tracing.DELIVERED, name, delivered)
        tracing.count(tracing.FAILED, name, failed)
        tracing.count(tracing.EXPIRED, name, expired)
        tracing.count(tracing.DROPPED, name, dropped)
