"""The guestbook's AsyncSignal and its receiver; ``gaesignals.contrib.django`` imports this
module in every process (autodiscovery), so whoever delivers has the receiver connected. Also
the signal the page's script calls through the browser bridge (mounted in ``urls.py``)."""

import logging
from typing import Any

from django.dispatch import receiver

import gaesignals
from gaesignals import send_to_browser
from gaesignals.browser import BrowserCall
from gaesignals.contrib.django.signals import AsyncSignal

from .models import Entry

logger = logging.getLogger("guestbook")

#: Sent by the sign view with the new entry (on Django 5; Django 6 enqueues the
#: ``publish_entry`` task of tasks.py instead); delivered before the next request.
entry_signed = AsyncSignal("guestbook.signed")


@receiver(entry_signed, sender=Entry)
def publish(sender: type[Entry], entry: Entry, **kwargs: Any) -> None:
    """The deferred work. ``entry`` is fetched again from the database at delivery (it
    travelled as a reference)."""
    entry.publish()
    logger.info("published entry %s (%d words)", entry.pk, entry.words)


#: Called by the page's script; answered in the calling window with ``guestbook.counted``.
COUNT = "guestbook.count"


def count(call: BrowserCall) -> None:
    """A browser's call: answer that window with the number of entries published."""
    published = Entry.objects.exclude(published_at=None).count()
    send_to_browser("guestbook.counted", {"published": published}, window=call["window"])


def register_browser_signals() -> None:
    """Declare ``guestbook.count`` callable by any browser, run during the call."""
    gaesignals.declare(COUNT, from_browser=True, delayed=False)
    gaesignals.connect(COUNT, count)


register_browser_signals()
