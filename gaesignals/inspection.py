"""What is pending, what happened, and whether the store answers: for dashboards and probes.

``pending(names)`` counts the frames waiting under each signal without draining them;
``stats(names)`` reads the per-signal counters deliveries and sends keep in the store;
``overview(names)`` reads both, the reliable locks and the dead letters in two round trips
and never raises (what the dashboard and ``/metrics`` read); ``health(names)`` is that
overview as a JSON-ready dict, with the store's latency. ``open_session``,
``session_is_open`` and ``close_session`` keep the dashboard's login sessions in the store.

The counters are best-effort: they live in the same cache as the payloads, so a restart, a
flush or an eviction can reset one (they are small and hot, so the least likely items to go).
``lost`` counts payloads that deliveries found gone from the cache before anyone delivered them
(see :func:`gaesignals.accounting.check_lost`): what eviction took is reported, never hidden.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping
from typing import Any, NamedTuple

from . import frames
from .accounting import flush_sent
from .config import Settings, get_settings
from .exceptions import StoreUnavailable
from .keys import SignalKeys, check_name, shard_index, shard_queues, signal_keys
from .queue import records, spread
from .queue.collapse import debounced
from .queue.held import advice, tally
from .queue.lease import LockState
from .queue.routing import queues_of
from .queue.state import ping, read_counters, read_states, scan_queues
from .registration import registry
from .stores import Connection, home_key

#: The counters :func:`stats` reports, in this order.
REPORTED = (
    "sent",
    "delivered",
    "failed",
    "retried",
    "dead_lettered",
    "dropped",
    "expired",
    "lost",
    "coalesced",
    "cancelled",
    "purged",
)


class Pending(NamedTuple):
    """A signal's backlog: valid payloads pending, their bytes, the age in seconds of the
    oldest due one (since it was due; None when none is), how many of them wait for a later
    time (a send's ``delay`` or ``eta``), the Unix time the first of those is due, and the
    payloads this process may not read, held for a deliverer that can (see
    :mod:`gaesignals.queue.held`): by the key id that signed them, ``unsigned`` or
    ``pickled``, with how many of each; and how many pending payloads wait behind a
    ``debounce`` (a run of coalesced payloads not quiet yet, see :func:`~gaesignals.declare`),
    which are among ``count`` too."""

    count: int  # type: ignore[assignment]  # shadows tuple.count, by design of the API
    bytes: int
    oldest_age: float | None
    waiting: int = 0
    next_due: float | None = None
    held: tuple[tuple[str, int], ...] = ()
    debounced: int = 0


def _names(names: str | Iterable[str]) -> list[str]:
    return [check_name(n) for n in ([names] if isinstance(names, str) else names)]


def pending(names: str | Iterable[str]) -> dict[str, Pending]:
    """Count the payloads waiting under each signal, reading every key in one batch.

    Nothing is drained or locked. Bytes include framing and any unreadable garbage, not a
    spread signal's marker; count and age only frames that verify (with the configured
    secret key, if any). On a cluster, copies stranded on other servers are included, and so
    is every shard a spread signal's senders may use, whatever this process knows of its
    spread (the keys a sweep reads, then the shards they show in use).
    """
    settings = get_settings()
    wanted = _names(names)
    with settings.store.connection() as conn:
        return _backlog(conn, settings, wanted)


def _queue_reads(
    conn: Connection, settings: Settings, keys: Mapping[str, SignalKeys]
) -> Iterator[tuple[str, bytes, frames.QueueRead]]:
    """Each non-empty queue value of the signals of ``keys``, with its signal and its parse:
    the keys a sweep reads (whatever this process learned), then the other shards of a signal
    that those show wider (by a marker, or by payloads on a shard past the width known)."""
    pickled = settings.codec == "pickle"
    queues = {q: n for n in keys for q in queues_of(n, settings, every=True)}
    done: set[str] = set()
    while queues:
        widest: dict[str, int] = {}
        for key, value in scan_queues(conn, list(queues)).items():
            name = queues.get(home_key(key))
            if name is None or not value:
                continue
            # Frames are signed for the signal's own queue key, whatever shard holds them.
            signer = keys[name].queue.encode()
            parsed = frames.parse_queue(value, signer, settings.secret_keys, pickled=pickled)
            seen = max(parsed.marker_width, spread.rung(shard_index(home_key(key))))
            widest[name] = max(widest.get(name, 1), seen)
            yield name, value, parsed
        done.update(queues)
        queues = {
            q: n for n, w in widest.items() for q in shard_queues(keys[n].queue, w) if q not in done
        }


def _backlog(conn: Connection, settings: Settings, wanted: list[str]) -> dict[str, Pending]:
    """:func:`pending` on an open connection."""
    keys = {name: signal_keys(name, settings.namespace) for name in wanted}
    count = dict.fromkeys(wanted, 0)
    size = dict.fromkeys(wanted, 0)
    oldest: dict[str, float] = {}
    waiting = dict.fromkeys(wanted, 0)
    upcoming: dict[str, float] = {}
    held = {name: Counter[str]() for name in wanted}
    due_now: dict[str, list[frames.Frame]] = {name: [] for name in wanted}
    now = frames.clock()
    for name, value, parsed in _queue_reads(conn, settings, keys):
        held[name] += tally(parsed.held)
        count[name] += len(parsed.found)
        size[name] += len(value) - parsed.marker_bytes
        for frame in parsed.found:
            due = frames.not_before(frame) / 1000 if frame.meta else 0.0
            if due > now:
                waiting[name] += 1
                upcoming[name] = min(due, upcoming.get(name, due))
            else:
                since = max(float(frames.sent_at(frame.ident)), due)
                oldest[name] = min(since, oldest.get(name, since))
                if frame.meta:  # may be coalesced: collapse.debounced reads the rest
                    due_now[name].append(frame)
    return {
        name: Pending(
            count[name],
            size[name],
            max(now - oldest[name], 0.0) if name in oldest else None,
            waiting[name],
            upcoming.get(name),
            tuple(sorted(held[name].items())),
            debounced(due_now[name], int(now * 1000)),
        )
        for name in wanted
    }


def stats(names: str | Iterable[str]) -> dict[str, dict[str, int]]:
    """The counters of each signal (:data:`REPORTED`: sent, delivered, failed, retried,
    dead_lettered, dropped, expired, lost, coalesced, cancelled, purged), read in one batch; a
    missing counter reads as 0."""
    settings = get_settings()
    wanted = _names(names)
    keys = {name: signal_keys(name, settings.namespace) for name in wanted}
    with settings.store.connection() as conn:
        flush_sent(conn, settings.store)  # what this process counted but still holds
        return read_counters(conn, keys, REPORTED)


class SignalReport(NamedTuple):
    """All :func:`overview` knows of one signal: its backlog, its counters (by the names in
    :data:`REPORTED`), its reliable-delivery lock (a
    :class:`~gaesignals.queue.lease.LockState`: ``free``, ``held``, ``overlong`` or
    ``foreign``) and how many dead letters it keeps."""

    pending: Pending
    counters: dict[str, int]
    lock: LockState
    dead_letters: int


class Overview(NamedTuple):
    """What :func:`overview` read: whether the store answered (else ``error`` says why), how
    long its first batch took, and each signal's report (empty when the store is down)."""

    reachable: bool
    error: str | None
    latency_ms: float | None
    signals: dict[str, SignalReport]


def overview(names: Iterable[str]) -> Overview:
    """Everything about ``names`` in as few round trips as the store allows, and never raises:
    one batch reads the queues (see :func:`pending`), one more the counters, the locks and
    the dead letters together. With no names, one small read tells whether the store is up.

    This is what a dashboard or a metrics scrape reads; ``latency_ms`` times the first batch.
    """
    settings = get_settings()
    try:
        wanted = _names(list(names))
        started = time.perf_counter()
        with settings.store.connection() as conn:
            if not wanted:
                ping(conn, settings.namespace)
            backlog = _backlog(conn, settings, wanted)
            latency = round((time.perf_counter() - started) * 1000, 3)
            signals = _read_rest(conn, settings, backlog) if wanted else {}
    except Exception as error:  # a report tells what went wrong; it never raises
        return Overview(False, f"{type(error).__name__}: {error}", None, {})
    return Overview(True, None, latency, signals)


def _read_rest(
    conn: Connection, settings: Settings, backlog: dict[str, Pending]
) -> dict[str, SignalReport]:
    """The counters, locks and dead letters of the signals in ``backlog``, in one batch."""
    keys = {name: signal_keys(name, settings.namespace) for name in backlog}
    flush_sent(conn, settings.store)  # what this process counted but still holds
    leases = {name: registry.spec(name).lease for name in backlog}
    widths = {name: len(queues_of(name, settings)) for name in backlog}
    states = read_states(conn, keys, REPORTED, settings.secret_keys, leases, widths)
    return {
        name: SignalReport(backlog[name], state.counters, state.lock, state.dead_letters)
        for name, state in states.items()
    }


#: What :func:`health` says of a lock that keeps ``ok`` False.
_LOCK_PROBLEMS = {
    LockState.OVERLONG: "signal {name!r}: its reliable lock claims a longer lease than the "
    "{lease} s the signal declares, and is honoured only for that",
    LockState.FOREIGN: "signal {name!r}: its reliable lock was not written by a live deliverer "
    "(not one of ours, or held past its {lease} s lease); the next reliable delivery takes it over",
}


def health(names: Iterable[str] = ()) -> dict[str, Any]:
    """A JSON-serialisable report for monitoring; never raises on a store that is down.

    ``{"ok": bool, "store": {"kind", "reachable", "latency_ms", "error"}, "problems": [str],
    "signals": {name: {"pending", "pending_bytes", "oldest_age", "waiting", "next_due",
    "debounced", "held", "lock", "dead_letters", **counters}}}`` (``waiting``: payloads held
    back by a delay or a retry, the first due at ``next_due``; ``debounced``: payloads due
    but held back by their signal's debounce; ``held``: payloads this process may not
    read, by the key id that signed them, ``unsigned`` or ``pickled``, which wait for a
    deliverer that can). ``problems`` has a line for each reason ``ok`` is False: the store
    cannot be reached (with the error); a signal's reliable-delivery lock is ``"overlong"``
    (claiming a longer lease than the signal declares: honoured only for the declared one) or
    ``"foreign"`` (not one of ours, or held past the lease its signal allows: the next
    reliable delivery takes it over), else it is ``"free"`` or ``"held"``; or payloads are
    held, saying which key signed them and which keys this process holds. It reads as
    :func:`overview` does.
    """
    found = overview(names)
    settings = get_settings()
    problems = [] if found.reachable else [f"the store cannot be reached: {found.error}"]
    problems += [
        _LOCK_PROBLEMS[report.lock].format(name=name, lease=registry.spec(name).lease)
        for name, report in found.signals.items()
        if report.lock in _LOCK_PROBLEMS
    ]
    problems += [
        sentence
        for name, report in found.signals.items()
        for sentence in advice(name, dict(report.pending.held), settings.secret_keys)
    ]
    return {
        "ok": not problems,
        "problems": problems,
        "store": {
            "kind": type(settings.store).__name__,
            "reachable": found.reachable,
            "latency_ms": found.latency_ms,
            "error": found.error,
        },
        "signals": {
            name: {
                "pending": report.pending.count,
                "pending_bytes": report.pending.bytes,
                "oldest_age": report.pending.oldest_age,
                "waiting": report.pending.waiting,
                "next_due": report.pending.next_due,
                "debounced": report.pending.debounced,
                "held": dict(report.pending.held),
                "lock": report.lock,
                "dead_letters": report.dead_letters,
                **report.counters,
            }
            for name, report in found.signals.items()
        },
    }


# -- the dashboard's login sessions ---------------------------------------------------------------
# Kept here, beside the other reads a dashboard makes, so the dashboard never touches a store
# primitive. A session is live while its record is in the store: logging out deletes it, and a
# flush or an eviction logs it out too (the safe way round, unlike a list of revoked sessions).


def _session_key(session: str, namespace: str) -> str:
    return f"gs:{namespace}:s:{{{session}}}"


def open_session(session: str, seconds: int) -> None:
    """Record the dashboard login ``session`` (letters and digits) as live for ``seconds``;
    raises :class:`~gaesignals.StoreUnavailable` when the store cannot keep it."""
    settings = get_settings()
    if not records.keep(settings.store, _session_key(session, settings.namespace), b"1", seconds):
        raise StoreUnavailable("the store did not keep the dashboard session")


def session_is_open(session: str) -> bool:
    """Whether the dashboard login ``session`` is live (opened, not closed, not expired);
    False, never an error, when the store cannot say."""
    settings = get_settings()
    key = _session_key(session, settings.namespace)
    try:
        return records.fetch(settings.store, key) is not None
    except StoreUnavailable:
        return False


def close_session(session: str) -> None:
    """End the dashboard login ``session`` for every process at once."""
    settings = get_settings()
    records.forget(settings.store, _session_key(session, settings.namespace))


__all__ = ["Overview", "Pending", "SignalReport", "health", "overview", "pending", "stats"]
