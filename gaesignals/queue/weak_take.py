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

Either way, a signal whose keys hold cancellations or coalesced payloads gets
:func:`.collapse.collapse` over all its keys read: what it supersedes or cancels leaves
counted ``coalesced`` or ``cancelled``, not delivered, and what it keeps (a debounced run not
due, the cancellation of a payload not due) stays queued: in the reset's value, or appended
back after a native take (one more round trip, only while such frames wait). A delivery with
neither pays nothing for it: the check rides on the test for metadata the take makes anyway.

The corrections not yet written come back in :attr:`WeakTaken.counts`, for the caller to
write in the same call as its own counts: the take costs no round trip of its own for them.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Collection, Mapping, Sequence, Sized
from typing import NamedTuple, Protocol, cast

from .. import frames
from ..accounting import (
    Loss,
    check_lost,
    flush_sent,
    lost_keys,
    pop_changes,
    read_order,
    tally,
    weak_counters,
)
from ..config import Settings
from ..exceptions import GaeSignalsError, PartialFailure, StoreUnavailable
from ..keys import SignalKeys
from ..registration import SignalSpec
from ..stores import Cached, Connection, NativeQueue, TakeGroup, Taken, home_key, is_stranded
from .append import append_frames, widen
from .bounds import Quotas, frames_from, head_of
from .collapse import Collapsed, collapse
from .spread import kept_markers, learn

logger = logging.getLogger("gaesignals")

#: Rounds of read + reset a generic take makes for keys whose reset lost a race.
WEAK_ROUNDS = 4

#: A key's payloads: verified frames, or the bare pickled bodies of the fast path.
Found = list[frames.Frame] | list[bytes]

#: A value's parse: its frames, unreadable regions, widest spread marker seen, the frames
#: held for a deliverer that can read them and its cancellations (``Runner.parse_all``'s
#: ``Read``).
Parse = tuple[
    list[frames.Frame], list[frames.BadRegion], int, list[frames.Frame], list[frames.Frame]
]


class Reader(Protocol):
    """How the deliverer reads one signal's queue values: it knows each signal's signer and
    ttl, and whether its payloads may go as bare pickled bodies."""

    def read(self, name: str, key: str, value: bytes) -> list[bytes] | Parse:
        """Bare bodies when every payload may go as such (never for a signal with a ttl: bare
        bodies are not cut at it), else the value's parse."""
        ...

    def within_ttl(self, name: str, found: Found) -> Found:
        """``found`` without the payloads older than the signal's ttl."""
        ...

    def parse(self, name: str, key: str, value: bytes) -> Parse:
        """The value's parse, even where bare bodies would do (a bounded take cuts it; a
        cancellation elsewhere in the signal may name one of its payloads)."""
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
    dropped, the payloads within the signal's ttl (``within_ttl``, which go to the
    handlers), and how many of the payloads were coalesced or cancelled (see
    :mod:`.collapse`)."""

    key: str
    name: str
    found: Found
    bad: list[frames.BadRegion]
    within_ttl: Found
    coalesced: int = 0
    cancelled: int = 0


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
    #: What the lost check found newly gone, by signal (already in its ``lost`` counter): the
    #: caller reports it as the ``lost`` outcome.
    losses: dict[str, Loss]


class _Waiting(NamedTuple):
    """What a key's take leaves queued: payloads not due yet and payloads held, with the value
    they were parsed from and where that value starts in the key's bytes; and the frames read
    as due that stay (``back``: a debounced run's, cancellations of payloads not due; see
    :mod:`.collapse`), which a native take appends back."""

    later: list[frames.Frame]
    held: list[frames.Frame]
    value: bytes
    shift: int
    back: tuple[frames.Frame, ...] = ()

    def before(self, at: int) -> _Waiting | None:
        """What waits before offset ``at`` (the rest of the value stays where it is)."""
        later = [frame for frame in self.later if frame.start < at]
        held = [frame for frame in self.held if frame.start < at]
        return _Waiting(later, held, self.value, self.shift) if later or held else None

    def raw(self) -> bytes:
        """The bytes of every frame kept, in queue order."""
        value, kept = self.value, [*self.later, *self.held, *self.back]
        if len(kept) > max(len(self.later), len(self.held), len(self.back)):
            kept.sort(key=lambda frame: frame.start)
        return b"".join(value[frame.start : frame.end] for frame in kept)


#: Each key read holding payloads: its signal, payloads, unreadable regions, and the payloads
#: within the signal's ttl.
_Parsed = dict[str, tuple[str, Found, list[frames.BadRegion], Found]]


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
        self.losses: dict[str, Loss] = {}
        #: What each spread signal's own queue key holds once emptied: its marker.
        self.markers = dict(layout.markers)
        #: The signals found spread wider than read, and their width learned.
        self.widened: dict[str, int] = {}
        #: Each key's payloads that stay queued: not due yet, or held for another deliverer.
        self.waiting: dict[str, _Waiting] = {}
        #: The signals whose keys hold cancellations or coalesced payloads: each such key's
        #: cancellations, value and shift (see :meth:`collapse`).
        self.marked: dict[str, dict[str, tuple[list[frames.Frame], bytes, int]]] = {}
        #: Each key's payloads coalesced and cancelled, as :meth:`collapse` decided.
        self.collapsed: dict[str, tuple[int, int]] = {}
        #: A bounded take's quotas (None: every payload due is taken).
        self.quotas: Quotas | None = None
        #: In a bounded take: each key's value as parsed (past its marker), and what stays
        #: queued past the payloads a key may give (its rest, from its first payload left).
        self.values: dict[str, tuple[bytes, int]] = {}
        self.rests: dict[str, bytes] = {}
        #: In a generic bounded take: where each key long enough to need it was cut before
        #: its parse (see :func:`.bounds.head_of`).
        self.heads: dict[str, int] = {}
        #: In a bounded take with a lost check: how many payload frames each key cut holds
        #: past the part parsed (counted by their headers, see :func:`.bounds.frames_from`).
        self.tails: dict[str, int] = {}
        #: Whether the store took natively: then what a bound leaves must be put back.
        self.native = False
        #: In a bounded native take: the rungs' first shards (anchors) taken with their signal.
        self.anchors: list[str] = []
        #: Whether a reset's answer never came: its counters may or may not have landed.
        self.unsure = False

    def result(self) -> WeakTaken:
        return WeakTaken(
            self.taken, self.kept_back, self.counts, self.widened, self.failure, self.losses
        )

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
            if self.marked:
                self.collapse(parsed, current)
            if not parsed:
                return
            self.count(parsed)
            counters = pop_changes(self.counts) if self.counting else {}
            won = self._reset(current, parsed, counters)
            # Counted, even when this round's counts cancelled an earlier round's take-back
            # and nothing went out; unless the reset's fate is unknown.
            self.keep(parsed, won, taken_back=self.counting and not self.unsure)
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
        markers, kept = self.markers, self.kept if self.waiting or self.rests else None
        resets = {
            key: Cached(markers.get(key, b"") + (kept(key) if kept else b""), current[key].token)
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
            for key, (_, found, *_) in parsed.items():
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
        markers = self.markers
        for name, queues in layout.shards.items():
            keys = layout.keys[name]
            counters = (keys.counter("accounted"), keys.counter("delivered"))
            bumped = counters if self.counting else None
            # A group keeps the marker in its first queue: each anchor is a group of its own,
            # but for a bounded take, whose quota is the signal's (its anchors' markers are
            # put back once the take emptied them, see _put_back_anchors).
            anchored = [q for q in queues[1:] if q in markers]
            if self.quotas is not None:
                self.anchors += anchored
                anchored = []
            groups.append(
                TakeGroup(
                    tuple(q for q in queues if q not in anchored) if anchored else queues,
                    bumped,
                    lost_keys(keys) if name in checking else (),
                    markers.get(keys.queue, b""),
                    *self._bound_of(name),
                )
            )
            groups += [TakeGroup((q,), bumped, (), markers[q]) for q in anchored]
        taken = native.take_many(groups, self.now)
        self.failure = taken.failure
        values = self._counted_tails(taken.values, taken.cut) if taken.cut else taken.values
        current = {key: Cached(value, None) for key, value in (taken.read | values).items()}
        parsed = self.parse(current)
        if checking:
            self.check_lost(current, parsed)
        if self.quotas is not None:
            self._cut_where_taken(parsed, taken.cut or {})
            if self.anchors:
                self._put_back_anchors(taken)
            self.rests = self.bound(parsed)  # past unreadable bytes: the script took them
        if self.marked:
            self.collapse(parsed, current)
        if self.widened:
            self._put_back_markers()
        if self.waiting or self.rests:
            self._put_back_waiting(taken.walked or {})
        if self.counting:
            for key, counted in taken.counted.items():
                signal = layout.keys[layout.names[home_key(key)]]
                accounted, _, _, delivered = weak_counters(signal.counters)
                self.counts[accounted] -= counted
                self.counts[delivered] -= counted
        self.count(parsed)
        self.keep(parsed, dict.fromkeys(parsed, True), taken_back=False)

    def _bound_of(self, name: str) -> tuple[int, int]:
        """A native take's bound of signal ``name``: its quota (-1: none) and first shard."""
        quotas = self.quotas
        if quotas is None:
            return -1, 0
        return quotas.left[name], quotas.first[name]

    def _counted_tails(self, values: dict[str, bytes], cuts: Mapping[str, int]) -> dict[str, bytes]:
        """Each value the native take gave whole (for a lost check) but cut, cut where the
        store cut it, with what follows counted by headers (see :attr:`tails`)."""
        values = dict(values)
        for key, at in cuts.items():
            whole = values.get(key)
            if whole is None or at >= len(whole):
                continue
            tail = frames_from(whole, at)
            if tail is not None:
                self.tails[key] = tail
                values[key] = whole[:at]
        return values

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

    def _put_back_anchors(self, taken: Taken) -> None:
        """A bounded native take reads a wide signal's anchors with its other shards, under
        its one quota, so the store kept no marker in those it emptied: append it back there
        (sweeps find the signal's rungs by them)."""
        cut = taken.cut or {}
        emptied = {q: self.markers[q] for q in self.anchors if q in taken.values and q not in cut}
        if not emptied:
            return
        try:
            append_frames(self.conn, self.settings.store, emptied)
        except GaeSignalsError:
            logger.warning("could not write back spread markers", exc_info=True)

    def _put_back_markers(self) -> None:
        """The take emptied the own key (and anchors) of a signal it did not know was spread,
        marker and all: write the marker back, so that other deliverers still find every
        shard."""
        names, markers = self.layout.names, self.markers
        markers = {key: markers[key] for key in markers if names.get(key) in self.widened}
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
            past += kept.back  # read as due, so the store took them
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
            key: (found, bad) for key, (_, found, bad, _) in parsed.items()
        }
        for key, kept in self.waiting.items():
            _, found, bad, _ = parsed.get(key, ("", [], [], []))
            back = sum(not frame.flags & frames.FLAG_CANCEL for frame in kept.back)
            queued[key] = (range(len(found) + len(kept.later) + len(kept.held) + back), bad)
        for key, tail in self.tails.items():  # a bounded take parsed only its part
            some, regions = queued.get(key, ((), ()))
            queued[key] = (range(len(some) + tail), regions)
        check = check_lost(self.conn, keys, layout.names, current, queued)
        self.counts.update(check.changes)
        self.losses = check.losses

    def parse(self, current: Mapping[str, Cached]) -> _Parsed:
        """The payloads of every queue key read holding any, with its signal; a spread
        signal's marker at the head of its own key is skipped, a marker wider than this take
        reads is learned (the caller then takes again, with its new shards). What a key read
        again held back before is decided anew from what it holds now."""
        layout, markers = self.layout, self.markers
        read, within_ttl = self.reader.read, self.reader.within_ttl
        names = layout.names
        parsed: _Parsed = {}
        if self.waiting or self.marked:  # a later round: decided anew from what is read now
            for key in current:
                self.waiting.pop(key, None)
            self.marked.clear()
            self.collapsed.clear()
        quotas = self.quotas
        heads = self.heads
        if heads:
            heads.clear()
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
            if quotas is None or self.native:  # (a native take's store cut it already)
                if quotas is not None:
                    self.values[key] = (value, len(item.value) - len(value))
                got = read(name, key, value)
            else:
                self.values[key] = (value, len(item.value) - len(value))
                value, got = self._read_part(key, name, value, quotas.left[name])
            if isinstance(got, list):
                parsed[key] = (name, got, [], got)
                continue
            found, bad, cancels = self._due(key, name, got, value, len(item.value) - len(value))
            if found or bad or cancels:  # else only markers, or payloads not due yet or held
                parsed[key] = (name, found, bad, within_ttl(name, found))
        return parsed

    def note(
        self, name: str, key: str, cancels: list[frames.Frame], value: bytes, shift: int
    ) -> None:
        """``key`` of ``name`` holds cancellations or payloads with metadata (which may be
        coalesced): :meth:`collapse` looks at the signal's keys once all are parsed."""
        self.marked.setdefault(name, {})[key] = (cancels, value, shift)

    def collapse(self, parsed: _Parsed, current: Mapping[str, Cached]) -> None:
        """Apply cancellations, coalescing and debounce (:func:`.collapse.collapse`) to each
        marked signal's keys, across all its keys read: what stays is kept as waiting, the
        payloads coalesced or cancelled leave uncounted as delivered."""
        for name, marked in self.marked.items():
            due = {key: got[1] for key, got in parsed.items() if got[0] == name}
            if not any(key in marked for key in due):
                continue
            if any(cancels for cancels, _, _ in marked.values()):
                self.unbare(name, parsed, current)  # a payload moved from its shard is found
                due = {key: got[1] for key, got in parsed.items() if got[0] == name}
            frames_only = {k: f for k, f in due.items() if not f or isinstance(f[0], frames.Frame)}
            waiting = {key: self.waiting[key].later for key in marked if key in self.waiting}
            cancels = {key: marked[key][0] for key in marked if marked[key][0]}
            decided = collapse(
                cast(Mapping[str, list[frames.Frame]], frames_only), waiting, cancels, self.now
            )
            for key, deliver in decided.deliver.items():
                self.settle(name, key, parsed, deliver, decided, marked.get(key))

    def unbare(self, name: str, parsed: _Parsed, current: Mapping[str, Cached]) -> None:
        """Parse again, as frames, the keys of ``name`` read as bare bodies (plain payloads
        only: nothing in them is delayed, held or coalesced), for their ids."""
        for key, (owner, found, _, _) in list(parsed.items()):
            if owner != name or not found or not isinstance(found[0], bytes):
                continue
            if key in self.values:  # a bounded take: its part, as the bound cut it
                _, again, bad = self._frames(key, parsed[key])
                parsed[key] = (name, again, bad, again)
                continue
            value = current[key].value
            marker = self.markers.get(key)
            if marker and value.startswith(marker):
                value = value[len(marker) :]
            again = self.reader.parse(name, key, value)[0]
            parsed[key] = (name, again, [], again)

    def settle(
        self,
        name: str,
        key: str,
        parsed: _Parsed,
        deliver: list[frames.Frame],
        decided: Collapsed,
        marked: tuple[list[frames.Frame], bytes, int] | None,
    ) -> None:
        """Note what :meth:`collapse` decided for one key."""
        _, found, bad, _ = parsed[key]
        stay = decided.stay.get(key, [])
        coalesced, cancelled = decided.coalesced[key], decided.cancelled[key]
        if not (stay or coalesced or cancelled):
            return
        if stay:
            staying = {frame.start for frame in stay}
            found = [f for f in cast(list[frames.Frame], found) if f.start not in staying]
            kept = self.waiting.get(key)
            if kept is None:
                assert marked is not None  # a key with frames to keep was noted
                kept = _Waiting([], [], marked[1], marked[2])
            self.waiting[key] = kept._replace(back=(*kept.back, *stay))
        self.collapsed[key] = (coalesced, cancelled)
        parsed[key] = (name, found, bad, self.reader.within_ttl(name, deliver))

    def _read_part(
        self, key: str, name: str, value: bytes, quota: int
    ) -> tuple[bytes, list[bytes] | Parse]:
        """The part of ``value`` a generic bounded take reads, and its read: one holding
        ``quota`` readable payloads, or all of it. (Its headers cannot tell frames held for
        another key: a part short of readable payloads is read again, twice as long.)"""
        walk = quota
        while True:
            part = self._head(key, name, value, walk)
            got = self.reader.read(name, key, part)
            if part is value or len(got if isinstance(got, list) else got[0]) >= quota:
                return part, got
            walk = 2 * walk + 1

    def _head(self, key: str, name: str, value: bytes, quota: int) -> bytes:
        """The part of ``value`` a bounded take parses: up to the payload past its ``quota``
        (what follows is counted by headers for a lost check; parsed whole past garbage)."""
        head = head_of(value, quota)
        if head == len(value):
            self.heads.pop(key, None)
            self.tails.pop(key, None)
            return value
        if name in self.checking:
            tail = frames_from(value, head)
            if tail is None:
                self.heads.pop(key, None)
                self.tails.pop(key, None)
                return value
            self.tails[key] = tail
        self.heads[key] = head
        return value[:head]

    def _due(
        self, key: str, name: str, got: Parse, value: bytes, shift: int
    ) -> tuple[list[frames.Frame], list[frames.BadRegion], list[frames.Frame]]:
        """A value's payloads due now, its unreadable regions and its cancellations; what waits
        is held, a wider spread learned, a key that may need a collapse noted."""
        found, bad, seen, held, cancels = got
        if seen > self.layout.widths[name]:
            self.learn(name, seen)
        if held or any(frame.meta for frame in found):
            found = self.hold(key, found, held, value, shift)
            if key in self.waiting or any(frame.meta for frame in found):
                self.note(name, key, cancels, value, shift)
        elif cancels:
            self.note(name, key, cancels, value, shift)
        return found, bad, cancels

    def _frames(
        self, key: str, entry: tuple[str, Found, list[frames.BadRegion], Found]
    ) -> tuple[str, list[frames.Frame], list[frames.BadRegion]]:
        """A parsed key's entry with frames, parsing its value again if it came as bodies."""
        name, found, bad, _ = entry
        if not found or not isinstance(found[0], bytes):
            return name, found, bad  # type: ignore[return-value]  # frames, or nothing
        value, shift = self.values[key]
        value = value[: self.heads.get(key, len(value))]
        found, bad, _ = self._due(key, name, self.reader.parse(name, key, value), value, shift)
        return name, found, bad

    def bound(self, parsed: _Parsed) -> dict[str, bytes]:
        """Cut each key of ``parsed`` to the payloads its signal's quota allows, the oldest;
        returns what stays queued of each key cut (see :attr:`rests`). A key that may give
        nothing and holds nothing unreadable before its first payload is dropped from
        ``parsed``: a generic take leaves it untouched (a native one took it: its rest goes
        back)."""
        assert self.quotas is not None
        sizes = {key: (name, len(found)) for key, (name, found, *_) in parsed.items()}
        rests = {key: self.values[key][0][at:] for key, at in self.heads.items() if key in parsed}
        for key, quota in self.quotas.allot(sizes).items():
            name, found, bad = self._frames(key, parsed[key])
            if quota >= len(found):
                parsed[key] = (name, found, bad, self.reader.within_ttl(name, found))
                continue
            rest = self._cut(parsed, key, name, found, bad, found[quota].start)
            if key in parsed or self.native:
                rests[key] = rest
            else:
                rests.pop(key, None)
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
        if found or bad:  # else only what waits: the key stays as it is (see hold)
            parsed[key] = (name, found, bad, self.reader.within_ttl(name, found))
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
        """``name`` spreads over ``seen`` shards: keep its marker when emptying its own key
        and its anchors."""
        settings, queue = self.settings, self.layout.keys[name].queue
        learn(settings, queue, seen)
        self.widened[name] = seen
        self.markers.update(kept_markers(settings, queue, self.layout.specs[name].shards))

    def count(self, parsed: _Parsed) -> None:
        """Count each key's payloads as if every take wins."""
        if not self.counting:
            return
        keys, changes = self.layout.keys, self.counts
        for name, found, bad, kept in parsed.values():
            if bad or len(kept) != len(found):
                tally(changes, keys[name], found, bad, kept, 1)
            else:  # the usual case, inline: every frame read is (so far) delivered
                accounted, _, _, delivered = weak_counters(keys[name].counters)
                changes[accounted] = changes.get(accounted, 0) + len(found)
                changes[delivered] = changes.get(delivered, 0) + len(found)
        for key, collapsed in self.collapsed.items() if self.collapsed else ():
            if key in parsed:
                _tally_collapsed(changes, keys[parsed[key][0]], collapsed, 1)

    def keep(
        self,
        parsed: _Parsed,
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
            name, found, bad, within_ttl = parsed[key]
            if won[key]:
                if key in self.collapsed:  # (a test, not a call: nothing when none is)
                    gone = self.collapsed[key]
                    self.taken.append(TakenKey(key, name, found, bad, within_ttl, *gone))
                else:
                    self.taken.append(TakenKey(key, name, found, bad, within_ttl))
                if key in self.markers or key in self.waiting or key in self.rests:
                    self.kept_back[key] = self.markers.get(key, b"") + self.kept(key)
                if self.quotas is not None:
                    self.quotas.spend(((name, len(found)),))
            elif taken_back:
                tally(self.counts, layout.keys[name], found, bad, within_ttl, -1)
                if key in self.collapsed:
                    _tally_collapsed(self.counts, layout.keys[name], self.collapsed[key], -1)


def _tally_collapsed(
    changes: Counter[str], signal: SignalKeys, collapsed: tuple[int, int], sign: int
) -> None:
    """Move a key's coalesced and cancelled payloads, which :func:`tally` counts as expired
    (they left, and no handler gets them), to their own counters."""
    coalesced, cancelled = collapsed
    _, _, expired, _ = weak_counters(signal.counters)
    changes[expired] -= sign * (coalesced + cancelled)
    if coalesced:
        changes[signal.counter("coalesced")] += sign * coalesced
    if cancelled:
        changes[signal.counter("cancelled")] += sign * cancelled
