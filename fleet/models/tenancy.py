from datetime import datetime, time
from zoneinfo import ZoneInfo

from django.conf import settings
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models
from django.db.models import Q

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
    require_two_factor = models.BooleanField(
        default=False,
        db_default=False,
        help_text="Every member signs in with a second factor (an authenticator app); "
        "members without one are sent to set it up before they use the portal.",
    )
    time_zone = models.CharField(
        max_length=64,
        default="UTC",
        db_default="UTC",
        help_text="An IANA time zone (Europe/Berlin): the maintenance window is in it.",
    )
    maintenance_days = models.JSONField(
        default=list,
        db_default=models.Value([], output_field=models.JSONField()),
        blank=True,
        help_text="ISO weekdays (1 Monday … 7 Sunday) on which a maintenance window opens; "
        "empty: no window, upgrade waves step at any time.",
    )
    update_pins = models.JSONField(
        default=list,
        db_default=models.Value([], output_field=models.JSONField()),
        blank=True,
        help_text="Pins by label: [{labels: {key: value}, channel, version}]; an agent with "
        "every label of a rule follows its channel or version (the first rule that "
        "matches; the agent's own pin comes first).",
    )
    maintenance_start = models.TimeField(
        null=True, blank=True, help_text="Local time the window opens."
    )
    maintenance_end = models.TimeField(
        null=True,
        blank=True,
        help_text="Local time the window closes (earlier than the start: the next day).",
    )

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    @property
    def has_maintenance_window(self) -> bool:
        return bool(self.maintenance_days) and None not in (
            self.maintenance_start,
            self.maintenance_end,
        )

    def in_maintenance_window(self, now: datetime) -> bool:
        """Whether an upgrade wave may start a step at `now`: inside the window (its days
        and hours in the customer's time zone; an end before the start runs past midnight
        into the next day), or always when no window is set."""
        if not self.has_maintenance_window:
            return True
        start, end = self.maintenance_start or time(0), self.maintenance_end or time(0)
        local = now.astimezone(ZoneInfo(self.time_zone or "UTC"))
        at, day = local.time(), local.isoweekday()
        if start < end:
            return day in self.maintenance_days and start <= at < end
        if at >= start:  # the evening part of a window opened today
            return day in self.maintenance_days
        yesterday = (day - 2) % 7 + 1  # the morning part of one opened yesterday
        return at < end and yesterday in self.maintenance_days


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


class Invitation(models.Model):
    """An owner's invitation to join a customer at a role: a single-use link sent by email,
    good until `expires_at`. Only its token's digest is stored (fleet/secrets.py); at most
    one invitation per address is open at a time (sending again replaces it)."""

    customer = models.ForeignKey(Customer, on_delete=models.CASCADE, related_name="invitations")
    email = models.EmailField(help_text="Lowercased; the account that accepts must have it.")
    role = models.CharField(max_length=16, choices=MemberRole.choices, default=MemberRole.VIEWER)
    digest = models.CharField(max_length=64, unique=True)
    invited_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    expires_at = models.DateTimeField()
    accepted_at = models.DateTimeField(null=True, blank=True)
    accepted_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    revoked_at = models.DateTimeField(null=True, blank=True)

    OPEN = Q(accepted_at__isnull=True, revoked_at__isnull=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["customer", "email"],
                condition=Q(accepted_at__isnull=True, revoked_at__isnull=True),
                name="invitation_one_open_per_email",
            ),
            models.CheckConstraint(
                condition=Q(accepted_at__isnull=True) | Q(revoked_at__isnull=True),
                name="invitation_accepted_or_withdrawn",
            ),
        ]
        ordering = ["-created_at", "-id"]

    def __str__(self) -> str:
        return f"{self.email} as {self.role}"

    def state(self, now: datetime) -> str:
        """accepted, withdrawn, expired or open: what its link does now."""
        if self.accepted_at:
            return "accepted"
        if self.revoked_at:
            return "withdrawn"
        return "expired" if self.expires_at <= now else "open"
