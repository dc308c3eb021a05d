"""Reliable delivery's queue operations under a signal's lock, beside :mod:`.lease`.

:func:`read` reads the locked signals' shards and their progress cursors (:mod:`.progress`) in
one batch; :func:`reschedule` rewrites a failed payload's frame with its attempts, its new due
time and its last error, which the shard's acknowledgement (:func:`.take.acknowledge`) then
keeps at the head in place of the frame it read.
"""

from __future__ import annotations

from collections.abc import Sequence

from .. import frames
from ..stores import Cached, Connection
from ..timing import meta_for

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
