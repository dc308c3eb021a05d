"""What is pending, what happened, and whether the store answers: for dashboards and probes.

``pending(names)`` counts the frames waiting under each signal without draining them;
``stats(names)`` reads the per-signal counters deliveries and sends keep in the store;
``health(names)`` puts both together with a timed round trip to the store, as a JSON-ready dict
that never raises.

The counters are best-effort: they live in the same cache as the payloads, so a restart, a
flush or an eviction can reset one (they are small and hot, so the least likely items to go).
``lost`` counts payloads that deliveries found gone from the cache before anyone delivered them
(see :func:`gaesignals.accounting.check_lost`): what eviction took is reported, never hidden.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any, NamedTuple

from . import frames
from .accounting import flush_sent, number
from .config import get_settings
from .keys import check_name, signal_keys
from .queue.lease import lock_state
from .queue.routing import queues_of
from .queue.spread import learn

#: The counters :func:`stats` reports, in this order.
REPORTED = ("sent", "delivered", "failed", "dead_lettered", "dropped", "expired", "lost")


class Pending(NamedTuple):
    """A signal's backlog: valid payloads pending, their bytes, the age in seconds of the
    oldest due one (since it was due; None when none is), how many of them wait for a later
    time (a send's ``delay`` or ``eta``), and the Unix time the first of those is due."""

    count: int  # type: ignore[assignment]  # shadows tuple.count, by design of the API
    bytes: int
    oldest_age: float | None
    waiting: int = 0
    next_due: float | None = None


def _names(names: str | Iterable[str]) -> list[str]:
    return [check_name(n) for n in ([names] if isinstance(names, str) else names)]


def pending(names: str | Iterable[str]) -> dict[str, Pending]:
    """Count the payloads waiting under each signal, reading every key in one batch.

    Nothing is drained or locked. Bytes include framing and any unreadable garbage, not a
    spread signal's marker; count and age only frames that verify (with the configured
    secret key, if any). On a cluster, copies stranded on other servers are included. A
    signal found spread over more shards than this process knew costs a second batch.
    """
    settings = get_settings()
    wanted = _names(names)
    keys = {name: signal_keys(name, settings.namespace) for name in wanted}
    count = dict.fromkeys(wanted, 0)
    size = dict.fromkeys(wanted, 0)
    oldest: dict[str, float] = {}
    waiting = dict.fromkeys(wanted, 0)
    upcoming: dict[str, float] = {}
    now = frames.clock()
    todo = wanted
    read: set[str] = set()
    with settings.store.connection() as conn:
        while todo:
            # Every shard's key; frames are signed for the signal's own queue key.
            queues = {q: n for n in todo for q in queues_of(n, settings) if q not in read}
            read.update(queues)
            current = conn.scan_many(list(queues))
            before = settings.widths.generation
            for key, (value, _) in current.items():
                name = queues.get(key.partition(" ")[0])
                if name is None or not value:
                    continue
                parsed = frames.parse_queue(value, keys[name].queue.encode(), settings.secret_keys)
                if parsed.spread:
                    learn(settings, keys[name].queue, parsed.spread)
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
            todo = [n for n in todo if settings.widths.generation != before]
    return {
        name: Pending(
            count[name],
            size[name],
            max(now - oldest[name], 0.0) if name in oldest else None,
            waiting[name],
            upcoming.get(name),
        )
        for name in wanted
    }


def stats(names: str | Iterable[str]) -> dict[str, dict[str, int]]:
    """The counters of each signal (sent, delivered, failed, dead_lettered, dropped, expired, lost),
    read in one batch; a missing counter reads as 0."""
    settings = get_settings()
    wanted = _names(names)
    keys = {name: signal_keys(name, settings.namespace) for name in wanted}
    with settings.store.connection() as conn:
        flush_sent(conn, settings.store)  # what this process counted but still holds
        current = conn.gets_many([k.counter(c) for k in keys.values() for c in REPORTED])
    result = {}
    for name, k in keys.items():
        counts = {}
        for counter in REPORTED:
            counts[counter] = number(current, k.counter(counter)) or 0
        result[name] = counts
    return result


def health(names: Iterable[str] = ()) -> dict[str, Any]:
    """A JSON-serialisable report for monitoring; never raises on a store that is down.

    ``{"ok": bool, "store": {"kind", "reachable", "latency_ms", "error"}, "signals": {name:
    {"pending", "pending_bytes", "oldest_age", "waiting", "next_due", "lock",
    **counters}}}`` (``waiting``: payloads held back by a delay or a retry, the first due at
    ``next_due``). ``ok`` is False, with
    the error, when the store cannot be reached, and when a signal's reliable-delivery lock is
    ``"foreign"``: not one of ours, or seen by this process held past its lease (else ``"free"``
    or ``"held"``); the next reliable delivery takes such a lock over.
    """
    settings = get_settings()
    store = settings.store
    report: dict[str, Any] = {
        "ok": False,
        "store": {
            "kind": type(store).__name__,
            "reachable": False,
            "latency_ms": None,
            "error": None,
        },
        "signals": {},
    }
    try:
        wanted = _names(list(names))
        started = time.perf_counter()
        with store.connection() as conn:
            conn.gets_many([signal_keys("health", settings.namespace).counter("sent")])
        report["store"]["latency_ms"] = round((time.perf_counter() - started) * 1000, 3)
        report["store"]["reachable"] = True
        locks: dict[str, str] = {}
        if wanted:
            backlog = pending(wanted)
            counters = stats(wanted)
            locks = _lock_states(wanted)
            report["signals"] = {
                name: {
                    "pending": backlog[name].count,
                    "pending_bytes": backlog[name].bytes,
                    "oldest_age": backlog[name].oldest_age,
                    "waiting": backlog[name].waiting,
                    "next_due": backlog[name].next_due,
                    "lock": locks[name],
                    **counters[name],
                }
                for name in wanted
            }
        report["ok"] = "foreign" not in locks.values()
    except Exception as error:  # a health probe reports; it never raises
        report["store"]["error"] = f"{type(error).__name__}: {error}"
    return report


def _lock_states(names: list[str]) -> dict[str, str]:
    """Each signal's reliable-delivery lock: ``free``, ``held`` or ``foreign``."""
    settings = get_settings()
    locks = {name: signal_keys(name, settings.namespace).lock for name in names}
    with settings.store.connection() as conn:
        current = conn.gets_many(list(locks.values()))
    return {name: lock_state(key, current.get(key)) for name, key in locks.items()}


__all__ = ["Pending", "health", "pending", "stats"]
