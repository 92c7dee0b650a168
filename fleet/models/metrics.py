from django.db import models

from fleet.models.tenancy import Customer


class FleetSnapshot(models.Model):
    """A customer's fleet numbers for one minute: charts, trends and /metrics read these."""

    customer = models.ForeignKey(Customer, on_delete=models.CASCADE, related_name="snapshots")
    taken_at = models.DateTimeField(help_text="The minute this snapshot stands for.")
    agents_total = models.PositiveIntegerField(default=0)
    agents_online = models.PositiveIntegerField(default=0)
    online_ratio = models.FloatField(null=True, blank=True)
    jobs_completed_last_hour = models.PositiveIntegerField(default=0)
    queue_depth = models.PositiveIntegerField(default=0)
    idle_ratio = models.FloatField(null=True, blank=True)
    anomalies_unresolved = models.PositiveIntegerField(default=0)
    agents_not_on_latest = models.PositiveIntegerField(default=0)
    agents_minor_behind = models.PositiveIntegerField(
        default=0, help_text="Agents more than one minor version behind latest."
    )

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["customer", "taken_at"], name="snapshot_one_per_customer_minute"
            ),
        ]
        ordering = ["-taken_at"]

    def __str__(self) -> str:
        return f"{self.customer} @ {self.taken_at:%Y-%m-%d %H:%M}"
