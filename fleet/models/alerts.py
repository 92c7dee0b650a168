import uuid

from django.conf import settings
from django.db import models
from django.utils import timezone

from fleet.choices import AlertChannelKind, AlertDeliveryState, AlertEventType, AnomalySeverity
from fleet.models.tenancy import Customer

OPEN_DELIVERY_STATES = (AlertDeliveryState.SCHEDULED, AlertDeliveryState.SENDING)


class AlertEvent(models.Model):
    """Something a customer's operators should hear about, written in the transaction
    that caused it. The dedup key folds repeats of one cause into one event."""

    uid = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    customer = models.ForeignKey(Customer, on_delete=models.CASCADE, related_name="alert_events")
    type = models.CharField(max_length=40, choices=AlertEventType.choices)
    severity = models.CharField(
        max_length=16, choices=AnomalySeverity.choices, default=AnomalySeverity.INFO
    )
    created_at = models.DateTimeField(default=timezone.now)
    data = models.JSONField(default=dict, blank=True)
    dedup_key = models.CharField(max_length=200)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["customer", "dedup_key"], name="alert_event_one_per_dedup_key"
            ),
        ]
        indexes = [
            models.Index(fields=["customer", "-created_at"], name="alert_event_recent"),
            models.Index(fields=["created_at"], name="alert_event_created"),  # the prune
        ]
        ordering = ["-created_at", "-id"]

    def __str__(self) -> str:
        return f"{self.type} ({self.public_id})"

    @property
    def public_id(self) -> str:
        """The id receivers see (the same on every retry): random, so it says nothing of
        how many events other customers have."""
        return f"evt_{self.uid.hex}"


class AlertChannel(models.Model):
    """Where a customer's alerts go. A webhook's signing secret is never stored: it is
    derived from ALERT_SIGNING_KEY and the channel's random salt (see
    fleet/services/alerts/channels.py), so a copy of the database cannot forge
    signatures."""

    customer = models.ForeignKey(Customer, on_delete=models.CASCADE, related_name="alert_channels")
    kind = models.CharField(max_length=16, choices=AlertChannelKind.choices)
    name = models.CharField(max_length=100, blank=True)
    url = models.URLField(max_length=2000, blank=True)  # webhook, slack, pagerduty's endpoint
    email = models.EmailField(blank=True)
    routing_key = models.CharField(max_length=64, blank=True)  # PagerDuty integration key
    events = models.JSONField(default=list, blank=True, help_text="Empty: every event.")
    min_severity = models.CharField(
        max_length=16, choices=AnomalySeverity.choices, default=AnomalySeverity.INFO
    )
    secret_salt = models.CharField(max_length=64, blank=True)
    secret_prefix = models.CharField(max_length=32, blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    # The first failure of the current run of failures (cleared by a success): 24 h of
    # them disables the channel.
    failing_since = models.DateTimeField(null=True, blank=True)
    disabled_at = models.DateTimeField(null=True, blank=True)
    disabled_reason = models.CharField(max_length=500, blank=True)

    class Meta:
        ordering = ["created_at", "id"]

    def __str__(self) -> str:
        return self.name or f"{self.get_kind_display()} {self.target}"

    @property
    def enabled(self) -> bool:
        return self.disabled_at is None

    @property
    def target(self) -> str:
        """Where it sends, as a person reads it (a URL without its path's secrets)."""
        if self.kind == AlertChannelKind.EMAIL:
            return self.email
        if self.kind == AlertChannelKind.PAGERDUTY:
            return f"routing key {self.routing_key[:6]}…"
        return self.url if self.kind == AlertChannelKind.WEBHOOK else self.url[:40] + "…"


class AlertDelivery(models.Model):
    """One attempt to deliver one event to one channel; a failed attempt that will be
    retried leaves the next one scheduled."""

    customer = models.ForeignKey(Customer, on_delete=models.CASCADE, related_name="+")
    event = models.ForeignKey(AlertEvent, on_delete=models.CASCADE, related_name="deliveries")
    channel = models.ForeignKey(AlertChannel, on_delete=models.CASCADE, related_name="deliveries")
    attempt = models.PositiveIntegerField(default=1)
    state = models.CharField(
        max_length=16, choices=AlertDeliveryState.choices, default=AlertDeliveryState.SCHEDULED
    )
    created_at = models.DateTimeField(default=timezone.now)
    next_attempt_at = models.DateTimeField(default=timezone.now)
    retry_until = models.DateTimeField()  # failures after this are final (24 h of tries)
    lease_until = models.DateTimeField(null=True, blank=True)  # a sender holds it until then
    attempted_at = models.DateTimeField(null=True, blank=True)
    delivered_at = models.DateTimeField(null=True, blank=True)
    status_code = models.PositiveIntegerField(null=True, blank=True)
    latency_ms = models.PositiveIntegerField(null=True, blank=True)
    error = models.CharField(max_length=500, blank=True)
    summarised_in = models.ForeignKey(
        AlertEvent, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["event", "channel", "attempt"], name="alert_delivery_attempt_unique"
            ),
            models.UniqueConstraint(
                fields=["event", "channel"],
                condition=models.Q(state=AlertDeliveryState.SUCCEEDED),
                name="alert_delivery_one_success",
            ),
            models.UniqueConstraint(
                fields=["event", "channel"],
                condition=models.Q(state__in=OPEN_DELIVERY_STATES),
                name="alert_delivery_one_open",
            ),
        ]
        indexes = [
            models.Index(fields=["customer", "-created_at"], name="alert_delivery_recent"),
            models.Index(
                fields=["next_attempt_at"],
                condition=models.Q(state__in=OPEN_DELIVERY_STATES),
                name="alert_delivery_due",
            ),
            models.Index(fields=["channel", "created_at"], name="alert_delivery_channel"),
            models.Index(  # held back by the storm cap, waiting for their summary
                fields=["created_at"],
                condition=models.Q(state=AlertDeliveryState.FOLDED, summarised_in__isnull=True),
                name="alert_delivery_folded",
            ),
        ]
        ordering = ["-created_at", "-id"]
        verbose_name_plural = "alert deliveries"

    def __str__(self) -> str:
        return f"{self.event} → channel {self.channel_id} #{self.attempt} ({self.state})"
