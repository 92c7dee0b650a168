from typing import Any

from django.core.files.storage import Storage, storages
from django.core.signals import setting_changed
from django.db import models
from django.db.models import Q
from django.dispatch import receiver
from django.utils import timezone
from django.utils.functional import LazyObject, empty

from fleet.choices import Channel
from fleet.versions import SemVerField


class _ReleaseStorage(LazyObject):
    """STORAGES["releases"], looked up on first use (and again after the setting changes,
    as tests do), so the model does not bind one storage at import."""

    def _setup(self) -> None:
        self._wrapped = storages["releases"]


release_storage: Any = _ReleaseStorage()


@receiver(setting_changed)
def _release_storage_reset(*, setting: str, **kwargs: Any) -> None:
    if setting == "STORAGES":
        release_storage._wrapped = empty


def release_storage_for_field() -> Storage:
    """The artifact field's storage (a callable, so migrations name it, not a path)."""
    return release_storage


class Release(models.Model):
    """A published agent version. The newest non-yanked one of a channel is its latest.

    With an artifact (the agent's archive), its SHA-256, size and Ed25519 signature over
    agentina.signing.release_statement are set together; older releases have none and
    their upgrade orders carry no download."""

    version = SemVerField(unique=True)
    channel = models.CharField(max_length=16, choices=Channel.choices, default=Channel.STABLE)
    published_at = models.DateTimeField(default=timezone.now)
    notes = models.TextField(blank=True)
    yanked = models.BooleanField(default=False)
    yanked_at = models.DateTimeField(null=True, blank=True)
    yanked_reason = models.CharField(max_length=500, blank=True)
    artifact = models.FileField(
        storage=release_storage_for_field, max_length=255, blank=True, db_default=""
    )
    sha256 = models.CharField(max_length=64, blank=True, db_default="")
    size = models.BigIntegerField(null=True, blank=True)
    signature = models.CharField(max_length=88, blank=True, db_default="")

    class Meta:
        ordering = ["-version"]
        constraints = [
            models.CheckConstraint(
                condition=Q(artifact="", sha256="", signature="", size__isnull=True)
                | (
                    ~Q(artifact="")
                    & Q(sha256__regex=r"^[0-9a-f]{64}$")
                    & Q(size__gte=0)
                    & Q(signature__regex=r"^[A-Za-z0-9+/]{86}==$")
                ),
                name="release_artifact_complete",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.version} ({self.channel})"

    @property
    def has_artifact(self) -> bool:
        return bool(self.artifact)
