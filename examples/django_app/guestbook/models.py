from django.db import models
from django.utils import timezone


class Entry(models.Model):
    """A guestbook entry; ``published_at`` is set by the deferred receiver."""

    name = models.CharField(max_length=50)
    text = models.CharField(max_length=200)
    signed_at = models.DateTimeField(auto_now_add=True)
    published_at = models.DateTimeField(null=True, blank=True)
    words = models.PositiveIntegerField(default=0)

    class Meta:
        ordering = ("-signed_at", "-id")

    def publish(self) -> int:
        """The deferred work: count the words and publish; returns the count."""
        self.words = len(self.text.split())
        self.published_at = timezone.now()
        self.save(update_fields=["words", "published_at"])
        return self.words

    def __str__(self) -> str:
        return f"{self.name}: {self.text}"
