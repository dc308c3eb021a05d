"""The guestbook's slow work as a ``django.tasks`` task (Django 6+), queued by the
``SignalsBackend`` of settings.TASKS; the views enqueue it when Django has tasks."""

import logging

from django.tasks import task

from .models import Entry

logger = logging.getLogger("guestbook")


@task
def publish_entry(entry_id: int) -> int | None:
    """Publish the entry, fetched again by its id; returns its word count (the task's result),
    or None if it was deleted meanwhile."""
    entry = Entry.objects.filter(pk=entry_id).first()
    if entry is None:
        logger.warning("guestbook: entry %s no longer exists; not published", entry_id)
        return None
    return entry.publish()
