"""The delivering side: :class:`SignalMapping` and :func:`deliver`, weak and reliable.

Weak (the default) takes every pending payload of every signal in two batched calls: one read
of all keys with CAS tokens, one CAS reset of the non-empty ones. A payload goes to the handlers
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
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from functools import lru_cache, partial
from typing import Any, TypeVar

from . import frames
from .config import Settings, get_settings
from .exceptions import GaeSignalsError
from .registry import (
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

    def subset(self, names: Iterable[str]) -> SignalMapping:
        """The same mapping restricted to ``names``, keeping its overrides."""
        return SignalMapping(
            [(name, self._handlers[name]) for name in names],
            lease=self.lease,
            max_attempts=self.max_attempts,
        )


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
    specs = {name: registry.spec(name) for name in signals}
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
    # Every queue key of every signal (all its shards), in mapping order then shard order.
    names: dict[str, str] = {}
    for name in signals:
        for queue in _queue_keys(name, settings.namespace, specs[name].shards):
            names[queue] = name
    order = {key: index for index, key in enumerate(names)}
    runners: dict[str, _Runner] = {}
    delivered = 0
    todo = list(names)
    with settings.store.connection() as conn:
        for _ in range(WEAK_ROUNDS):
            current = conn.scan_many(todo)
            taken = {key: (b"", token) for key, (value, token) in current.items() if value}
            if not taken:
                break
            won = conn.cas_many(taken)
            # Mapping order; a copy stranded on another server is older than the home copy.
            for key in sorted(taken, key=lambda k: (order[_base(k)], " " not in k)):
                if won[key]:
                    name = names[_base(key)]
                    runner = runners.get(name)
                    if runner is None:
                        runner = runners[name] = _Runner(
                            name, signals.handlers(name), settings, specs[name]
                        )
                    delivered += runner.drain(current[key][0])
            todo = list(dict.fromkeys(_base(key) for key in taken if not won[key]))
            if not todo:
                break
        else:
            # Normal under heavy sending: nothing is lost, the next delivery takes them.
            logger.info(
                "gaesignals: %d signal key(s) stayed contended; left for the next delivery",
                len(todo),
            )
    return delivered


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


def _frames(name: str, key: str, value: bytes, settings: Settings) -> list[frames.Frame]:
    """The verified frames of a signal's value; ``key`` is the signal's own queue key, its
    identity in frame signatures, whichever shard the value came from."""
    parsed, bad = frames.parse(value, key.encode(), settings.secret_keys)
    if bad:
        _log_bad(name, key, bad)
    return parsed


def _log_bad(name: str, key: str, bad: list[frames.BadRegion]) -> None:
    for region in bad:
        logger.error(
            "gaesignals: dropped %d unreadable byte(s) in signal %r (key %s): %s",
            region.end - region.start,
            name,
            key,
            region.reason,
        )


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

    __slots__ = ("calls", "cutoff", "identity", "name", "settings", "ttl")

    def __init__(
        self, name: str, handlers: Sequence[Handler], settings: Settings, spec: SignalSpec
    ) -> None:
        self.name = name
        self.settings = settings
        self.identity = signal_keys(name, settings.namespace).queue
        self.calls = [
            (handler, partial(handler, signal_name=name) if _passes_name(handler) else handler)
            for handler in handlers
        ]
        self.ttl = spec.ttl
        # Whole seconds on the sender's clock: a payload sent before this second is too old.
        self.cutoff = -1 if spec.ttl is None else int(frames.clock()) - spec.ttl

    def parse(self, value: bytes) -> list[frames.Frame]:
        found, bad = frames.parse(value, self.identity.encode(), self.settings.secret_keys)
        if bad:
            _log_bad(self.name, self.identity, bad)
        return found

    def expired(self, frame: frames.Frame) -> bool:
        return frames.sent_at(frame.ident) < self.cutoff

    def fresh(self, found: list[frames.Frame]) -> list[frames.Frame]:
        """``found`` without the payloads older than the signal's ttl, which are logged."""
        if self.ttl is None:
            return found
        kept = [frame for frame in found if not self.expired(frame)]
        self.log_expired(len(found) - len(kept))
        return kept

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
        try:
            data = decode(frame, self.settings)
        except Exception:
            logger.exception("gaesignals: could not decode a payload of signal %r", self.name)
            return False, False
        ok = True
        for handler, call in self.calls:
            try:
                call(data)
            except Exception:
                ok = False
                logger.exception("gaesignals: handler %r for signal %r failed", handler, self.name)
        return ok, True

    def drain(self, value: bytes) -> int:
        """Run the handlers on every fresh payload of ``value``; returns how many succeeded.

        :meth:`run` in one loop, for weak delivery's many payloads: the same checks and logs,
        without a call per payload around them.
        """
        loads = pickle.loads if self.settings.codec == "pickle" else None
        json_flag = frames.FLAG_JSON
        calls = self.calls
        delivered = 0
        for _, _, flags, _, _, body in self.fresh(self.parse(value)):
            try:
                if flags & json_flag:
                    data = json.loads(body)
                elif loads is not None:
                    data = loads(body)
                else:
                    raise GaeSignalsError("a pickled frame arrived while the codec is json")
            except Exception:
                logger.exception("gaesignals: could not decode a payload of signal %r", self.name)
                continue
            ok = True
            for handler, call in calls:
                try:
                    call(data)
                except Exception:
                    ok = False
                    logger.exception(
                        "gaesignals: handler %r for signal %r failed", handler, self.name
                    )
            delivered += ok
        return delivered


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
    with settings.store.connection() as conn:
        # One lock per signal, whatever its shards.
        held = _acquire(conn, [k.lock for k in keys.values()], owner, lease)
        if not held:
            return 0
        try:
            mine = [name for name, k in keys.items() if k.lock in held]
            shards = {name: _shards(name, settings, specs) for name in mine}
            current = conn.scan_many(
                [queue for name in mine for queue, _ in shards[name]]
                + [cursor for name in mine for _, cursor in shards[name]]
            )
            holder = _Holder(conn, owner, lease, held)
            for name in mine:
                runner = _Runner(name, signals.handlers(name), settings, specs[name])
                # Shard by shard, each with its own progress cursor; within a shard, copies
                # stranded on other servers of a cluster first (older), then home.
                for queue, cursor_key in shards[name]:
                    cursor = current.get(cursor_key)
                    stranded = [k for k in current if k.startswith(queue + " ")]
                    for key in [*stranded, queue]:
                        item = current.get(key)
                        if item and item[0]:
                            delivered += _deliver_one(
                                holder,
                                runner,
                                keys[name],
                                key,
                                item,
                                (cursor_key, cursor[0] if cursor else b"")
                                if key == queue
                                else None,
                                max_attempts,
                            )
        finally:
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
    cursor: tuple[str, bytes] | None,
    max_attempts: int,
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
    found = runner.parse(value)
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
    for index in range(first, len(found)):
        frame = found[index]
        if not holder.still_holds(keys.lock):
            logger.warning("gaesignals: lost the lock of %r mid-delivery; stopping there", name)
            runner.log_expired(expired)
            return delivered
        if runner.expired(frame):
            expired += 1  # dropping it again after a crash costs nothing: no cursor needed
            continue
        ok, _ = runner.run(frame)
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
                break
        if progress is not None and index < len(found) - 1:  # the last: acknowledged below
            conn.set_many({cursor_key: b"%d:%s" % (frame.end, frame.ident.hex().encode())})
            progress = b"written"
    runner.log_expired(expired)
    _acknowledge(conn, name, key, value, token, keep)
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
) -> None:
    """Replace the bytes ``taken`` at the head of the key by ``keep``, keeping whatever senders
    appended meanwhile. Only appends can happen under our lock, so the head is still ``taken``;
    if it is not (the lease ran out and another deliverer acknowledged), nothing is written."""
    tail = b""
    for _ in range(ACK_ROUNDS):
        if conn.cas_many({key: (keep + tail, token)})[key]:
            return
        current = conn.gets_many([key]).get(key)
        if current is None:
            if not keep or conn.add_many({key: keep})[key]:
                return
            continue
        if not current[0].startswith(taken):
            logger.warning(
                "gaesignals: signal %r changed under its lock (lease too short?); "
                "its delivered payloads may be delivered again",
                name,
            )
            return
        tail, token = current[0][len(taken) :], current[1]
    logger.error("gaesignals: could not acknowledge signal %r; its payloads will come again", name)


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
            return len(found)
    raise Contention(f"the dead letters of {name!r} kept changing; try again")
