"""The delivering side: :class:`SignalMapping` and :func:`deliver`, weak and reliable.

Weak (the default) takes every pending payload of every signal in two batched calls: one read
of all keys with CAS tokens, one CAS reset of the non-empty ones with the counter updates ahead
of the resets in the same pipeline (and, at most once per ``lost_check_interval`` per process,
three counters per signal in the read, see :func:`_check_lost`). A payload goes to the handlers
only if the reset of its key won, so no payload is delivered twice and none is lost to a race;
keys that lost a race are retried a few times within the call. At most once: a handler that
raises, or a process that dies after the reset, loses those payloads.

Reliable takes a per-signal lock with a lease, runs the handlers, and only then removes exactly
the payloads it delivered. At least once: a crash or a raising handler leaves the payload for
the next delivery; after ``max_attempts`` failures it moves to the signal's dead letters.

A signal declared with ``shards=N`` is N keys: both modes read every shard in the same batched
read; reliable delivery takes one lock per signal and keeps a progress cursor per shard. A
declared ``ttl`` drops (and logs) payloads older than that instead of running them.
"""

from __future__ import annotations

import json
import logging
import pickle
import secrets
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence, Sized
from functools import lru_cache, partial
from typing import Any, TypeVar, cast

from . import frames
from .config import Settings, get_settings
from .exceptions import GaeSignalsError, PartialFailure, StoreUnavailable
from .registry import (
    Registry,
    SignalSpec,
    check_lease,
    check_max_attempts,
    registry,
)
from .signals import (
    Contention,
    SignalKeys,
    append_frames,
    check_name,
    encode_payload,
    flush_sent,
    route,
    shard_keys,
    signal_keys,
)
from .stores import Connection

logger = logging.getLogger("gaesignals")

Handler = Callable[..., object]
HandlerSpec = Handler | Sequence[Handler]

#: Rounds of read + reset a weak delivery makes for keys whose reset lost a race.
WEAK_ROUNDS = 4
#: Rounds of CAS a reliable delivery makes to remove what it delivered.
ACK_ROUNDS = 32
F = TypeVar("F", bound=Handler)


def pass_signal_name(handler: F) -> F:
    """Mark a handler that wants the signal's name: called ``handler(data, signal_name=name)``.

    Useful when one handler serves many per-user signals (``user_<id>_password_change``).
    """
    handler.__gaesignals_pass_name__ = True  # type: ignore[attr-defined]
    return handler


class SignalMapping:
    """Signal names and their handlers, validated once and reusable across deliveries.

    Built from a list of ``(name, handler)`` pairs (a name may repeat; its handlers add up in
    order), a dict, or another mapping. A handler is one callable or a list of them.
    ``lease`` and ``max_attempts`` override, for this mapping, what each signal declared (see
    :func:`~gaesignals.declare`); left out, the declaration or the defaults apply.
    """

    def __init__(
        self,
        mapping: SignalMapping | Mapping[str, HandlerSpec] | Iterable[tuple[str, HandlerSpec]] = (),
        *,
        lease: int | None = None,
        max_attempts: int | None = None,
    ) -> None:
        self.lease = None if lease is None else check_lease(lease)
        self.max_attempts = None if max_attempts is None else check_max_attempts(max_attempts)
        if isinstance(mapping, SignalMapping):
            self.lease = mapping.lease if lease is None else self.lease
            self.max_attempts = mapping.max_attempts if max_attempts is None else self.max_attempts
        self._handlers: dict[str, tuple[Handler, ...]] = {}
        # Derived once and kept across deliveries (each checks it still applies): handlers
        # made ready, declarations, the weak path's key layout, when lost checks are due.
        self._runners: dict[str, _Runner] = {}
        self._specs: tuple[Registry, int, dict[str, SignalSpec]] | None = None
        self._layout: tuple[Settings, Mapping[str, SignalSpec], _Layout] | None = None
        self._checks_quiet_until: tuple[Settings, float] | None = None
        pairs: Iterable[tuple[str, HandlerSpec]]
        pairs = mapping.items() if isinstance(mapping, SignalMapping | Mapping) else mapping
        for pair in pairs:
            if not isinstance(pair, tuple) or len(pair) != 2:
                raise TypeError(f"expected (name, handler) pairs, got {pair!r}")
            name, spec = pair
            handlers = (spec,) if callable(spec) else tuple(spec)
            for handler in handlers:
                if not callable(handler):
                    raise TypeError(f"handler {handler!r} for signal {name!r} is not callable")
            self._handlers[check_name(name)] = self._handlers.get(name, ()) + handlers

    @classmethod
    def coerce(cls, mapping: Any) -> SignalMapping:
        """Return ``mapping`` if it is a :class:`SignalMapping`, else build one from it;
        ``None`` means the receivers of the default registry, as they are at this moment."""
        if mapping is None:
            return cls([(name, registry.receivers(name)) for name in registry.names()])
        return mapping if isinstance(mapping, SignalMapping) else cls(mapping)

    def __repr__(self) -> str:
        return f"SignalMapping({list(self._handlers)!r})"

    def __len__(self) -> int:
        return len(self._handlers)

    def __iter__(self) -> Iterator[str]:
        return iter(self._handlers)

    def __contains__(self, name: object) -> bool:
        return name in self._handlers

    def items(self) -> Iterator[tuple[str, tuple[Handler, ...]]]:
        return iter(self._handlers.items())

    def handlers(self, name: str) -> tuple[Handler, ...]:
        return self._handlers[name]

    def specs(self, declared: Registry) -> dict[str, SignalSpec]:
        """Each signal's declaration in ``declared`` (kept until a declaration changes)."""
        kept = self._specs
        if kept is None or kept[0] is not declared or kept[1] != declared.version:
            version = declared.version
            kept = self._specs = (declared, version, {n: declared.spec(n) for n in self})
        return kept[2]

    def layout(self, settings: Settings, specs: Mapping[str, SignalSpec]) -> _Layout:
        """The keys weak delivery reads for these signals (kept while settings and specs)."""
        kept = self._layout
        if kept is None or kept[0] is not settings or kept[1] is not specs:
            kept = self._layout = (settings, specs, _Layout(self, settings, specs))
        return kept[2]

    def runner(self, name: str, settings: Settings, spec: SignalSpec) -> _Runner:
        """``name``'s handlers made ready to run (see :class:`_Runner`), kept across
        deliveries of this mapping while the settings and the declaration stay the same."""
        runner = self._runners.get(name)
        if runner is None or runner.settings is not settings or not _same(runner.spec, spec):
            runner = self._runners[name] = _Runner(name, self._handlers[name], settings, spec)
        else:
            runner.restart()
        return runner

    def subset(self, names: Iterable[str]) -> SignalMapping:
        """The same mapping restricted to ``names``, keeping its overrides."""
        return SignalMapping(
            [(name, self._handlers[name]) for name in names],
            lease=self.lease,
            max_attempts=self.max_attempts,
        )


def _same(a: SignalSpec, b: SignalSpec) -> bool:
    return a is b or a == b


#: What :meth:`_Runner._decode` returns for a payload it could not decode.
_UNDECODABLE = object()
#: A key's payloads as weak delivery holds them: frames, or bare pickled bodies.
Found = list[frames.Frame] | list[bytes]

MappingArg = SignalMapping | Mapping[str, HandlerSpec] | Iterable[tuple[str, HandlerSpec]]


def deliver(
    mapping: MappingArg | None = None,
    reliable: bool | None = None,
    *,
    lease: int | None = None,
    max_attempts: int | None = None,
) -> int:
    """Run the handlers of every signal in ``mapping`` on its pending payloads.

    ``mapping`` left out (``None``) means every signal with a receiver in the default registry
    (:func:`~gaesignals.receiver`). Each handler is called ``handler(data)`` once per payload,
    in send order within a signal (within a shard, for a signal declared with ``shards``), and
    never on one older than a declared ``ttl``. Returns how many payloads were delivered with
    every handler succeeding. Handler errors are logged (logger ``gaesignals``) and never
    raised; a store outage raises :class:`~gaesignals.StoreUnavailable`.

    ``reliable`` chooses at-least-once delivery under a lock with a ``lease`` in seconds (see
    the module docstring) for every signal; left out, each signal gets the mode it was declared
    with (weak unless declared ``reliable=True``). ``lease`` and ``max_attempts`` override the
    mapping's and the declarations' values.
    """
    signals = SignalMapping.coerce(mapping)
    if not signals:
        return 0
    settings = get_settings()
    specs = signals.specs(registry)
    weak = [
        name for name in signals if not (specs[name].reliable if reliable is None else reliable)
    ]
    weak_set = set(weak)
    groups: dict[tuple[int, int], list[str]] = {}
    for name in signals:
        if name in weak_set:
            continue
        group = (
            check_lease(_first(lease, signals.lease, specs[name].lease)),
            check_max_attempts(
                _first(max_attempts, signals.max_attempts, specs[name].max_attempts)
            ),
        )
        groups.setdefault(group, []).append(name)
    delivered = 0
    if weak:
        delivered += _deliver_weak(signals.subset(weak) if groups else signals, settings, specs)
    for (group_lease, group_attempts), names in groups.items():
        part = signals.subset(names) if weak or len(groups) > 1 else signals
        delivered += _deliver_reliable(part, settings, specs, group_lease, group_attempts)
    return delivered


def _first(*values: int | None) -> int:
    return next(value for value in values if value is not None)


# -- weak -----------------------------------------------------------------------------------------


def _deliver_weak(
    signals: SignalMapping, settings: Settings, specs: Mapping[str, SignalSpec]
) -> int:
    layout = signals.layout(settings, specs)
    keys, shards, names, order = layout.keys, layout.shards, layout.names, layout.order
    runners = layout.runners
    for timed in layout.timed:
        timed.restart()
    secret_keys = settings.secret_keys
    bodies_of = frames.pickled_bodies
    delivered = 0
    bumps: Counter[str] = Counter()
    failure: StoreUnavailable | None = None
    counting = settings.counters
    checking = _due_for_check(signals, settings)
    todo = list(names)
    with settings.store.connection() as conn:
        if checking:
            flush_sent(conn, settings.store)  # sent counts this process still holds
        try:
            for first in (True, *[False] * (WEAK_ROUNDS - 1)):
                if not first:
                    wanted = todo
                elif checking:
                    wanted = [
                        k
                        for name in signals
                        for k in (
                            _read_order(keys[name], shards[name])
                            if name in checking
                            else shards[name]
                        )
                    ]
                else:
                    wanted = list(names)
                current = conn.scan_many(wanted)
                parsed = {}
                owners: dict[str, str] = {}  # each key read (home or stranded) -> its signal
                for key, item in current.items():
                    if not item[0]:
                        continue
                    owner = names.get(key if " " not in key else _base(key))
                    if owner is not None:
                        runner = runners[owner]
                        # runner.parse_weak, inline: it runs for every key of every delivery
                        bodies = (
                            bodies_of(item[0], runner.signer, secret_keys) if runner.quick else None
                        )
                        parsed[key] = (
                            (bodies, []) if bodies is not None else runner.parse_all(item[0])
                        )
                        owners[key] = owner
                if first and checking:
                    _check_lost(conn, keys, names, current, parsed, bumps)
                    _checked(checking, settings)
                if not parsed:
                    break
                taken = {key: (b"", current[key][1]) for key in parsed}
                # Counted as if every reset wins, ahead of the resets in their own round trip
                # (see Connection.cas_many), so a reader never sees frames gone yet unaccounted;
                # what a lost race or a failing handler changes is corrected afterwards.
                fresh: dict[str, Found] = {}
                for key, (found, bad) in parsed.items():
                    name = owners[key]
                    runner = runners[name]
                    fresh[key] = kept = found if runner.ttl is None else runner.within_ttl(found)
                    if not counting:
                        continue
                    if bad or len(kept) != len(found):
                        _tally(bumps, keys[name], found, bad, kept, 1)
                    else:  # the usual case, inline: every frame read is (so far) delivered
                        accounted, _, _, delivered_key = runner.weak_counters
                        bumps[accounted] = bumps.get(accounted, 0) + len(found)
                        bumps[delivered_key] = bumps.get(delivered_key, 0) + len(found)
                counters = _take(bumps) if counting else {}
                try:
                    won = conn.cas_many(taken, counters=counters or None)
                except PartialFailure as error:  # a cluster node failed: keep what was won
                    won = {key: error.results.get(key) is True for key in taken}
                    failure = error
                    for key in taken:
                        if key not in error.results:  # its node took the reset, or did not
                            logger.error(
                                "gaesignals: the reset of signal %r got no answer; if the "
                                "cache applies it, its %d payload(s) read now are lost",
                                names[_base(key)],
                                len(parsed[key][0]),
                            )
                except StoreUnavailable as error:
                    # Maybe applied later (a hung server): then those payloads are lost. The
                    # counters may or may not have landed: left as they are, so lost detection
                    # can only under-report; the log says how many payloads are at stake.
                    won = dict.fromkeys(taken, False)
                    failure = error
                    counters = {}
                    for key, (found, _) in parsed.items():
                        logger.error(
                            "gaesignals: the reset of signal %r timed out or failed; if the "
                            "cache applies it later, its %d payload(s) read now are lost",
                            names[_base(key)],
                            len(found),
                        )
                # Mapping order (the read's, for keys at home); a copy stranded on another
                # server is older than the home copy.
                if any(" " in key for key in taken):
                    ordered = sorted(taken, key=lambda k: (order[_base(k)], " " not in k))
                else:  # a store may answer in any order
                    ordered = [key for key in names if key in taken]
                for key in ordered:
                    found, bad = parsed[key]
                    name = owners[key]
                    if not won[key]:
                        if counters:  # take back what was counted for it
                            _tally(bumps, keys[name], found, bad, fresh[key], -1)
                        continue
                    runner = runners[name]
                    if len(fresh[key]) != len(found):
                        runner.log_expired(len(found) - len(fresh[key]))
                    kept = fresh[key]
                    if runner.single and kept and isinstance(kept[0], bytes):
                        ok, failed = runner.drain_bodies(kept)  # runner.drain, one call less
                    else:
                        ok, failed = runner.drain(kept)
                    delivered += ok
                    if failed and counting:
                        signal = keys[name]
                        bumps[signal.counter("delivered")] -= failed
                        bumps[signal.counter("failed")] += failed
                if failure is not None:
                    break
                todo = list(dict.fromkeys(_base(key) for key in taken if not won[key]))
                if not todo:
                    break
            else:
                # Normal under heavy sending: nothing is lost, the next delivery takes them.
                logger.info(
                    "gaesignals: %d signal key(s) stayed contended; left for the next delivery",
                    len(todo),
                )
        finally:
            if counting:
                _flush(conn, bumps, quietly=True)
    if failure is not None:
        raise failure
    return delivered


class _Layout:
    """The keys a weak delivery of a mapping reads: each signal's keys, every queue key of
    every signal (all its shards) in mapping order then shard order, each queue key's signal
    and its place in that order."""

    __slots__ = ("keys", "names", "order", "runners", "shards", "timed")

    def __init__(
        self, signals: SignalMapping, settings: Settings, specs: Mapping[str, SignalSpec]
    ) -> None:
        ns = settings.namespace
        self.keys = {name: signal_keys(name, ns) for name in signals}
        self.shards = {name: _queue_keys(name, ns, specs[name].shards) for name in self.keys}
        self.names = {queue: name for name, queues in self.shards.items() for queue in queues}
        self.order = {key: index for index, key in enumerate(self.names)}
        #: Each signal's runner, and those with a ttl (whose cut-off moves every delivery).
        self.runners = {name: signals.runner(name, settings, specs[name]) for name in self.keys}
        self.timed = [runner for runner in self.runners.values() if runner.ttl is not None]


def _shards(
    name: str, settings: Settings, specs: Mapping[str, SignalSpec]
) -> tuple[tuple[str, str], ...]:
    """(queue, cursor) keys of each shard of ``name``, as declared."""
    return shard_keys(signal_keys(name, settings.namespace), specs[name].shards)


@lru_cache(maxsize=4096)
def _queue_keys(name: str, namespace: str, shards: int) -> tuple[str, ...]:
    return tuple(queue for queue, _ in shard_keys(signal_keys(name, namespace), shards))


def _base(key: str) -> str:
    """A key without the server location a cluster store may add (see ``scan_many``)."""
    return key.partition(" ")[0]


# -- shared by both modes -------------------------------------------------------------------------


def _read_order(keys: SignalKeys, shards: Iterable[str]) -> list[str]:
    """What a delivery reads of one signal, in this order (see :func:`_check_lost`): its
    ``sent`` counter, every shard's queue, then ``accounted`` and ``lost``."""
    return [keys.counter("sent"), *shards, keys.counter("accounted"), keys.counter("lost")]


# When this process last checked each signal for lost payloads (time.monotonic()), for the
# settings in force then: new settings (another store, another namespace) start afresh.
_last_checks: dict[str, float] = {}
_checks_for: list[Settings | None] = [None]
#: Signals whose last check this process remembers; past it, it forgets them all (each is
#: then checked once more than it needed to be).
_CHECKS_KEPT = 65536
_monotonic = time.monotonic  # tests replace it to let time pass


def _due_for_check(signals: SignalMapping, settings: Settings) -> set[str]:
    """The signals of ``signals`` to check for lost payloads in this delivery (see
    :func:`_check_lost`): each at most once per ``lost_check_interval`` per process, since a
    check reads three counters per signal besides its queue."""
    if not settings.counters:
        return set()
    interval = settings.lost_check_interval
    if interval <= 0:
        return set(signals)
    now = _monotonic()
    quiet = signals._checks_quiet_until
    if quiet is not None and quiet[0] is settings and now < quiet[1]:
        return set()  # none due: known without a look at each signal
    if _checks_for[0] is not settings:
        _last_checks.clear()
        _checks_for[0] = settings
    last = _last_checks.get
    due = {name for name in signals if now - last(name, -interval) >= interval}
    if not due and signals:  # every one was checked lately: until the first is due again
        first_due = min(_last_checks.get(name, now) for name in signals) + interval
        signals._checks_quiet_until = (settings, first_due)
    return due


def _checked(names: Iterable[str], settings: Settings) -> None:
    if settings.lost_check_interval <= 0:
        return
    if len(_last_checks) > _CHECKS_KEPT:
        _last_checks.clear()
    now = _monotonic()
    for name in names:
        _last_checks[name] = now


def _number(item: tuple[bytes, object] | None) -> int | None:
    """A counter's value, or None when it is missing or not a counter."""
    if item is None:
        return None
    text = item[0].strip()
    return int(text) if text.isdigit() else None


def _check_lost(
    conn: Connection,
    keys: Mapping[str, SignalKeys],
    names: Mapping[str, str],
    current: Mapping[str, tuple[bytes, object]],
    parsed: Mapping[str, tuple[Sized, Sized]],
    bumps: Counter[str],
) -> None:
    """Report the payloads the cache lost (evicted) before anyone delivered them.

    ``sent - accounted - queued`` counts payloads that were stored and neither are pending nor
    left the queue through a delivery: lost. Read in one batch, sent before the queue before
    accounted, with senders bumping ``sent`` after their append and deliverers bumping
    ``accounted`` before their reset, every race makes the estimate smaller, never larger: a
    reported loss is a real one. ``lost`` holds the largest estimate seen (written by cas, so
    two deliverers never count one loss twice); the first delivery of a signal creates it,
    which is how a later one tells "never delivered" from "``accounted`` was evicted".

    Best-effort: counters can be evicted too (they are tiny and hot, so seldom), and on a
    cluster a node that leaves or rejoins the ring moves the counters homed on it; if
    ``accounted`` and ``lost`` both vanish while ``sent`` stays, losses are over-reported.
    """
    queued: Counter[str] = Counter()
    for key, (found, bad) in parsed.items():
        queued[names[_base(key)]] += len(found) + len(bad)
    fresh: dict[str, bytes] = {}
    grown: dict[str, tuple[bytes, object]] = {}
    news: dict[str, tuple[str, int, int]] = {}
    for name, signal in keys.items():
        sent = _number(current.get(signal.counter("sent")))
        if sent is None:
            continue
        key = signal.counter("lost")
        item = current.get(key)
        accounted = _number(current.get(signal.counter("accounted")))
        if accounted is None:
            if item is not None:
                # The cache evicted it (the first delivery creates ``lost``): start again from
                # "nothing lost so far", the guess that cannot report a false loss.
                bumps[signal.counter("accounted")] += max(sent - queued[name], 0)
                continue
            accounted = 0  # the first delivery of this signal: nothing left the queue yet
        lost = _number(item) or 0
        missing = max(sent - accounted - queued[name], 0)
        if item is None:
            fresh[key] = b"%d" % missing
        elif missing > lost:
            grown[key] = (b"%d" % missing, item[1])
        else:
            continue
        news[key] = (name, missing - lost, missing)
    recorded = (conn.add_many(fresh) if fresh else {}) | (conn.cas_many(grown) if grown else {})
    for key, (name, more, total) in news.items():
        if recorded.get(key) and more > 0:
            logger.warning(
                "gaesignals: %d payload(s) of signal %r vanished from the cache before delivery "
                "(evicted?); %d lost in all",
                more,
                name,
                total,
            )


def _tally(
    bumps: Counter[str],
    signal: SignalKeys,
    found: Sized,
    bad: Sized,
    fresh: Sized,
    sign: int,
) -> None:
    """Count (``sign`` 1) or take back (-1) what leaving the queue does to a signal's
    counters: every frame and bad region is ``accounted``; bad regions are ``dropped``,
    frames past the ttl ``expired``, the rest ``delivered`` until a handler says otherwise."""
    accounted, dropped, expired, delivered = _weak_counters(signal)
    bumps[accounted] += sign * (len(found) + len(bad))
    bumps[delivered] += sign * len(fresh)
    if bad:
        bumps[dropped] += sign * len(bad)
    if len(fresh) != len(found):
        bumps[expired] += sign * (len(found) - len(fresh))


@lru_cache(maxsize=4096)
def _weak_counters(signal: SignalKeys) -> tuple[str, str, str, str]:
    return (
        signal.counter("accounted"),
        signal.counter("dropped"),
        signal.counter("expired"),
        signal.counter("delivered"),
    )


def _take(bumps: Counter[str]) -> dict[str, int]:
    """The non-zero counter changes gathered so far, which are then forgotten."""
    deltas = {key: n for key, n in bumps.items() if n}
    bumps.clear()
    return deltas


def _flush(conn: Connection, bumps: Counter[str], *, quietly: bool = False) -> None:
    """Write the counter changes gathered so far in one call."""
    deltas = {key: n for key, n in bumps.items() if n}
    bumps.clear()
    if not deltas:
        return
    try:
        conn.incr_many(deltas)
    except GaeSignalsError:
        if not quietly:
            raise
        logger.warning("gaesignals: could not update the counters %s", deltas, exc_info=True)


def _parse(
    name: str, key: str, value: bytes, settings: Settings
) -> tuple[list[frames.Frame], list[frames.BadRegion]]:
    """The verified frames of a signal's value and its unreadable regions (logged, then
    dropped); ``key`` is the signal's own queue key, its identity in frame signatures,
    whichever shard the value came from."""
    parsed, bad = frames.parse(value, key.encode(), settings.secret_keys)
    _log_bad(name, key, bad)
    return parsed, bad


def _log_bad(name: str, key: str, bad: Iterable[frames.BadRegion]) -> None:
    for region in bad:
        logger.error(
            "gaesignals: dropped %d unreadable byte(s) in signal %r (key %s): %s",
            region.end - region.start,
            name,
            key,
            region.reason,
        )


def _frames(name: str, key: str, value: bytes, settings: Settings) -> list[frames.Frame]:
    """The verified frames of a signal's value (see :func:`_parse`)."""
    return _parse(name, key, value, settings)[0]


def decode(frame: frames.Frame, settings: Settings) -> Any:
    """Deserialize a verified frame's body. JSON frames are always accepted; pickle frames only
    while the configured codec is pickle, so choosing JSON also stops unpickling."""
    if frame.flags & frames.FLAG_JSON:
        return json.loads(frame.body)
    if settings.codec != "pickle":
        raise GaeSignalsError("a pickled frame arrived while the codec is json; refused")
    return pickle.loads(frame.body)


class _Runner:
    """One signal's handlers, made ready once per delivery to run on its payloads: each
    handler's call form resolved, the ``ttl`` cut-off fixed. Both modes use it."""

    __slots__ = (
        "calls",
        "cutoff",
        "identity",
        "name",
        "quick",
        "settings",
        "signer",
        "single",
        "spec",
        "ttl",
        "weak_counters",
    )

    def __init__(
        self, name: str, handlers: Sequence[Handler], settings: Settings, spec: SignalSpec
    ) -> None:
        self.name = name
        self.settings = settings
        self.identity = signal_keys(name, settings.namespace).queue
        self.signer = self.identity.encode()  # what frame signatures name the signal by
        self.weak_counters = _weak_counters(signal_keys(name, settings.namespace))
        self.calls = [
            (handler, partial(handler, signal_name=name) if _passes_name(handler) else handler)
            for handler in handlers
        ]
        self.spec = spec
        self.ttl = spec.ttl
        # Weak delivery may read bare pickled bodies: nothing to check a frame's time against.
        self.quick = spec.ttl is None and settings.codec == "pickle"
        self.single = len(self.calls) == 1  # one handler: drain_bodies can run bare bodies
        self.cutoff = -1
        self.restart()

    def restart(self) -> None:
        """Ready for a new delivery: the ``ttl`` cut-off moves with the clock."""
        if self.ttl is not None:
            # Whole seconds on the sender's clock: a payload sent before this second is too old.
            self.cutoff = int(frames.clock()) - self.ttl

    def parse_all(self, value: bytes) -> tuple[list[frames.Frame], list[frames.BadRegion]]:
        """The verified frames of a value and its unreadable regions (logged, then dropped)."""
        found, bad = frames.parse(value, self.signer, self.settings.secret_keys)
        if bad:
            _log_bad(self.name, self.identity, bad)
        return found, bad

    def expired(self, frame: frames.Frame) -> bool:
        return frames.sent_at(frame.ident) < self.cutoff

    def within_ttl(self, found: Found) -> Found:
        """``found`` without the payloads older than the signal's ttl (the caller logs them,
        with :meth:`log_expired`, once it drops them). Bare bodies only come without a ttl."""
        if self.ttl is None:
            return found
        return [frame for frame in cast(list[frames.Frame], found) if not self.expired(frame)]

    def log_expired(self, count: int) -> None:
        if count:
            logger.warning(
                "gaesignals: dropped %d payload(s) of signal %r older than its ttl of %d s",
                count,
                self.name,
                self.ttl,
            )

    def run(self, frame: frames.Frame) -> tuple[bool, bool]:
        """Decode a frame and call every handler; returns (all ok, decoded ok). Logs failures."""
        data = self._decode(frame)
        if data is _UNDECODABLE:
            return False, False
        return self._handle(data), True

    def _decode(self, item: frames.Frame | bytes) -> Any:
        """A frame's (or a bare pickled body's) payload, or :data:`_UNDECODABLE` (logged)."""
        try:
            return pickle.loads(item) if isinstance(item, bytes) else decode(item, self.settings)
        except Exception:
            logger.exception("gaesignals: could not decode a payload of signal %r", self.name)
            return _UNDECODABLE

    def _handle(self, data: Any) -> bool:
        """Call every handler on ``data``; False if one raised (each failure logged)."""
        ok = True
        for handler, call in self.calls:
            try:
                call(data)
            except Exception:
                ok = False
                logger.exception("gaesignals: handler %r for signal %r failed", handler, self.name)
        return ok

    def parse_weak(self, value: bytes) -> tuple[Found, list[frames.BadRegion]]:
        """What weak delivery needs of a value: with no ttl and the pickle codec, a clean
        value's pickled bodies alone (:func:`frames.pickled_bodies`), else its frames."""
        if self.quick:
            bodies = frames.pickled_bodies(value, self.signer, self.settings.secret_keys)
            if bodies is not None:
                return bodies, []
        return self.parse_all(value)

    def drain(self, fresh: Found) -> tuple[int, int]:
        """Run the handlers on every payload of ``fresh`` (already within the ttl; frames, or
        pickled bodies from :meth:`parse_weak`); returns how many succeeded and how many
        failed, each failure logged as :meth:`run` logs it."""
        if fresh and isinstance(fresh[0], bytes) and self.single:
            return self.drain_bodies(fresh)
        delivered = 0
        for item in fresh:
            data = self._decode(item)
            if data is not _UNDECODABLE:
                delivered += self._handle(data)
        return delivered, len(fresh) - delivered

    def drain_bodies(self, bodies: list[bytes]) -> tuple[int, int]:
        """:meth:`drain` of pickled bodies for one handler, weak delivery's common case: the
        same logs, no call per payload around ``pickle.loads`` and the handler."""
        loads = pickle.loads
        ((handler, call),) = self.calls
        delivered = 0
        for body in bodies:
            try:
                data = loads(body)
            except Exception:
                logger.exception("gaesignals: could not decode a payload of signal %r", self.name)
                continue
            try:
                call(data)
            except Exception:
                logger.exception("gaesignals: handler %r for signal %r failed", handler, self.name)
                continue
            delivered += 1
        return delivered, len(bodies) - delivered


# -- at once --------------------------------------------------------------------------------------


def send_now(name: str, data: Any = None, mapping: MappingArg | None = None) -> list[object]:
    """Run the handlers of ``name`` on ``data`` now, in this process, and return their results.

    The handlers are the default registry's receivers, or ``mapping``'s when given. The payload
    still goes through the codec and a signed frame, exactly as a deferred send and delivery
    would take it, so a payload that could not be sent or decoded fails here too. A handler's
    exception propagates (the remaining handlers do not run).
    """
    settings = get_settings()
    keys = signal_keys(check_name(name), settings.namespace)
    raw = encode_payload(data, keys, settings)
    found, bad = frames.parse(raw, keys.queue.encode(), settings.secret_keys)
    if bad or len(found) != 1:
        raise GaeSignalsError(f"a payload of {name!r} did not survive its own framing")
    value = decode(found[0], settings)
    if mapping is None:
        handlers: Sequence[Handler] = registry.receivers(name)
    else:
        signals = SignalMapping.coerce(mapping)
        handlers = signals.handlers(name) if name in signals else ()
    return [_call(handler, value, name) for handler in handlers]


def _passes_name(handler: Handler) -> bool:
    return bool(getattr(handler, "__gaesignals_pass_name__", False))


def _call(handler: Handler, data: Any, name: str) -> object:
    if _passes_name(handler):
        return handler(data, signal_name=name)
    return handler(data)


# -- reliable -------------------------------------------------------------------------------------


def _deliver_reliable(
    signals: SignalMapping,
    settings: Settings,
    specs: Mapping[str, SignalSpec],
    lease: int,
    max_attempts: int,
) -> int:
    owner = secrets.token_hex(16).encode()
    keys = {name: signal_keys(name, settings.namespace) for name in signals}
    delivered = 0
    bumps: Counter[str] = Counter()
    counting = settings.counters
    checking = _due_for_check(signals, settings)
    with settings.store.connection() as conn:
        # One lock per signal, whatever its shards.
        held = _acquire(conn, [k.lock for k in keys.values()], owner, lease)
        if not held:
            return 0
        if checking:
            flush_sent(conn, settings.store)  # sent counts this process still holds
        try:
            mine = {name: k for name, k in keys.items() if k.lock in held}
            shards = {name: _shards(name, settings, specs) for name in mine}
            queues = {queue: name for name in mine for queue, _ in shards[name]}
            current = conn.scan_many(
                [
                    key
                    for name, k in mine.items()
                    for key in (
                        _read_order(k, [queue for queue, _ in shards[name]])
                        if name in checking
                        else [queue for queue, _ in shards[name]]
                    )
                ]
                + [cursor for name in mine for _, cursor in shards[name]]
            )
            runners = {name: signals.runner(name, settings, specs[name]) for name in mine}
            parsed = {
                key: runners[queues[_base(key)]].parse_all(item[0])
                for key, item in current.items()
                if item[0] and _base(key) in queues
            }
            if counting:
                if checking:
                    _check_lost(conn, mine, queues, current, parsed, bumps)
                    _checked(checking & set(mine), settings)
                # Everything read is accounted for before any handler runs (see _check_lost),
                # in one call for all signals; what then stays in a queue is taken back at the
                # end. Done here, not before each acknowledgement, so a failing counter call
                # can never cost an acknowledgement its connection (its CAS token).
                for key, (found, bad) in parsed.items():
                    bumps[mine[queues[_base(key)]].counter("accounted")] += len(found) + len(bad)
                _flush(conn, bumps)
            holder = _Holder(conn, owner, lease, held)
            for name, signal in mine.items():
                # Shard by shard, each with its own progress cursor; within a shard, copies
                # stranded on other servers of a cluster first (older), then home.
                for queue, cursor_key in shards[name]:
                    cursor = current.get(cursor_key)
                    stranded = [k for k in parsed if k.startswith(queue + " ")]
                    for key in [*stranded, queue]:
                        if key in parsed:
                            delivered += _deliver_one(
                                holder,
                                runners[name],
                                signal,
                                key,
                                current[key],
                                parsed[key],
                                (cursor_key, cursor[0] if cursor else b"")
                                if key == queue
                                else None,
                                max_attempts,
                                bumps,
                            )
        except StoreUnavailable:
            # Not asked again for counters: what stays unwritten only makes ``accounted``
            # larger, so lost detection under-reports, never over-reports.
            bumps.clear()
            raise
        finally:
            if counting:
                _flush(conn, bumps, quietly=True)
            _release(conn, sorted(held), owner, lease)
    return delivered


def _lock_expiry(lease: int) -> int:
    """How long a lock lives: twice the lease, plus the second memcached's whole-tick expiry
    may shave off. A holder renews at the first payload boundary past half its lease, so any
    handler shorter than the lease finishes under a lock that is still its own."""
    return 2 * lease + 1


def _acquire(conn: Connection, locks: list[str], owner: bytes, lease: int) -> set[str]:
    """Take every lock that is free; a released lock is an empty value, a held one its owner."""
    expire = _lock_expiry(lease)
    added = conn.add_many(dict.fromkeys(locks, owner), expire=expire)
    held = {key for key, ok in added.items() if ok}
    rest = [key for key in locks if not added[key]]
    if rest:
        current = conn.gets_many(rest)
        free = {k: (owner, current[k][1]) for k in rest if k in current and not current[k][0]}
        if free:
            held.update(k for k, ok in conn.cas_many(free, expire=expire).items() if ok)
        gone = [k for k in rest if k not in current]
        if gone:
            held.update(
                k
                for k, ok in conn.add_many(dict.fromkeys(gone, owner), expire=expire).items()
                if ok
            )
    return held


def _release(conn: Connection, locks: list[str], owner: bytes, lease: int) -> None:
    """Release only the locks this owner still holds: a lock whose lease ran out and was taken
    by another deliverer is left alone (compare-and-set, never a blind delete)."""
    _rewrite_if_owner(conn, locks, owner, b"", lease)


def _rewrite_if_owner(
    conn: Connection, locks: list[str], owner: bytes, value: bytes, lease: int
) -> set[str]:
    """Set the locks ``owner`` still holds to ``value`` with a fresh lease; returns those set."""
    current = conn.gets_many(locks)
    ours = {k: (value, current[k][1]) for k in locks if k in current and current[k][0] == owner}
    if not ours:
        return set()
    return {k for k, ok in conn.cas_many(ours, expire=_lock_expiry(lease)).items() if ok}


class _Holder:
    """The locks one reliable delivery holds, renewed between payloads once half the lease is
    gone, so a long backlog of quick handlers never outlives its lease. The lease itself runs
    on the cache server's clock; the local clock only decides when to renew."""

    def __init__(self, conn: Connection, owner: bytes, lease: int, held: set[str]) -> None:
        self.conn = conn
        self.owner = owner
        self.lease = lease
        self.held = set(held)
        self.renew_at = time.monotonic() + lease / 2

    def still_holds(self, lock: str) -> bool:
        if time.monotonic() >= self.renew_at and self.held:
            locks = sorted(self.held)
            self.held = _rewrite_if_owner(self.conn, locks, self.owner, self.owner, self.lease)
            self.renew_at = time.monotonic() + self.lease / 2
        return lock in self.held


def _resume_index(found: list[frames.Frame], cursor: bytes) -> int:
    """Where a crashed predecessor's progress cursor says to resume, or 0.

    The cursor names the last payload it finished by offset and frame id; ids are random, so a
    cursor left over from an older value of the key can never match a frame of the new one.
    """
    end, _, ident = cursor.partition(b":")
    for index, frame in enumerate(found):
        if str(frame.end).encode() == end and frame.ident.hex().encode() == ident:
            return index + 1
    return 0


def _deliver_one(
    holder: _Holder,
    runner: _Runner,
    keys: SignalKeys,
    key: str,
    item: tuple[bytes, object],
    parsed: tuple[list[frames.Frame], list[frames.BadRegion]],
    cursor: tuple[str, bytes] | None,
    max_attempts: int,
    bumps: Counter[str],
) -> int:
    """Deliver the payloads under ``key`` (one shard of one locked signal) in order, then
    remove what was done.

    After each payload a progress cursor (``cursor``: the shard's cursor key and its value
    as read) records it, so a deliverer killed mid-way costs the next one a repeat of the
    payload that was running, not of the whole batch. ``cursor`` is None for a stranded copy
    on another server, which is delivered without one. A payload that fails stops this shard
    (it is retried first next time, the shard's order holds); the other shards go on.
    Payloads older than the signal's ttl are dropped (logged) and removed like handled ones.
    """
    conn = holder.conn
    name = runner.name
    value, token = item
    found, bad = parsed
    cursor_key, progress = cursor if cursor is not None else ("", None)
    first = _resume_index(found, progress) if progress else 0
    if first:
        logger.warning(
            "gaesignals: resuming signal %r after %d payload(s) an interrupted delivery finished",
            name,
            first,
        )
    delivered = expired = 0
    keep = b""
    cut = len(value)
    for index in range(first, len(found)):
        frame = found[index]
        if not holder.still_holds(keys.lock):
            logger.warning("gaesignals: lost the lock of %r mid-delivery; stopping there", name)
            runner.log_expired(expired)
            bumps[keys.counter("accounted")] -= len(found) + len(bad)  # all still queued
            return delivered
        if runner.expired(frame):
            expired += 1  # dropping it again after a crash costs nothing: no cursor needed
            continue
        ok, _ = runner.run(frame)
        bumps[keys.counter("delivered" if ok else "failed")] += 1
        if ok:
            delivered += 1
        else:
            attempts = frame.attempts + 1
            raw = frames.with_attempts(value[frame.start : frame.end], attempts)
            if attempts < max_attempts or not _dead_letter(
                conn, runner.settings, name, keys, raw, attempts
            ):
                # Stop here so the shard's order holds: this payload is retried first next time.
                keep = raw + value[frame.end :]
                cut = frame.start
                break
            bumps[keys.counter("dead_lettered")] += 1
        if progress is not None and index < len(found) - 1:  # the last: acknowledged below
            conn.set_many({cursor_key: b"%d:%s" % (frame.end, frame.ident.hex().encode())})
            progress = b"written"
    runner.log_expired(expired)
    # Everything read was accounted for up front: take back what stays queued, and all of it
    # if the acknowledgement surely did not happen (a timed-out one may still apply: kept).
    removed = sum(f.end <= cut for f in found) + sum(r.end <= cut for r in bad)
    accounted = keys.counter("accounted")
    bumps[keys.counter("dropped")] += sum(r.end <= cut for r in bad)
    bumps[keys.counter("expired")] += expired
    bumps[accounted] -= len(found) + len(bad) - removed
    if not _acknowledge(conn, name, key, value, token, keep):
        bumps[accounted] -= removed
        done = [frame for frame in found if frame.end <= cut]
        if progress is not None and done:
            # Not removed, but done: the cursor says so, and the next holder resumes after
            # it (and removes them) instead of running them again.
            last = done[-1]
            conn.set_many({cursor_key: b"%d:%s" % (last.end, last.ident.hex().encode())})
            return delivered
    if progress:
        conn.delete_many([cursor_key])
    return delivered


def _dead_letter(
    conn: Connection, settings: Settings, name: str, keys: SignalKeys, raw: bytes, attempts: int
) -> bool:
    try:
        append_frames(conn, settings.store, {keys.dead: raw})
    except GaeSignalsError:
        logger.exception("gaesignals: could not dead-letter a payload of %r; it stays queued", name)
        return False
    logger.error(
        "gaesignals: a payload of signal %r failed %d times and moved to its dead letters",
        name,
        attempts,
    )
    return True


def _acknowledge(
    conn: Connection, name: str, key: str, taken: bytes, token: object, keep: bytes
) -> bool:
    """Replace the bytes ``taken`` at the head of the key by ``keep``, keeping whatever senders
    appended meanwhile. Only appends can happen under our lock, so the head is still ``taken``;
    if it is not (the lease ran out and another deliverer acknowledged), nothing is written."""
    tail = b""
    for _ in range(ACK_ROUNDS):
        if conn.cas_many({key: (keep + tail, token)})[key]:
            return True
        current = conn.gets_many([key]).get(key)
        if current is None:
            if not keep or conn.add_many({key: keep})[key]:
                return True
            continue
        if not current[0].startswith(taken):
            logger.warning(
                "gaesignals: signal %r changed under its lock (lease too short?); "
                "its delivered payloads may be delivered again",
                name,
            )
            return False
        tail, token = current[0][len(taken) :], current[1]
    logger.warning(
        "gaesignals: could not acknowledge signal %r (its queue kept changing); the progress "
        "cursor marks what was done, so the next delivery resumes after it",
        name,
    )
    return False


# -- dead letters ---------------------------------------------------------------------------------


def dead_letters(name: str) -> list[Any]:
    """The payloads of ``name`` that failed ``max_attempts`` reliable deliveries, oldest first."""
    settings = get_settings()
    keys = signal_keys(check_name(name), settings.namespace)
    with settings.store.connection() as conn:
        item = conn.gets_many([keys.dead]).get(keys.dead)
    if not item:
        return []
    letters = []
    for frame in _frames(name, keys.queue, item[0], settings):
        try:
            letters.append(decode(frame, settings))
        except Exception:
            # Dead letters are often the payloads that could not be decoded in the first place.
            logger.exception("gaesignals: a dead letter of %r cannot be decoded; not listed", name)
    return letters


def requeue_dead_letters(name: str) -> int:
    """Move the dead letters of ``name`` back to its queue (attempts reset); returns how many."""
    return _take_dead_letters(name, requeue=True)


def purge_dead_letters(name: str) -> int:
    """Delete the dead letters of ``name``; returns how many there were."""
    return _take_dead_letters(name, requeue=False)


def _take_dead_letters(name: str, *, requeue: bool) -> int:
    settings = get_settings()
    keys = signal_keys(check_name(name), settings.namespace)
    with settings.store.connection() as conn:
        for _ in range(ACK_ROUNDS):
            item = conn.gets_many([keys.dead]).get(keys.dead)
            if not item or not item[0]:
                return 0
            if not conn.cas_many({keys.dead: (b"", item[1])})[keys.dead]:
                continue  # another failure was dead-lettered meanwhile: read again
            found = _frames(name, keys.queue, item[0], settings)
            if requeue and found:
                # Framed anew: attempts 0 and a fresh id, so a ttl counts from the requeue.
                fresh = b"".join(
                    frames.encode(
                        f.body,
                        keys.queue.encode(),
                        settings.secret_keys,
                        json_body=bool(f.flags & frames.FLAG_JSON),
                    )
                    for f in found
                )
                key, queues = route(name, keys)
                try:
                    append_frames(
                        conn, settings.store, {key: fresh}, {key: queues} if queues else None
                    )
                except GaeSignalsError:
                    append_frames(conn, settings.store, {keys.dead: item[0]})
                    raise
                if settings.counters:  # pending again: no longer accounted as having left
                    _flush(conn, Counter({keys.counter("accounted"): -len(found)}), quietly=True)
            return len(found)
    raise Contention(f"the dead letters of {name!r} kept changing; try again")
