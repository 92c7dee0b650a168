from django.conf import settings
from django.db import models
from django.utils import timezone

from fleet.choices import AnomalyKind, AnomalySeverity
from fleet.models.agents import Agent
from fleet.models.jobs import Job
from fleet.models.tenancy import Customer


class Anomaly(models.Model):
    """An unresolved finding. Repeats of one fingerprint fold into the open row."""

    customer = models.ForeignKey(Customer, on_delete=models.CASCADE, related_name="anomalies")
    agent = models.ForeignKey(
        Agent, null=True, blank=True, on_delete=models.SET_NULL, related_name="anomalies"
    )
    job = models.ForeignKey(
        Job, null=True, blank=True, on_delete=models.SET_NULL, related_name="anomalies"
    )
    kind = models.CharField(max_length=32, choices=AnomalyKind.choices)
    severity = models.CharField(
        max_length=16, choices=AnomalySeverity.choices, default=AnomalySeverity.WARNING
    )
    fingerprint = models.CharField(max_length=200)
    message = models.TextField()
    first_seen = models.DateTimeField(default=timezone.now)
    last_seen = models.DateTimeField(default=timezone.now)
    occurrences = models.PositiveIntegerField(default=1)
    resolved_at = models.DateTimeField(null=True, blank=True)
    resolved_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    resolution_note = models.TextField(blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["customer", "fingerprint"],
                condition=models.Q(resolved_at__isnull=True),
                name="anomaly_one_open_per_fingerprint",
            ),
        ]
        indexes = [
            models.Index(fields=["customer", "resolved_at"], name="anomaly_customer_open"),
            models.Index(  # the prune of resolved findings, across customers
                fields=["resolved_at"],
                condition=models.Q(resolved_at__isnull=False),
                name="anomaly_resolved_at",
            ),
        ]
        ordering = ["-last_seen"]
        verbose_name_plural = "anomalies"

    def __str__(self) -> str:
        return f"{self.get_kind_display()}: {self.message[:60]}"

    @property
    def cause(self) -> str:
        """What findings of one incident share: the fingerprint without the agent or job it
        names ("agent_offline:12" and "agent_offline:40" are one cause, "agent_offline";
        "agent:12:git-fetch" is "agent:git-fetch")."""
        names = {str(self.agent_id), f"a{self.agent_id}", str(self.job_id)} - {"None", "aNone"}
        head, *rest = self.fingerprint.split(":")
        return ":".join([head, *(part for part in rest if part not in names)])
