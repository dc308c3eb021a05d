"""Taking back what was sent: :func:`cancel` one pending payload, :func:`purge` a signal.

Both are queue operations (:mod:`.queue.cancel`, :mod:`.queue.purge`); this module is their
public face, beside :mod:`.sending` on the sending side. A cancellation is a small frame
appended beside the payload (one round trip, as durable as the payload); the take that reads
both drops the payload, counted ``cancelled``. What cannot be known without a read is whether
the payload was still pending: a cancellation of one already delivered changes nothing and
counts nothing.
"""

from __future__ import annotations

from . import tracing
from .config import get_settings
from .eager import has_receivers
from .keys import check_name
from .queue import cancel as _cancel
from .queue import purge as _purge
from .queue.cancel import CancelResult

__all__ = ["CancelResult", "cancel", "purge"]


def cancel(name: str, payload_id: str) -> CancelResult:
    """Cancel the pending payload ``payload_id`` of signal ``name`` (a send's
    :attr:`Receipt.id <gaesignals.sending.Receipt.id>`): if it is still pending, no handler
    ever gets it. One round trip, no read.

    Returns :attr:`CancelResult.CANCELLED` once the cancellation is stored: the library cannot
    tell then whether the payload was still pending or already delivered (that costs a read;
    a cancellation of a delivered payload is dropped by the next delivery, counting nothing).
    In eager mode a signal with receivers never has anything pending, so the answer is
    :attr:`CancelResult.DELIVERED` and nothing is written. Raises
    :class:`~gaesignals.InvalidPayloadId` for text that is not a payload id,
    :class:`~gaesignals.StoreUnavailable` when the cache is down.
    """
    settings = get_settings()
    check_name(name)
    _cancel.parse_payload_id(payload_id)  # a bad id is refused in eager mode too
    if settings.eager and has_receivers(name):
        return CancelResult.DELIVERED
    return _cancel.cancel(settings, name, payload_id)


def purge(name: str) -> int:
    """Drop every pending payload of signal ``name``, on every shard, and return how many:
    for operators (a signal whose payloads must not run, a backlog to forget). They count as
    ``purged``; its dead letters stay (see :func:`~gaesignals.purge_dead_letters`). Raises
    :class:`~gaesignals.Contention` when senders kept changing its keys (what was dropped
    stays dropped), :class:`~gaesignals.StoreUnavailable` when the cache is down."""
    settings = get_settings()
    count = _purge.purge(settings, check_name(name))
    if count and tracing.active():
        tracing.count(tracing.PURGED, name, count)
    return count
