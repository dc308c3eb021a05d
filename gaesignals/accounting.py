"""Counters, the ``sent`` tally and lost detection.

Every signal has counters in the store (:data:`~gaesignals.keys.COUNTERS`): senders bump
``sent``, deliveries bump ``accounted`` (frames that left the queue, however they left it)
and what became of them (``delivered``, ``failed``, ``dropped``, ``expired``,
``dead_lettered``). ``sent - accounted - queued`` is then what the cache lost before anyone
delivered it (:func:`check_lost`). Counters are best-effort: the cache may evict them too, and
every race is arranged to make the loss estimate smaller, never larger.
"""

from __future__ import annotations

import atexit
import logging
import os
import threading
import time
import weakref
from collections import Counter
from collections.abc import Collection, Iterable, Mapping, Sequence, Sized
from contextlib import nullcontext
from functools import lru_cache
from typing import NamedTuple

from . import frames
from .config import Settings
from .exceptions import GaeSignalsError
from .keys import SignalKeys
from .queue.counters import bump, record_estimates
from .stores import Cached, Connection, Store, counter_value, home_key

logger = logging.getLogger("gaesignals")

#: Seconds a store without atomic append holds ``sent`` counts in the process before writing
#: them in one call (see :func:`count_sent`).
SENT_FLUSH_SECONDS = 1.0
_monotonic = time.monotonic  # tests replace it to let time pass


# -- sent counts on stores without append ---------------------------------------------------------


class _SentTally:
    """``sent`` counts not yet written to one store."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.deltas: dict[str, int] = {}
        self.since = 0.0


_tallies: weakref.WeakKeyDictionary[Store, _SentTally] = weakref.WeakKeyDictionary()
_tallies_lock = threading.Lock()


def _forget_tallies() -> None:
    """In a forked child: the parent's held counts are the parent's to write (written by both,
    ``sent`` would run ahead of what was stored, and lost detection report losses that are not)."""
    global _tallies, _tallies_lock
    _tallies = weakref.WeakKeyDictionary()
    _tallies_lock = threading.Lock()


os.register_at_fork(after_in_child=_forget_tallies)


def _tally_of(store: Store) -> _SentTally | None:
    with _tallies_lock:
        try:
            tally = _tallies.get(store)
            if tally is None:
                tally = _tallies[store] = _SentTally()
                _flush_before_thread_pools_stop()
        except TypeError:  # a store that cannot be weakly referenced: no gathering
            return None
    return tally


_registered_with_threading = False


def _flush_before_thread_pools_stop() -> None:
    """Have the held counts written as the interpreter starts to exit, before thread pools
    stop: App Engine's SDK makes every call through a ``ThreadPoolExecutor``, which refuses
    work once ``concurrent.futures`` has shut it down at exit, before ``atexit`` handlers run.
    Registered when the first count is held, so after the SDK's pool registered its own
    shutdown (``threading``'s exit callbacks run last registered first). ``atexit`` stays the
    fallback; a flush with nothing held does nothing."""
    global _registered_with_threading
    if _registered_with_threading:
        return
    try:
        threading._register_atexit(_flush_at_exit)  # type: ignore[attr-defined]  # CPython 3.9+
    except RuntimeError:  # the interpreter is already shutting down
        return
    _registered_with_threading = True


def count_sent(conn: Connection | None, store: Store, deltas: Mapping[str, int]) -> None:
    """Count the payloads a gets + cas send stored.

    On a store with append the ``sent`` bump rides in the append's own round trip; here it
    would be a third call per send (App Engine has no pipelining), so the counts are gathered
    in the process and written at most every :data:`SENT_FLUSH_SECONDS`, by the send that
    finds them due, by :func:`~gaesignals.stats`, by a delivery that checks for lost payloads,
    and at exit. Late only ever makes lost detection under-report, never invent a loss."""
    tally = _tally_of(store)
    if tally is None:
        with store.connection() if conn is None else nullcontext(conn) as using:
            bump(using, deltas)
        return
    now = _monotonic()
    with tally.lock:
        if not tally.deltas:
            tally.since = now
        for key, n in deltas.items():
            tally.deltas[key] = tally.deltas.get(key, 0) + n
        if now - tally.since < SENT_FLUSH_SECONDS:
            return
    with store.connection() if conn is None else nullcontext(conn) as using:
        flush_sent(using, store)


def pending_sent(store: Store, counter: str) -> int:
    """The ``sent`` count this process holds for ``counter`` and has not written yet (see
    :func:`count_sent`)."""
    try:
        tally = _tallies.get(store)
    except TypeError:
        return 0
    return 0 if tally is None else tally.deltas.get(counter, 0)


def flush_sent(conn: Connection, store: Store) -> None:
    """Write the ``sent`` counts this process holds for ``store`` (see :func:`count_sent`);
    on failure they are kept for the next try, and the failure logged, not raised: the
    payloads they count are stored."""
    try:
        tally = _tallies.get(store)
    except TypeError:
        return
    if tally is None:
        return
    with tally.lock:
        deltas, tally.deltas = tally.deltas, {}
    if not deltas:
        return
    try:
        bump(conn, deltas)
    except GaeSignalsError:
        logger.warning("could not write sent counts %s yet", deltas, exc_info=True)
        with tally.lock:
            for key, n in deltas.items():
                tally.deltas[key] = tally.deltas.get(key, 0) + n


@atexit.register
def _flush_at_exit() -> None:
    for store, tally in list(_tallies.items()):
        if tally.deltas:
            try:
                with store.connection() as conn:
                    flush_sent(conn, store)
            except Exception:  # the interpreter is going away: nothing else to do
                logger.warning("sent counts lost at exit", exc_info=True)


# -- counter changes gathered by a take or a delivery -----------------------------------------


@lru_cache(maxsize=4096)
def weak_counters(prefix: str) -> tuple[str, str, str, str]:
    """The ``accounted``, ``dropped``, ``expired`` and ``delivered`` counter keys of the
    signal whose counters start with ``prefix`` (:attr:`SignalKeys.counters`: a string, cheap
    to hash, as a take looks them up per key)."""
    return prefix + "accounted", prefix + "dropped", prefix + "expired", prefix + "delivered"


def tally(
    changes: Counter[str],
    signal: SignalKeys,
    found: Sized,
    bad: Sequence[frames.BadRegion],
    within_ttl: Sized,
    sign: int,
) -> None:
    """Count (``sign`` 1) or take back (-1) in ``changes`` what a weak take does to a
    signal's counters: every frame and every payload of a bad region is ``accounted``; those
    of bad regions are ``dropped``, frames past the ttl ``expired``, the rest ``delivered``
    until a handler says otherwise (see :mod:`gaesignals.delivery.outcomes`)."""
    accounted, dropped, expired, delivered = weak_counters(signal.counters)
    lost_with_bad = frames.dropped(bad) if bad else 0
    changes[accounted] += sign * (len(found) + lost_with_bad)
    changes[delivered] += sign * len(within_ttl)
    if bad:
        changes[dropped] += sign * lost_with_bad
    if len(within_ttl) != len(found):
        changes[expired] += sign * (len(found) - len(within_ttl))


def pop_changes(changes: Counter[str]) -> dict[str, int]:
    """The non-zero counter changes gathered so far, which are then forgotten."""
    deltas = {key: n for key, n in changes.items() if n}
    changes.clear()
    return deltas


def flush(conn: Connection, changes: Counter[str], *, quietly: bool = False) -> None:
    """Write the counter changes gathered so far in one call (``quietly``: a failure is
    logged, not raised; counters are best-effort)."""
    deltas = pop_changes(changes)
    if not deltas:
        return
    try:
        bump(conn, deltas)
    except GaeSignalsError:
        if not quietly:
            raise
        logger.warning("could not update the counters %s", deltas, exc_info=True)


# -- lost detection -------------------------------------------------------------------------------


def read_order(keys: SignalKeys, shards: Iterable[str]) -> list[str]:
    """What a checking delivery reads of one signal, in this order (see :func:`check_lost`):
    its ``sent`` counter, every shard's queue, then ``accounted`` and ``lost``."""
    return [keys.counter("sent"), *shards, keys.counter("accounted"), keys.counter("lost")]


def lost_keys(keys: SignalKeys) -> tuple[str, str, str]:
    """The counters a lost check reads: ``sent``, ``accounted``, ``lost``."""
    return keys.counter("sent"), keys.counter("accounted"), keys.counter("lost")


class CheckSchedule:
    """When each signal is next due for a lost check in this process: at most once per
    ``lost_check_interval``, since a check reads three counters per signal besides its queue.
    One per process; new settings (another store, another namespace) start afresh."""

    #: Signals whose last check is remembered; past it all are forgotten (each is then checked
    #: once more than it needed to be).
    KEPT = 65536

    def __init__(self) -> None:
        self.last: dict[str, float] = {}
        self.settings: Settings | None = None

    def due(self, names: Collection[str], settings: Settings, quiet: QuietUntil) -> set[str]:
        """The signals of ``names`` to check now; ``quiet`` remembers, for one mapping, until
        when none of them is due, so most deliveries need no look at each signal."""
        if not settings.counters:
            return set()
        interval = settings.lost_check_interval
        if interval <= 0:
            return set(names)
        now = _monotonic()
        if quiet.settings is settings and now < quiet.until:
            return set()
        if self.settings is not settings:
            self.last.clear()
            self.settings = settings
        last = self.last.get
        due = {name for name in names if now - last(name, -interval) >= interval}
        if not due and names:
            quiet.settings = settings
            quiet.until = min(self.last.get(name, now) for name in names) + interval
        return due

    def checked(self, names: Iterable[str], settings: Settings) -> None:
        if settings.lost_check_interval <= 0:
            return
        if len(self.last) > self.KEPT:
            self.last.clear()
        now = _monotonic()
        for name in names:
            self.last[name] = now


class QuietUntil:
    """Until when (monotonic seconds) no signal of one mapping is due for a lost check."""

    __slots__ = ("settings", "until")

    def __init__(self) -> None:
        self.settings: Settings | None = None
        self.until = 0.0


schedule = CheckSchedule()


#: Counter keys already reported as corrupt by this process (bounded: cleared when full).
_reported_corrupt: set[str] = set()
_REPORTED_CORRUPT_MAX = 1024


def number(current: Mapping[str, Cached], key: str) -> int | None:
    """The count at ``key`` as read, or None when it is missing or not a counter.

    A corrupt counter (planted, or half-written by a foreign client) is treated as absent and
    logged once per key, so one bad key never stops the deliveries that read it.
    """
    item = current.get(key)
    if item is None:
        return None
    count = counter_value(item.value)
    if count is None and key not in _reported_corrupt:
        if len(_reported_corrupt) >= _REPORTED_CORRUPT_MAX:
            _reported_corrupt.clear()
        _reported_corrupt.add(key)
        logger.warning(
            "%r holds %d byte(s) that are not a counter; read as absent",
            key,
            len(item.value),
        )
    return count


class Loss(NamedTuple):
    """Payloads of one signal a lost check newly found gone: ``more`` since the last estimate
    written, ``total`` in all (the estimate now in the ``lost`` counter)."""

    more: int
    total: int


class LostCheck(NamedTuple):
    """What a lost check found: the counter changes the caller writes with its own
    (``accounted`` started again where the cache evicted it), and each signal's new loss,
    already written to its ``lost`` counter, for the caller to report as an outcome (see
    :mod:`gaesignals.delivery.outcomes`)."""

    changes: dict[str, int]
    losses: dict[str, Loss]


def check_lost(
    conn: Connection,
    keys: Mapping[str, SignalKeys],
    names: Mapping[str, str],
    current: Mapping[str, Cached],
    parsed: Mapping[str, tuple[Sized, Sequence[frames.BadRegion]]],
) -> LostCheck:
    """Estimate the payloads the cache lost (evicted) before anyone delivered them, and keep
    the estimate in each signal's ``lost`` counter.

    ``sent - accounted - queued`` counts payloads that were stored and neither are pending nor
    left the queue through a delivery: lost. Read in one batch, sent before the queue before
    accounted, with senders bumping ``sent`` after their append and deliverers bumping
    ``accounted`` before their reset, every race makes the estimate smaller, never larger: a
    reported loss is a real one. ``lost`` holds the largest estimate seen (written by cas, so
    two deliverers never count one loss twice); the first delivery of a signal creates it,
    which is how a later one tells "never delivered" from "``accounted`` was evicted". A
    ``lost`` read without a CAS token (a native take reads none) is read again to grow it.

    Best-effort: counters can be evicted too (they are tiny and hot, so seldom), and on a
    cluster a node that leaves or rejoins the ring moves the counters homed on it; if
    ``accounted`` and ``lost`` both vanish while ``sent`` stays, losses are over-reported.
    """
    queued: Counter[str] = Counter()
    for key, (found, bad) in parsed.items():
        queued[names[home_key(key)]] += len(found) + frames.dropped(bad)
    restarted: dict[str, int] = {}
    created: dict[str, bytes] = {}
    grown: dict[str, tuple[bytes, Cached]] = {}
    news: dict[str, tuple[str, int, int]] = {}
    for name, signal in keys.items():
        sent_key, accounted_key, key = lost_keys(signal)
        sent = number(current, sent_key)
        if sent is None:
            continue
        item = current.get(key)
        accounted = number(current, accounted_key)
        if accounted is None:
            if item is not None:
                # The cache evicted it (the first delivery creates ``lost``): start again from
                # "nothing lost so far", the guess that cannot report a false loss.
                restarted[accounted_key] = max(sent - queued[name], 0)
                continue
            accounted = 0  # the first delivery of this signal: nothing left the queue yet
        lost = number(current, key) or 0
        missing = max(sent - accounted - queued[name], 0)
        if item is None:
            created[key] = b"%d" % missing
        elif missing > lost:
            grown[key] = (b"%d" % missing, item)
        else:
            continue
        news[key] = (name, missing - lost, missing)
    recorded = record_estimates(conn, created, grown) if news else {}
    losses = {
        name: Loss(more, total)
        for key, (name, more, total) in news.items()
        if recorded.get(key) and more > 0
    }
    return LostCheck(restarted, losses)
