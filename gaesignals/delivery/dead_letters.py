"""Dead letters: the payloads that failed ``max_attempts`` reliable deliveries, kept apart.

They are listed, requeued or purged by name. A requeued letter keeps its id, its send time and
its signature, with its attempts reset: a ``ttl`` still counts from the original send, and a
letter signed with a key since retired is dropped like any frame signed with it, so a frame
planted in the dead-letter key can never come back newly framed (signed with today's key).
"""

from __future__ import annotations

import logging
from collections import Counter
from typing import Any, NamedTuple

from .. import frames
from ..accounting import flush
from ..codec import decode
from ..config import get_settings
from ..exceptions import Contention, GaeSignalsError
from ..keys import check_name, signal_keys
from ..queue.append import append_frames
from ..queue.routing import route
from ..queue.take import ACK_ROUNDS
from .retries import last_error
from .runner import log_bad

logger = logging.getLogger("gaesignals")


def _frames(
    name: str, key: str, value: bytes, secret_keys: tuple[bytes, ...], *, held: bool = False
) -> list[frames.Frame]:
    """The verified frames of a dead-letter value (its unreadable regions logged, dropped),
    and with ``held`` those this process may not read (see :mod:`..queue.held`), in order:
    a requeue moves them back to the queue as they are, for a deliverer that can."""
    parsed = frames.parse_queue(value, key.encode(), secret_keys)
    log_bad(name, key, parsed.bad)
    if not held or not parsed.held:
        return parsed.found
    return sorted(parsed.found + [h.frame for h in parsed.held], key=lambda f: f.start)


class DeadLetter(NamedTuple):
    """A dead letter and why it died: its payload, its failed attempts, the last error (type,
    message and the innermost traceback line; None where none was kept) and its send time."""

    data: Any
    attempts: int
    error: str | None
    sent_at: int


def dead_letters(name: str) -> list[Any]:
    """The payloads of ``name`` that failed ``max_attempts`` reliable deliveries (or were
    rejected), oldest first; :func:`dead_letter_details` tells why."""
    return [letter.data for letter in dead_letter_details(name)]


def dead_letter_details(name: str) -> list[DeadLetter]:
    """The dead letters of ``name``, oldest first, each with why it died."""
    settings = get_settings()
    keys = signal_keys(check_name(name), settings.namespace)
    with settings.store.connection() as conn:
        item = conn.gets_many([keys.dead]).get(keys.dead)
    if not item:
        return []
    letters = []
    for frame in _frames(name, keys.queue, item[0], settings.secret_keys):
        try:
            data = decode(frame, settings)
        except Exception:
            # Dead letters are often the payloads that could not be decoded in the first place.
            logger.exception("a dead letter of %r cannot be decoded; not listed", name)
            continue
        letters.append(
            DeadLetter(data, frame.attempts, last_error(frame), frames.sent_at(frame.ident))
        )
    return letters


def requeue_dead_letters(name: str) -> int:
    """Move the dead letters of ``name`` back to its queue (attempts reset); returns how many.
    Letters signed with a key this process does not hold move too, as they are."""
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
            found = _frames(name, keys.queue, item[0], settings.secret_keys, held=True)
            if requeue and found:
                fresh = b"".join(frames.with_attempts(item[0][f.start : f.end], 0) for f in found)
                key, queues = route(name, keys, settings)
                try:
                    append_frames(
                        conn,
                        settings.store,
                        {key: fresh},
                        {key: queues or (key,)},
                        settings=settings,
                    )
                except GaeSignalsError:
                    append_frames(conn, settings.store, {keys.dead: item[0]})
                    raise
                if settings.counters:  # pending again: no longer accounted as having left
                    flush(conn, Counter({keys.counter("accounted"): -len(found)}), quietly=True)
            return len(found)
    raise Contention(f"the dead letters of {name!r} kept changing; try again", [keys.dead])
