"""Activation tokens and their lifecycle: outstanding until redeemed, revoked or expired,
then final."""

from datetime import datetime

from django.conf import settings
from django.db import models
from django.utils import timezone

from fleet.choices import AgentRole, TokenStatus
from fleet.models.lifecycle import StatusQuerySet, Transition
from fleet.models.tenancy import Customer

OUTSTANDING = frozenset({TokenStatus.OUTSTANDING})
REDEEM = Transition(
    "redeem", OUTSTANDING, TokenStatus.REDEEMED, "the first machine to activate with it"
)
REVOKE = Transition("revoke", OUTSTANDING, TokenStatus.REVOKED, "an owner or admin, staff")
EXPIRE = Transition("expire", OUTSTANDING, TokenStatus.EXPIRED, "beat, once it passes expires_at")
TOKEN_TRANSITIONS = (REDEEM, REVOKE, EXPIRE)


class TokenQuerySet(StatusQuerySet["ActivationToken"]):
    """The expiry rule in SQL, as ActivationToken.effective_status says it in Python: an
    outstanding token past its expiry is expired, whether or not beat has recorded it."""

    def for_customer(self, customer: Customer | int) -> "TokenQuerySet":
        return self.filter(customer=customer)

    def usable(self, now: datetime) -> "TokenQuerySet":
        return self.filter(status=TokenStatus.OUTSTANDING, expires_at__gt=now)

    def overdue(self, now: datetime) -> "TokenQuerySet":
        """Outstanding past their expiry: expired in all but the recording."""
        return self.filter(status=TokenStatus.OUTSTANDING, expires_at__lte=now)

    def expired(self, now: datetime) -> "TokenQuerySet":
        return self.filter(
            models.Q(status=TokenStatus.EXPIRED)
            | models.Q(status=TokenStatus.OUTSTANDING, expires_at__lte=now)
        )


class ActivationToken(models.Model):
    """Single-use: minted one per intended agent, stored only as a SHA-256 digest."""

    customer = models.ForeignKey(
        Customer, on_delete=models.CASCADE, related_name="activation_tokens"
    )
    display_prefix = models.CharField(max_length=32)
    digest = models.CharField(max_length=64, unique=True)
    role = models.CharField(max_length=16, choices=AgentRole.choices, blank=True)
    note = models.CharField(max_length=200, blank=True)
    labels = models.JSONField(
        default=dict,
        db_default=models.Value({}, output_field=models.JSONField()),
        blank=True,
        help_text="Every agent activated with it carries these labels.",
    )
    ephemeral = models.BooleanField(
        default=False,
        db_default=False,
        help_text="Its agent is decommissioned after its first job, or when it exits "
        "cleanly, freeing its seat at once (autoscaling groups, CI runners).",
    )
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

    objects = TokenQuerySet.as_manager()

    class Meta:
        indexes = [
            models.Index(fields=["customer", "status"], name="token_customer_status"),
            # The daily expiry (outstanding) and the prune (expired, revoked), across
            # customers.
            models.Index(fields=["status", "expires_at"], name="token_status_expires"),
        ]
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"{self.display_prefix}… ({self.status})"

    @property
    def effective_status(self) -> str:
        """Its status as a person should read it now: an outstanding token past its expiry
        is expired already, though beat has yet to record it."""
        if self.status == TokenStatus.OUTSTANDING and self.expires_at <= timezone.now():
            return TokenStatus.EXPIRED
        return self.status
