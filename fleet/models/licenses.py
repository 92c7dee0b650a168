from datetime import datetime

from django.db import models
from django.utils import timezone

from fleet.choices import Channel
from fleet.models.tenancy import Customer


class License(models.Model):
    """What a customer bought. One is current per customer; earlier ones stay as history."""

    customer = models.ForeignKey(Customer, on_delete=models.CASCADE, related_name="licenses")
    plan = models.CharField(max_length=64, default="team")
    max_agents = models.PositiveIntegerField(help_text="Hard cap on active agents.")
    max_concurrent_tasks_per_agent = models.PositiveIntegerField(default=1)
    valid_from = models.DateTimeField(default=timezone.now)
    valid_until = models.DateTimeField(null=True, blank=True, help_text="Empty: no end date.")
    suspended = models.BooleanField(default=False)
    suspended_reason = models.CharField(max_length=500, blank=True)
    channel = models.CharField(max_length=16, choices=Channel.choices, default=Channel.STABLE)
    is_current = models.BooleanField(default=True, editable=False)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["customer"],
                condition=models.Q(is_current=True),
                name="license_one_current_per_customer",
            ),
            models.CheckConstraint(
                condition=models.Q(max_agents__gte=1), name="license_max_agents_positive"
            ),
            models.CheckConstraint(
                condition=models.Q(max_concurrent_tasks_per_agent__gte=1),
                name="license_max_concurrent_positive",
            ),
            models.CheckConstraint(
                condition=models.Q(valid_until__isnull=True)
                | models.Q(valid_until__gt=models.F("valid_from")),
                name="license_valid_until_after_from",
            ),
        ]
        ordering = ["customer__name", "-created_at"]

    def __str__(self) -> str:
        return f"{self.customer} · {self.plan} · {self.max_agents} agents"

    def admits_agents_at(self, moment: datetime) -> bool:
        """A license admits new agents while in its validity window and not suspended."""
        if self.suspended or moment < self.valid_from:
            return False
        return self.valid_until is None or moment < self.valid_until
