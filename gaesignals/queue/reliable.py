"""Reliable delivery's queue operations under its shards' locks, beside :mod:`.lease`.

:func:`read` reads the locked signals' shards and their progress cursors (:mod:`.progress`) in
one batch; :func:`reschedule` rewrites a failed payload's frame with its attempts, its new due
time and its last error, which the shard's acknowledgement (:func:`.take.acknowledge`) then
keeps at the head in place of the frame it read.

A bounded delivery shares a backlog: :func:`widen_to` spreads an undeclared signal over more
shards and :func:`move` appends frames to them with the send path, before the mover
acknowledges them from the shard it holds (a crash in between costs duplicates, never a loss);
a deliverer that could not lock a signal's shard 0, where the width is marked, learns it from
the signal's spread key (:func:`learn_widths`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from .. import frames
from ..config import Settings
from ..exceptions import Contention, QueueFull
from ..keys import spread_key
from ..stores import Cached, Connection, Store
from ..timing import meta_for
from . import spread
from .append import append_frames, widen

#: Metadata entry type of a dead letter's (or a retried payload's) last error.
META_ERROR = 2


def read(conn: Connection, queues: Sequence[str], cursors: Sequence[str]) -> dict[str, Cached]:
    """Each of ``queues`` and ``cursors`` that exists, with its CAS token, read in one batch;
    on a cluster, also the queues' copies stranded on servers other than their home
    (named by :func:`~gaesignals.stores.stranded_key`, older than the home copy)."""
    return conn.scan_many([*queues, *cursors])


def reschedule(
    frame: frames.Frame,
    signal_key: bytes,
    secret_keys: Sequence[bytes],
    *,
    attempts: int,
    due: int = 0,
    error: str | None = None,
) -> bytes:
    """``frame`` framed anew with ``attempts``, not before ``due`` (Unix ms, 0: at once) and
    naming ``error``: same id, same body, its other metadata kept, signed again (only ever
    called for a frame this process verified)."""
    entries = dict(frames.metadata(frame.meta) or {}) if frame.meta else {}
    entries.pop(frames.META_NOT_BEFORE, None)
    if error is not None:
        entries[META_ERROR] = error.encode("utf-8")[:255]
    meta = meta_for(due) + b"".join(frames.meta_entry(k, v) for k, v in entries.items())
    return frames.encode(
        frame.body,
        signal_key,
        secret_keys,
        json_body=bool(frame.flags & frames.FLAG_JSON),
        attempts=attempts,
        ident=frame.ident,
        meta=meta,
    )


def widen_to(
    conn: Connection, settings: Settings, queues: tuple[str, ...], wanted: int
) -> tuple[str, ...]:
    """Spread a signal (``queues``: its queue keys as this process knows them) by doubling, as
    a hot signal spreads, until it has ``wanted`` shards or can spread no further (declared
    ``shards``, the widest a signal gets, or a marker not written); returns its queue keys."""
    while len(queues) < wanted:
        wider = widen(conn, settings, queues)
        if len(wider) <= len(queues):
            break
        queues = wider
    return queues


def move(conn: Connection, store: Store, values: Mapping[str, bytes]) -> set[str]:
    """Append each of ``values`` (frames taken from another shard of the same signal, so
    their signatures hold) to its queue key with the send path; returns the keys written.
    Nothing is counted ``sent``: the payloads were counted when they were sent."""
    try:
        append_frames(conn, store, values)
    except (QueueFull, Contention) as error:
        return set(values) - set(error.keys)
    return set(values)


def learn_widths(conn: Connection, settings: Settings, bases: Sequence[str]) -> set[str]:
    """Learn from their spread keys how far the signals whose own queue keys are ``bases``
    have spread (a deliverer that could not lock a signal's shard 0 read no marker there);
    returns those found wider than this process knew."""
    found = conn.gets_many([spread_key(base) for base in bases])
    wider = set()
    for base in bases:
        item = found.get(spread_key(base))
        if item is None or not item.value:
            continue
        seen = frames.parse_queue(item.value, base.encode(), settings.secret_keys).marker_width
        if spread.learn(settings, base, seen):
            wider.add(base)
    return wider
