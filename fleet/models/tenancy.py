from django.conf import settings
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models

from fleet.choices import MemberRole


class Customer(models.Model):
    """The tenant: every portal and API query is scoped to one."""

    name = models.CharField(max_length=200)
    slug = models.SlugField(max_length=64, unique=True)
    contact_email = models.EmailField(blank=True)
    notes = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    job_max_runtime_seconds = models.PositiveIntegerField(
        null=True,
        blank=True,
        validators=[MinValueValidator(1), MaxValueValidator(7 * 24 * 3600)],
        help_text="How long a job may run before it is told to stop (timed out), for jobs "
        "without their own max_runtime; empty: the product default (6 hours).",
    )

    stale_cleanup_days = models.PositiveSmallIntegerField(
        null=True,
        blank=True,
        validators=[MinValueValidator(1), MaxValueValidator(365)],
        help_text="Opt-in: agents not heard from for this many days are cleaned up by beat "
        "(their seats freed; undo within 7 days). Empty: never.",
    )
    stale_cleanup_since = models.DateTimeField(
        null=True,
        blank=True,
        help_text="When the cleanup was turned on: it acts a day later, so what it will do "
        "is on the portal first.",
    )

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


class Membership(models.Model):
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="memberships"
    )
    customer = models.ForeignKey(Customer, on_delete=models.CASCADE, related_name="memberships")
    role = models.CharField(max_length=16, choices=MemberRole.choices, default=MemberRole.VIEWER)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["user", "customer"], name="membership_unique_user"),
        ]
        ordering = ["customer__name", "user__username"]

    def __str__(self) -> str:
        return f"{self.user} @ {self.customer} ({self.role})"
