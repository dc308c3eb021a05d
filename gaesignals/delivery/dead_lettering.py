"""Dead letters: the payloads that failed ``max_attempts`` reliable deliveries, kept apart.

They are listed, requeued or purged by name. A requeued letter keeps its id, its send time and
its signature, with its attempts reset: a ``ttl`` still counts from the original send, and a
frame planted in the dead-letter key can never come back newly framed (signed with today's
key). A letter signed with a key this process does not hold is not listed here, and is
requeued (or purged) as it is, for a deliverer that holds its key.
The store work is :mod:`gaesignals.queue.dead_letters`; decoding and logging are done here.
"""

from __future__ import annotations

import logging
from typing import Any, NamedTuple

from .. import frames
from ..codec import decode
from ..config import Settings, get_settings
from ..keys import check_name, signal_keys
from ..queue import dead_letters as letters
from .retries import last_error
from .runner import log_bad

logger = logging.getLogger("gaesignals")


def _logged(name: str, settings: Settings, held: letters.Letters) -> int:
    """How many letters ``held`` has (verified, or kept for a deliverer with another key), its
    unreadable regions logged (dropped)."""
    log_bad(name, signal_keys(name, settings.namespace).queue, held.bad)
    return len(held.whole)


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
    held = letters.read(settings, check_name(name))
    _logged(name, settings, held)
    details = []
    for frame in held.found:
        try:
            data = decode(frame, settings)
        except Exception:
            # Dead letters are often the payloads that could not be decoded in the first place.
            logger.exception("a dead letter of %r cannot be decoded; not listed", name)
            continue
        details.append(
            DeadLetter(data, frame.attempts, last_error(frame), frames.sent_at(frame.ident))
        )
    return details


def requeue_dead_letters(name: str) -> int:
    """Move the dead letters of ``name`` back to its queue (attempts reset); returns how many.
    Letters signed with a key this process does not hold move too, as they are."""
    settings = get_settings()
    return _logged(name, settings, letters.requeue(settings, check_name(name)))


def purge_dead_letters(name: str) -> int:
    """Delete the dead letters of ``name``; returns how many there were."""
    settings = get_settings()
    return _logged(name, settings, letters.purge(settings, check_name(name)))
