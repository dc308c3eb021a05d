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
from ..stores import Cached, Connection, NativeQueue, TakeGroup, home_key, is_stranded
from .append import append_frames, widen
from .collapse import Collapsed, collapse
from .spread import kept_marker, learn

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
        """The value's parse, never bare bodies (asked when a cancellation elsewhere in the
        signal may name one of its payloads)."""
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
) -> WeakTaken:
    """Take every payload due at ``now`` (Unix ms) from every queue key of ``layout``, at most
    once, counting it (when ``settings.counters``); the signals in ``checking`` get their
    lost check (see :func:`~gaesignals.accounting.check_lost`) from the same read.

    Raises :class:`~gaesignals.StoreUnavailable` only when nothing was taken."""
    store = settings.store
    if checking:
        flush_sent(conn, store)  # sent counts this process still holds
    run = _Take(conn, settings, layout, reader, checking, now)
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
            if not parsed:
                return
            self.count(parsed)
            counters = pop_changes(self.counts) if self.counting else {}
            won = self._reset(current, parsed, counters)
            # Counted, even when this round's counts cancelled an earlier round's take-back
            # and nothing went out; unless the reset's fate is unknown (counters cleared).
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
        markers, kept = self.markers, self.kept if self.waiting else None
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
                )
            )
        taken = native.take_many(groups, self.now)
        self.failure = taken.failure
        current = {key: Cached(value, None) for key, value in (taken.read | taken.values).items()}
        parsed = self.parse(current)
        if self.widened:
            self._put_back_markers()
        if self.waiting:
            self._put_back_waiting(taken.walked or {})
        if checking:
            self.check_lost(current, parsed)
        if self.counting:
            for key, counted in taken.counted.items():
                signal = layout.keys[layout.names[home_key(key)]]
                accounted, _, _, delivered = weak_counters(signal.counters)
                self.counts[accounted] -= counted
                self.counts[delivered] -= counted
        self.count(parsed)
        self.keep(parsed, dict.fromkeys(parsed, True), taken_back=False)

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
            past += kept.back  # read as due, so the store took them
            if past:
                past.sort(key=lambda frame: frame.start)
                lost[key] = b"".join(kept.value[f.start : f.end] for f in past)
        if lost:
            try:
                append_frames(self.conn, self.settings.store, lost)
            except GaeSignalsError:
                logger.error("could not put back payloads not due yet or held", exc_info=True)

    # -- shared by both ----------------------------------------------------------------------

    def kept(self, key: str) -> bytes:
        """The bytes of ``key``'s payloads not due yet or held, which its reset keeps."""
        kept = self.waiting.get(key)
        return b"" if kept is None else kept.raw()

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
            if isinstance(got, list):
                parsed[key] = (name, got, [], got)
                continue
            found, bad, seen, held, cancels = got
            if seen > layout.widths[name]:
                self.learn(name, seen)
            shift = len(item.value) - len(value)
            if held or any(frame.meta for frame in found):
                found = self.hold(key, found, held, value, shift)
                if key in self.waiting or any(frame.meta for frame in found):
                    self.note(name, key, cancels, value, shift)
            elif cancels:
                self.note(name, key, cancels, value, shift)
            if found or bad or cancels:  # else only markers, or payloads not due yet or held
                parsed[key] = (name, found, bad, within_ttl(name, found))
        if self.marked:
            self.collapse(parsed, current)
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
                if key in self.markers or key in self.waiting:
                    self.kept_back[key] = self.markers.get(key, b"") + self.kept(key)
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
