"""The guestbook's AsyncSignal and its receiver; ``gaesignals.contrib.django`` imports this
module in every process (autodiscovery), so whoever delivers has the receiver connected."""

import logging
from typing import Any

from django.dispatch import receiver

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
