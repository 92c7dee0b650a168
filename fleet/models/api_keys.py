from datetime import datetime

from django.conf import settings
from django.db import models
from django.db.models import Value
from django.utils import timezone

from fleet.choices import ApiKeyScope
from fleet.models.tenancy import Customer

# Every scope when migration 0028 added them: the database's default for the column.
API_KEY_SCOPES_AT_0028 = ["read", "tokens", "jobs", "agents", "alerts", "rollouts", "settings"]


def api_key_scopes_all() -> list[str]:
    """Every scope: what keys minted before scopes existed keep, and the default."""
    return list(ApiKeyScope.values)


class CustomerApiKey(models.Model):
    """A customer's key for automation. Stored only as a SHA-256 digest."""

    customer = models.ForeignKey(Customer, on_delete=models.CASCADE, related_name="api_keys")
    name = models.CharField(max_length=100)
    display_prefix = models.CharField(max_length=32)
    digest = models.CharField(max_length=64, unique=True)
    # A list of ApiKeyScope values; an operation needing a scope not listed is a 403.
    # Rows written without it (keys from before scopes, raw SQL) hold every scope.
    scopes = models.JSONField(
        default=api_key_scopes_all,
        db_default=Value(API_KEY_SCOPES_AT_0028, output_field=models.JSONField()),
    )
    expires_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    last_used_at = models.DateTimeField(null=True, blank=True)
    last_used_address = models.GenericIPAddressField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        verbose_name = "customer API key"

    def __str__(self) -> str:
        return f"{self.name} ({self.display_prefix}…)"

    def has_scope(self, scope: str) -> bool:
        return scope in (self.scopes or ())

    def expired(self, now: datetime) -> bool:
        return self.expires_at is not None and self.expires_at <= now

    @property
    def is_expired(self) -> bool:
        return self.expired(timezone.now())

    @property
    def scope_list(self) -> list[str]:
        """The key's scopes in ApiKeyScope's order (how every page lists them)."""
        return [s for s in ApiKeyScope.values if self.has_scope(s)]
