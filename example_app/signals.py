"""The example's signals and their handlers, and who delivers each.

* ``guestbook``: sent by the form on the front page; delivered at the start of the next
  request by ``SignalsMiddleware`` (see ``appengine_config.py``), in the default weak mode.
  Its handler also sends the published entry to every open window (``live.py``).
* ``user_<id>_notice``: one signal per user, as the 2011 README suggests; delivered by
  ``InboxHandler.get`` once the user is known, so only that user's requests pay for it.
  Sent with ``coalesce="from_<sender>"``: of the notices one user sent that are still
  unread, the inbox gets only the newest (see the docs' coalescing page).
* ``audit``: sent with every action, delivered reliably (at least once) by the cron endpoint
  in ``main.py``, or by the front page's "deliver now" button; no page view delivers it.

Every handler does visible work: it writes to the shared record and to the log.
"""

from __future__ import annotations

import logging
import re
from typing import Any

from gaesignals import SignalMapping, pass_signal_name, send_to_browser

from . import records
from .live import PUBLISHED

logger = logging.getLogger("example_app")

GUESTBOOK = "guestbook"
AUDIT = "audit"
_NOTICE = re.compile(r"user_(\d{1,9})_notice\Z")


def notice_signal(user_id: str) -> str:
    """The name of one user's notice signal: ``user_54274_notice``."""
    return f"user_{user_id}_notice"


def guestbook_handler(data: Any) -> None:
    """Publish a guestbook entry (the deferred work the form asked for), in the record and in
    every open window."""
    text = str(data.get("text", "")) if isinstance(data, dict) else str(data)
    sent_by = data.get("user") if isinstance(data, dict) else None
    entry = records.push("guestbook", text=text, user=sent_by, sent_at=_sent_at(data))
    records.push("events", kind="received", signal=GUESTBOOK, detail=text)
    send_to_browser(PUBLISHED, entry, broadcast=True)  # every open window shows it at once
    logger.info("guestbook: published %r from user %s", text, sent_by)


@pass_signal_name
def notice_handler(data: Any, signal_name: str) -> None:
    """Put a notice in the inbox of the user the signal is named after."""
    match = _NOTICE.match(signal_name)
    if match is None:
        raise ValueError(f"not a notice signal: {signal_name!r}")
    user_id = match.group(1)
    text = str(data.get("text", "")) if isinstance(data, dict) else str(data)
    sender = data.get("from") if isinstance(data, dict) else None
    records.push(f"inbox:{user_id}", text=text, sender=sender, sent_at=_sent_at(data))
    records.push("events", kind="received", signal=signal_name, detail=text)
    logger.info("notice for user %s: %r", user_id, text)


def audit_handler(data: Any) -> None:
    """Write an audit line; delivered reliably, so a failure here is retried, not lost."""
    action = str(data.get("action", "?")) if isinstance(data, dict) else str(data)
    user = data.get("user") if isinstance(data, dict) else None
    records.push("audit", action=action, user=user, sent_at=_sent_at(data))
    records.push("events", kind="received", signal=AUDIT, detail=action)
    logger.info("audit: user %s %s", user, action)


def _sent_at(data: Any) -> float | None:
    value = data.get("sent_at") if isinstance(data, dict) else None
    return float(value) if isinstance(value, int | float) else None


#: Delivered by the cron endpoint (and the "deliver now" button), reliably.
CRON_MAPPING = SignalMapping([(AUDIT, audit_handler)])
