from django.db import models

from fleet.choices import RollupResolution
from fleet.models.tenancy import Customer


class FleetSnapshot(models.Model):
    """A customer's fleet numbers for one minute: charts, trends and /metrics read these."""

    customer = models.ForeignKey(Customer, on_delete=models.CASCADE, related_name="snapshots")
    taken_at = models.DateTimeField(help_text="The minute this snapshot stands for.")
    agents_total = models.PositiveIntegerField(default=0, help_text="Active: not decommissioned.")
    agents_online = models.PositiveIntegerField(
        null=True, blank=True, help_text="Empty in a backfilled minute: presence is not kept."
    )
    agents_busy = models.PositiveIntegerField(
        null=True, blank=True, help_text="Online agents running at least one job at this minute."
    )
    agents_by_status = models.JSONField(default=dict)
    agents_by_role = models.JSONField(default=dict)
    agents_by_activity = models.JSONField(
        default=dict, help_text="Online agents by role, then by reported activity."
    )
    online_ratio = models.FloatField(null=True, blank=True)
    jobs_completed_last_hour = models.PositiveIntegerField(default=0)
    jobs_failed_last_hour = models.PositiveIntegerField(default=0)
    queue_depth = models.PositiveIntegerField(default=0)
    jobs_running = models.PositiveIntegerField(default=0)
    wait_p50_seconds = models.FloatField(
        null=True,
        blank=True,
        help_text="Of jobs started in the last 5 minutes (queued → started) and jobs still "
        "queued (queued → now).",
    )
    wait_p95_seconds = models.FloatField(null=True, blank=True)
    idle_ratio = models.FloatField(
        null=True,
        blank=True,
        help_text="Share of online agent-minutes with no running job over the last hour.",
    )
    anomalies_unresolved = models.PositiveIntegerField(null=True, blank=True)
    agents_not_on_latest = models.PositiveIntegerField(null=True, blank=True)
    agents_minor_behind = models.PositiveIntegerField(
        null=True, blank=True, help_text="Agents more than one minor version behind latest."
    )
    # What the agents' work cost and how it was judged, over the last hour: spend of the
    # jobs finished in it, verdicts received in it (fleet/selectors/outcomes.py).
    cost_usd_last_hour = models.DecimalField(
        max_digits=14, decimal_places=6, default=0, db_default=0
    )
    tokens_last_hour = models.BigIntegerField(default=0, db_default=0)
    jobs_judged_last_hour = models.PositiveIntegerField(default=0, db_default=0)
    jobs_accepted_last_hour = models.PositiveIntegerField(default=0, db_default=0)
    usage_by_role = models.JSONField(
        default=dict,
        blank=True,
        help_text="{role: {jobs, tokens, cost_usd, judged, accepted}} over the last hour.",
    )
    usage_by_version = models.JSONField(
        default=dict, blank=True, help_text="The same by the version that ran the job."
    )
    backfilled = models.BooleanField(
        default=False,
        help_text="Beat missed this minute; rebuilt later from the jobs', agents' and "
        "findings' timestamps. What they do not hold (presence, busy, versions, waits) is "
        "empty, never a guess.",
    )

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["customer", "taken_at"], name="snapshot_one_per_customer_minute"
            ),
        ]
        # The newest minute of all customers (to find the minutes beat missed) and the
        # fleet-wide reads of one minute.
        indexes = [models.Index(fields=["taken_at"], name="snapshot_taken_at")]
        ordering = ["-taken_at"]

    def __str__(self) -> str:
        return f"{self.customer} @ {self.taken_at:%Y-%m-%d %H:%M}"

    @property
    def cost_per_hour(self) -> float:
        return float(self.cost_usd_last_hour)

    @property
    def acceptance(self) -> float | None:
        """Accepted of the verdicts received in the hour before: the acceptance chart."""
        judged = self.jobs_judged_last_hour
        return self.jobs_accepted_last_hour / judged if judged else None


class FleetRollup(models.Model):
    """A customer's fleet over one hour or one day, folded from its minute snapshots (an
    hour) or its hours (a day) before those are pruned: what the long charts and the
    throughput baselines read. Job counts are exact, counted from the jobs' own rows while
    they exist; the rest says how each minute value was folded."""

    customer = models.ForeignKey(Customer, on_delete=models.CASCADE, related_name="rollups")
    resolution = models.CharField(max_length=8, choices=RollupResolution.choices)
    period_start = models.DateTimeField()
    minutes = models.PositiveIntegerField(
        default=0, help_text="Minute snapshots folded in: 60 (or 1,440) is a whole period."
    )
    jobs_completed = models.PositiveIntegerField(default=0, help_text="Succeeded in the period.")
    jobs_failed = models.PositiveIntegerField(default=0, help_text="Failed in the period.")
    agents_total = models.PositiveIntegerField(default=0, help_text="The most in any minute.")
    online_ratio = models.FloatField(null=True, blank=True, help_text="The worst minute's.")
    online_ratio_avg = models.FloatField(null=True, blank=True)
    queue_depth = models.PositiveIntegerField(default=0, help_text="The deepest minute's.")
    wait_p50_seconds = models.FloatField(null=True, blank=True, help_text="Average of minutes.")
    wait_p95_seconds = models.FloatField(null=True, blank=True, help_text="The worst minute's.")
    idle_ratio = models.FloatField(null=True, blank=True, help_text="Average of minutes.")
    anomalies_unresolved = models.PositiveIntegerField(null=True, blank=True, help_text="Most.")
    agents_not_on_latest = models.PositiveIntegerField(null=True, blank=True, help_text="Most.")
    cost_usd = models.DecimalField(
        max_digits=16, decimal_places=6, default=0, db_default=0, help_text="Finished jobs'."
    )
    tokens = models.BigIntegerField(default=0, db_default=0)
    jobs_judged = models.PositiveIntegerField(default=0, db_default=0, help_text="Verdicts.")
    jobs_accepted = models.PositiveIntegerField(default=0, db_default=0)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["customer", "resolution", "period_start"], name="rollup_one_per_period"
            ),
        ]
        # The newest period rolled up, and the prune, read by period across customers.
        indexes = [models.Index(fields=["resolution", "period_start"], name="rollup_period")]
        ordering = ["-period_start"]

    def __str__(self) -> str:
        return f"{self.customer} {self.resolution} @ {self.period_start:%Y-%m-%d %H:%M}"

    @property
    def cost_per_hour(self) -> float:
        """Spend an hour, averaged over the period: what the cost chart shows."""
        hours = 24 if self.resolution == RollupResolution.DAY else 1
        return float(self.cost_usd) / hours

    @property
    def acceptance(self) -> float | None:
        """Accepted of the verdicts received in the period: the acceptance chart."""
        return self.jobs_accepted / self.jobs_judged if self.jobs_judged else None

    @property
    def jobs_completed_last_hour(self) -> float:
        """Completions an hour, averaged over the period: what the throughput chart shows."""
        hours = 24 if self.resolution == RollupResolution.DAY else 1
        return self.jobs_completed / hours


class SweepState(models.Model):
    """When a periodic sweep last ran, so a gap in the Control Plane itself is noticed."""

    name = models.CharField(max_length=64, unique=True)
    last_run_at = models.DateTimeField()
    grace_until = models.DateTimeField(
        null=True, blank=True, help_text="After a gap, agents are not marked offline until then."
    )
    presence_intact = models.BooleanField(
        default=True, help_text="False while the presence buffer is lost or unreachable."
    )

    def __str__(self) -> str:
        return f"{self.name} @ {self.last_run_at:%Y-%m-%d %H:%M:%S}"

    @staticmethod
    def beat_name(task: str) -> str:
        """The row that records a periodic task's last claimed run (fleet/services/beat.py)."""
        return f"beat:{task}"
