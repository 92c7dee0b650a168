from django.db import models
from django.utils import timezone

from fleet.choices import Channel
from fleet.versions import SemVerField


class Release(models.Model):
    """A published agent version. The newest non-yanked one of a channel is its latest."""

    version = SemVerField(unique=True)
    channel = models.CharField(max_length=16, choices=Channel.choices, default=Channel.STABLE)
    published_at = models.DateTimeField(default=timezone.now)
    notes = models.TextField(blank=True)
    yanked = models.BooleanField(default=False)
    yanked_at = models.DateTimeField(null=True, blank=True)
    yanked_reason = models.CharField(max_length=500, blank=True)

    class Meta:
        ordering = ["-version"]

    def __str__(self) -> str:
        return f"{self.version} ({self.channel})"
