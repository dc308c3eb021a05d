"""The weak take: every due payload of many signals in one call, at most once, with its counts.

:func:`take` reads every queue key of every signal given (and, for the signals due for a lost
check, their counters), empties each of what is due now and returns what it took, key by key,
in mapping order. It keeps queued what is not due yet, what is held for a deliverer with
another key (see :mod:`.held`) and a spread signal's marker. Two implementations stand behind
it, and both leave the signals' counters the same: every payload taken is ``accounted``, and
``delivered``, ``expired`` or ``dropped`` as its parse says (a handler's failure is delivery's
to count).

- Over the memcache primitives: one read of every key with CAS tokens, then one CAS reset of
  the non-empty ones, the counter updates ahead of the resets in the same pipeline (so a
  reader never sees frames gone yet unaccounted). A payload is taken only if the reset of its
  key won, so none is taken twice and none lost to a race; keys whose reset lost are read and
  reset again a few times, and what was counted for them is taken back.
- Natively (:class:`~gaesignals.stores.NativeQueue`): one atomic script per server takes every
  key, counting whole frames as it goes; what the parse finds different (unreadable regions,
  payloads past their ttl, frames held for another key, which are appended back) is corrected.

The corrections not yet written come back in :attr:`WeakTaken.counts`, for the caller to
write in the same call as its own counts: the take costs no round trip of its own for them.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Collection, Mapping, Sequence, Sized
from typing import NamedTuple, Protocol

from .. import frames
from ..accounting import check_lost, flush_sent, lost_keys, read_order, tally, weak_counters
from ..accounting import take as pending
from ..config import Settings
from ..exceptions import GaeSignalsError, PartialFailure, StoreUnavailable
from ..keys import SignalKeys
from ..registration import SignalSpec
from ..stores import Cached, Connection, NativeQueue, TakeGroup, home_key, is_stranded
from .append import append_frames, widen
from .bounds import Quotas
from .spread import kept_marker, learn

logger = logging.getLogger("gaesignals")

#: Rounds of read + reset a generic take makes for keys whose reset lost a race.
WEAK_ROUNDS = 4

#: A key's payloads: verified frames, or the bare pickled bodies of the fast path.
Found = list[frames.Frame] | list[bytes]

#: A value's parse: its frames, unreadable regions, widest spread marker seen, and the frames
#: held for a deliverer that can read them (``Runner.parse_all``'s ``Read``).
Parse = tuple[list[frames.Frame], list[frames.BadRegion], int, list[frames.Frame]]


class Reader(Protocol):
    """How the deliverer reads one signal's queue values: it knows each signal's signer and
    ttl, and whether its payloads may go as bare pickled bodies."""

    def read(self, name: str, key: str, value: bytes) -> list[bytes] | Parse:
        """Bare bodies when every payload may go as such, else the value's parse."""
        ...

    def fresh(self, name: str, found: Found) -> Found:
        """``found`` without the payloads older than the signal's ttl."""
        ...

    def parse(self, name: str, key: str, value: bytes) -> Parse:
        """The value's parse, even where bare bodies would do (a bounded take cuts it)."""
        ...


class Layout(Protocol):
    """The keys a take reads: each signal's keys and queue keys (mapping order, then shard
    order), each queue key's signal and place, each spread signal's marker, the width each
    signal is known to have, and the keys a sweep reads past it (with the width a payload
    there shows)."""

    @property
    def keys(self) -> Mapping[str, SignalKeys]: ...
    @property
    def shards(self) -> Mapping[str, tuple[str, ...]]: ...
    @property
    def names(self) -> Mapping[str, str]: ...
    @property
    def order(self) -> Mapping[str, int]: ...
    @property
    def markers(self) -> Mapping[str, bytes]: ...
    @property
    def specs(self) -> Mapping[str, SignalSpec]: ...
    @property
    def widths(self) -> Mapping[str, int]: ...
    @property
    def beyond(self) -> Mapping[str, int]: ...


class TakenKey(NamedTuple):
    """What a take removed from one key: its signal, the payloads, the unreadable regions
    dropped, and the payloads within the signal's ttl (``fresh``, which go to the handlers)."""

    key: str
    name: str
    found: Found
    bad: list[frames.BadRegion]
    fresh: Found


class WeakTaken(NamedTuple):
    """A weak take's result."""

    #: Each key taken, in mapping order (round by round; a copy stranded on another server
    #: after its home key).
    taken: list[TakenKey]
    #: Each key taken that still holds something, and what: not due yet, held, a marker.
    kept: dict[str, bytes]
    #: Counter changes not written yet (corrections of what went ahead of the resets).
    counts: Counter[str]
    #: The signals found spread over more shards than read, and how wide: take them again.
    widened: dict[str, int]
    #: Why some keys were not taken (a server failed or timed out); raise it after the run.
    failure: StoreUnavailable | None


class _Waiting(NamedTuple):
    """What a key's take leaves queued: payloads not due yet and payloads held, with the value
    they were parsed from and where that value starts in the key's bytes."""

    later: list[frames.Frame]
    held: list[frames.Frame]
    value: bytes
    shift: int

    def before(self, at: int) -> _Waiting | None:
        """What waits before offset ``at`` (the rest of the value stays where it is)."""
        later = [frame for frame in self.later if frame.start < at]
        held = [frame for frame in self.held if frame.start < at]
        return _Waiting(later, held, self.value, self.shift) if later or held else None

    def raw(self) -> bytes:
        """The bytes of every frame kept, in queue order."""
        value, kept = self.value, self.later + self.held
        if self.held and self.later:
            kept.sort(key=lambda frame: frame.start)
        return b"".join(value[frame.start : frame.end] for frame in kept)


#: Each key read holding payloads: its signal, payloads and unreadable regions.
_Parsed = dict[str, tuple[str, Found, list[frames.BadRegion]]]


def take(
    conn: Connection,
    settings: Settings,
    layout: Layout,
    reader: Reader,
    *,
    checking: Collection[str] = (),
    now: int,
    limits: Mapping[str, int] | None = None,
) -> WeakTaken:
    """Take every payload due at ``now`` (Unix ms) from every queue key of ``layout``, at most
    once, counting it (when ``settings.counters``); the signals in ``checking`` get their
    lost check (see :func:`~gaesignals.accounting.check_lost`) from the same read.

    ``limits`` (each signal of ``layout``'s, or None for no bound) bounds how many payloads of
    each signal are taken: the oldest of each key, starting at a shard drawn for this take
    (:mod:`.bounds`); the rest stays queued, in order.

    Raises :class:`~gaesignals.StoreUnavailable` only when nothing was taken."""
    store = settings.store
    if checking:
        flush_sent(conn, store)  # sent counts this process still holds
    run = _Take(conn, settings, layout, reader, checking, now)
    if limits is not None:
        run.quotas = Quotas(limits, layout.shards)
    if store.native is not None:
        run.natively(store.native)
    else:
        run.in_rounds()
    return run.result()


class _Take:
    """One take's state: what it parsed, counted and took, and what stays queued."""

    def __init__(
        self,
        conn: Connection,
        settings: Settings,
        layout: Layout,
        reader: Reader,
        checking: Collection[str],
        now: int,
    ) -> None:
        self.conn = conn
        self.settings = settings
        self.layout = layout
        self.reader = reader
        self.checking = checking
        self.now = now
        self.counting = settings.counters
        self.counts: Counter[str] = Counter()
        self.taken: list[TakenKey] = []
        self.kept_back: dict[str, bytes] = {}
        self.failure: StoreUnavailable | None = None
        #: What each spread signal's own queue key holds once emptied: its marker.
        self.markers = dict(layout.markers)
        #: The signals found spread wider than read, and their width learned.
        self.widened: dict[str, int] = {}
        #: Each key's payloads that stay queued: not due yet, or held for another deliverer.
        self.waiting: dict[str, _Waiting] = {}
        #: A bounded take's quotas (None: every payload due is taken).
        self.quotas: Quotas | None = None
        #: In a bounded take: each key's value as parsed (past its marker), and what stays
        #: queued past the payloads a key may give (its rest, from its first payload left).
        self.values: dict[str, tuple[bytes, int]] = {}
        self.rests: dict[str, bytes] = {}
        #: Whether the store took natively: then what a bound leaves must be put back.
        self.native = False
        #: Whether a reset's answer never came: its counters may or may not have landed.
        self.unsure = False

    def result(self) -> WeakTaken:
        return WeakTaken(self.taken, self.kept_back, self.counts, self.widened, self.failure)

    # -- over the memcache primitives -------------------------------------------------------

    def in_rounds(self) -> None:
        conn, layout = self.conn, self.layout
        todo = list(layout.names)
        for first in (True, *[False] * (WEAK_ROUNDS - 1)):
            try:
                current = conn.scan_many(self._first_read() if first else todo)
            except StoreUnavailable as error:
                if first:
                    raise
                self.failure = error  # what earlier rounds took still goes to the handlers
                return
            parsed = self.parse(current)
            if first and self.checking:
                self.check_lost(current, parsed)
            if self.quotas is not None:
                self.rests = self.bound(parsed)
            if not parsed:
                return
            fresh = self.count(parsed)
            counters = pending(self.counts) if self.counting else {}
            won = self._reset(current, parsed, counters)
            # Counted, even when this round's counts cancelled an earlier round's take-back
            # and nothing went out; unless the reset's fate is unknown (counters cleared).
            self.keep(parsed, fresh, won, taken_back=self.counting and not self.unsure)
            if self.failure is not None:
                return
            todo = list(dict.fromkeys(home_key(key) for key in parsed if not won[key]))
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
        current: Mapping[str, Cached],
        parsed: _Parsed,
        counters: dict[str, int],
    ) -> dict[str, bool]:
        """Empty every key read non-empty if it is unchanged, with the counters ahead of the
        resets (see ``Connection.cas_many``); what a lost race changes is taken back after."""
        markers = self.markers
        resets = {
            key: Cached(markers.get(key, b"") + self.kept(key), current[key].token)
            for key in parsed
        }
        try:
            return self.conn.cas_many(resets, counters=counters or None)
        except PartialFailure as error:  # a cluster node failed: keep what was won
            self.failure = error
            for key in resets:
                if key not in error.results:  # its node took the reset, or did not
                    self._log_unanswered(key, len(parsed[key][1]), "got no answer")
            return {key: error.results.get(key) is True for key in resets}
        except StoreUnavailable as error:
            # Maybe applied later (a hung server): then those payloads are lost. The counters
            # may or may not have landed: left as they are, so lost detection can only
            # under-report; the log says how many payloads are at stake.
            self.failure = error
            self.unsure = True
            for key, (_, found, _) in parsed.items():
                self._log_unanswered(key, len(found), "timed out or failed")
            return dict.fromkeys(resets, False)

    def _log_unanswered(self, key: str, count: int, what: str) -> None:
        logger.error(
            "the reset of signal %r %s; if the cache applies it, its %d "
            "payload(s) read now are lost",
            self.layout.names[home_key(key)],
            what,
            count,
        )

    # -- native ------------------------------------------------------------------------------

    def natively(self, native: NativeQueue) -> None:
        """One atomic take of every key (and, for signals due, their lost-check counters); the
        store counted each key's whole frames into ``accounted`` and ``delivered`` as it took
        them, so what the parse finds different is corrected here."""
        layout, checking = self.layout, self.checking
        self.native = True
        groups = []
        for name, queues in layout.shards.items():
            keys = layout.keys[name]
            counters = (keys.counter("accounted"), keys.counter("delivered"))
            groups.append(
                TakeGroup(
                    queues,
                    counters if self.counting else None,
                    lost_keys(keys) if name in checking else (),
                    self.markers.get(keys.queue, b""),
                    *self._bound_of(name),
                )
            )
        taken = native.take_many(groups, self.now)
        self.failure = taken.failure
        current = {key: Cached(value, None) for key, value in (taken.read | taken.values).items()}
        parsed = self.parse(current)
        if checking:
            self.check_lost(current, parsed)
        if self.quotas is not None:
            self._cut_where_taken(parsed, taken.cut or {})
            self.rests = self.bound(parsed)  # past unreadable bytes: the script took them
        if self.widened:
            self._put_back_markers()
        if self.waiting or self.rests:
            self._put_back_waiting(taken.walked or {})
        if self.counting:
            for key, counted in taken.counted.items():
                accounted, _, _, delivered = weak_counters(layout.keys[layout.names[home_key(key)]])
                self.counts[accounted] -= counted
                self.counts[delivered] -= counted
        fresh = self.count(parsed)
        self.keep(parsed, fresh, dict.fromkeys(parsed, True), taken_back=False)

    def _bound_of(self, name: str) -> tuple[int, int]:
        """A native take's bound of signal ``name``: its quota (-1: none) and first shard."""
        quotas = self.quotas
        if quotas is None:
            return -1, 0
        return quotas.left[name], quotas.first[name]

    def _cut_where_taken(self, parsed: _Parsed, cuts: Mapping[str, int]) -> None:
        """Keep of each key the native take cut only the part it took: the rest is queued.
        (A key read for a lost check comes whole, for the check to count all it holds.)"""
        for key, at in cuts.items():
            entry = parsed.get(key)
            if entry is None:
                continue
            value, shift = self.values[key]
            if at - shift < len(value):
                self._cut(parsed, key, *self._frames(key, entry), at - shift)

    def _put_back_markers(self) -> None:
        """The take emptied the own key of a signal it did not know was spread, marker and
        all: write the marker back, so that other deliverers still find every shard."""
        queues = [self.layout.keys[name].queue for name in self.widened]
        markers = {queue: self.markers[queue] for queue in queues}
        try:
            append_frames(self.conn, self.settings.store, markers)
        except GaeSignalsError:
            logger.warning("could not write back spread markers", exc_info=True)

    def _put_back_waiting(self, walked: Mapping[str, int]) -> None:
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
        for key, rest in self.rests.items():  # past the quota, behind unreadable bytes
            lost[key] = lost.get(key, b"") + rest
        if lost:
            try:
                append_frames(self.conn, self.settings.store, lost)
            except GaeSignalsError:
                logger.error("could not put back payloads not due yet or held", exc_info=True)

    # -- shared by both ----------------------------------------------------------------------

    def kept(self, key: str) -> bytes:
        """The bytes of ``key``'s payloads not due yet or held, which its reset keeps."""
        kept = self.waiting.get(key)
        rest = self.rests.get(key, b"") if self.rests else b""
        return rest if kept is None else kept.raw() + rest

    def check_lost(self, current: Mapping[str, Cached], parsed: _Parsed) -> None:
        """The lost check of the signals due, but those found spread wider than read: their
        new shards' payloads were not counted, and would read as lost (checked next time).
        Payloads not due yet are still queued, and counted so."""
        layout, widened = self.layout, self.widened
        keys = {name: k for name, k in layout.keys.items() if name not in widened}
        queued: dict[str, tuple[Sized, Sequence[frames.BadRegion]]] = {
            key: (found, bad) for key, (_, found, bad) in parsed.items()
        }
        for key, kept in self.waiting.items():
            _, found, bad = parsed.get(key, ("", [], []))
            queued[key] = (range(len(found) + len(kept.later) + len(kept.held)), bad)
        self.counts.update(check_lost(self.conn, keys, layout.names, current, queued))

    def parse(self, current: Mapping[str, Cached]) -> _Parsed:
        """The payloads of every queue key read holding any, with its signal; a spread
        signal's marker at the head of its own key is skipped, a marker wider than this take
        reads is learned (the caller then takes again, with its new shards). What a key read
        again held back before is decided anew from what it holds now."""
        layout, markers, read = self.layout, self.markers, self.reader.read
        names = layout.names
        parsed: _Parsed = {}
        if self.waiting:  # a later round: another deliverer may have taken them since
            for key in current:
                self.waiting.pop(key, None)
        bounded = self.quotas is not None
        for key, item in current.items():
            value = item.value
            if not value:
                continue
            at = key if key in names else home_key(key)  # a stranded copy's key
            name = names.get(at)
            if name is None:
                continue
            if at in layout.beyond:  # a sweep found a shard past the known width in use
                self.learn(name, layout.beyond[at])
            marker = markers.get(key)
            if marker and value.startswith(marker):
                value = value[len(marker) :]
                if not value:
                    continue  # only the marker: nothing pending
            got = read(name, key, value)
            if bounded:
                self.values[key] = (value, len(item.value) - len(value))
            if isinstance(got, list):
                parsed[key] = (name, got, [])
                continue
            found, bad = self._due(key, name, got, value, len(item.value) - len(value))
            if found or bad:  # else only markers, or payloads not due yet or held
                parsed[key] = (name, found, bad)
        return parsed

    def _due(
        self, key: str, name: str, got: Parse, value: bytes, shift: int
    ) -> tuple[list[frames.Frame], list[frames.BadRegion]]:
        """A value's payloads due now and its unreadable regions; what waits is held, a wider
        spread learned."""
        found, bad, seen, held = got
        if seen > self.layout.widths[name]:
            self.learn(name, seen)
        if held or any(frame.meta for frame in found):
            found = self.hold(key, found, held, value, shift)
        return found, bad

    def _frames(
        self, key: str, entry: tuple[str, Found, list[frames.BadRegion]]
    ) -> tuple[str, list[frames.Frame], list[frames.BadRegion]]:
        """A parsed key's entry with frames, parsing its value again if it came as bodies."""
        name, found, bad = entry
        if not found or not isinstance(found[0], bytes):
            return name, found, bad  # type: ignore[return-value]  # frames, or nothing
        value, shift = self.values[key]
        again = self.reader.parse(name, key, value)
        return (name, *self._due(key, name, again, value, shift))

    def bound(self, parsed: _Parsed) -> dict[str, bytes]:
        """Cut each key of ``parsed`` to the payloads its signal's quota allows, the oldest;
        returns what stays queued of each key cut (see :attr:`rests`). A key that may give
        nothing and holds nothing unreadable before its first payload is dropped from
        ``parsed``: a generic take leaves it untouched (a native one took it: its rest goes
        back)."""
        assert self.quotas is not None
        sizes = {key: (name, len(found)) for key, (name, found, _) in parsed.items()}
        rests: dict[str, bytes] = {}
        for key, quota in self.quotas.allot(sizes).items():
            name, found, bad = self._frames(key, parsed[key])
            if quota >= len(found):
                parsed[key] = (name, found, bad)
                continue
            rest = self._cut(parsed, key, name, found, bad, found[quota].start)
            if key in parsed or self.native:
                rests[key] = rest
        return rests

    def _cut(
        self,
        parsed: _Parsed,
        key: str,
        name: str,
        found: list[frames.Frame],
        bad: list[frames.BadRegion],
        at: int,
    ) -> bytes:
        """Take of ``key`` only what comes before offset ``at`` of its value (dropping it from
        ``parsed`` when that is nothing); returns the rest, which stays queued."""
        found = [frame for frame in found if frame.start < at]
        bad = [region for region in bad if region.start < at]
        kept = self.waiting.pop(key, None)
        waiting = None if kept is None else kept.before(at)
        if waiting is not None:
            self.waiting[key] = waiting
        if found or bad or waiting is not None:
            parsed[key] = (name, found, bad)
        else:
            del parsed[key]
        return self.values[key][0][at:]

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
            self.waiting[key] = _Waiting(later, held, value, shift)
        return due

    def learn(self, name: str, seen: int) -> None:
        """``name`` spreads over ``seen`` shards: keep its marker when emptying its own key."""
        settings, queue = self.settings, self.layout.keys[name].queue
        learn(settings, queue, seen)
        self.widened[name] = seen
        self.markers[queue] = kept_marker(settings, queue, self.layout.specs[name].shards)

    def count(self, parsed: _Parsed) -> dict[str, Found]:
        """Each key's payloads within their ttl, counted as if every take wins."""
        keys, bumps, fresh_of = self.layout.keys, self.counts, self.reader.fresh
        fresh: dict[str, Found] = {}
        for key, (name, found, bad) in parsed.items():
            fresh[key] = kept = fresh_of(name, found)
            if not self.counting:
                continue
            if bad or len(kept) != len(found):
                tally(bumps, keys[name], found, bad, kept, 1)
            else:  # the usual case, inline: every frame read is (so far) delivered
                accounted, _, _, delivered = weak_counters(keys[name])
                bumps[accounted] = bumps.get(accounted, 0) + len(found)
                bumps[delivered] = bumps.get(delivered, 0) + len(found)
        return fresh

    def keep(
        self,
        parsed: _Parsed,
        fresh: Mapping[str, Found],
        won: Mapping[str, bool],
        *,
        taken_back: bool,
    ) -> None:
        """Note what this round took, in mapping order (the read's, for keys at home; a copy
        stranded on another server is older than the home copy). What was counted for a key
        whose take lost is taken back (``taken_back``: those counts went out)."""
        layout = self.layout
        if not layout.order.keys() >= parsed.keys():  # a stranded copy among them
            order = layout.order
            ordered = sorted(parsed, key=lambda k: (order[home_key(k)], not is_stranded(k)))
        else:  # a store may answer in any order
            ordered = [key for key in layout.names if key in parsed]
        for key in ordered:
            name, found, bad = parsed[key]
            if won[key]:
                self.taken.append(TakenKey(key, name, found, bad, fresh[key]))
                if key in self.markers or key in self.waiting or key in self.rests:
                    self.kept_back[key] = self.markers.get(key, b"") + self.kept(key)
                if self.quotas is not None:
                    self.quotas.spend(((name, len(found)),))
            elif taken_back:
                tally(self.counts, layout.keys[name], found, bad, fresh[key], -1)
