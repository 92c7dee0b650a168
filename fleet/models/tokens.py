from django.conf import settings
from django.db import models

from fleet.choices import AgentRole, TokenStatus
from fleet.models.tenancy import Customer


class ActivationToken(models.Model):
    """Single-use: minted one per intended agent, stored only as a SHA-256 digest."""

    customer = models.ForeignKey(
        Customer, on_delete=models.CASCADE, related_name="activation_tokens"
    )
    display_prefix = models.CharField(max_length=32)
    digest = models.CharField(max_length=64, unique=True)
    role = models.CharField(max_length=16, choices=AgentRole.choices, blank=True)
    note = models.CharField(max_length=200, blank=True)
    status = models.CharField(
        max_length=16, choices=TokenStatus.choices, default=TokenStatus.OUTSTANDING
    )
    expires_at = models.DateTimeField()
    created_at = models.DateTimeField(auto_now_add=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    redeemed_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)
    refused_attempts = models.PositiveIntegerField(
        default=0, help_text="Later redemption attempts, each refused (token sharing)."
    )

    class Meta:
        indexes = [models.Index(fields=["customer", "status"], name="token_customer_status")]
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"{self.display_prefix}… ({self.status})"
