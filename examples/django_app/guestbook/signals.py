"""The guestbook's AsyncSignal and its receiver; ``gaesignals.contrib.django`` imports this
module in every process (autodiscovery), so whoever delivers has the receiver connected."""

import logging
from typing import Any

from django.dispatch import receiver
from django.utils import timezone

from gaesignals.contrib.django.signals import AsyncSignal

from .models import Entry

logger = logging.getLogger("guestbook")

#: Sent by the sign view with the new entry; delivered before the next request.
entry_signed = AsyncSignal("guestbook.signed")


@receiver(entry_signed, sender=Entry)
def publish(sender: type[Entry], entry: Entry, **kwargs: Any) -> None:
    """The deferred work: count the words and publish. ``entry`` is fetched again from the
    database at delivery (it travelled as a reference)."""
    entry.words = len(entry.text.split())
    entry.published_at = timezone.now()
    entry.save(update_fields=["words", "published_at"])
    logger.info("published entry %s (%d words)", entry.pk, entry.words)
