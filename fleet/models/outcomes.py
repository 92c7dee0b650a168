"""What happened to a job's output later ("trust the output"), and the GitHub receiver's
per-customer webhook secret."""

from django.conf import settings
from django.db import models
from django.utils import timezone

from fleet.choices import OutcomeVerdict
from fleet.models.jobs import Job
from fleet.models.tenancy import Customer


class JobOutcome(models.Model):
    """One source's verdict on a job's output: one row per (job, source), a new verdict
    from the same source replaces it. The job's own `verdict` is the latest of them."""

    customer = models.ForeignKey(Customer, on_delete=models.CASCADE, related_name="+")
    job = models.ForeignKey(Job, on_delete=models.CASCADE, related_name="outcomes")
    source = models.CharField(max_length=50, help_text="github, gitlab, human, ...")
    verdict = models.CharField(max_length=24, choices=OutcomeVerdict.choices)
    url = models.CharField(max_length=2000, blank=True)
    note = models.TextField(blank=True)
    reported_at = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["job", "source"], name="outcome_one_per_job_source")
        ]
        ordering = ["-reported_at", "-id"]

    def __str__(self) -> str:
        return f"job {self.job_id}: {self.verdict} ({self.source})"


class GithubIntegration(models.Model):
    """A customer's GitHub webhook receiver. Its secret is never stored: it is derived from
    ALERT_SIGNING_KEY and this row's random salt (fleet/services/outcomes.py), because
    verifying an HMAC needs the secret itself (a digest would not do) and a database copy
    alone must not let anyone forge a verdict. Minting again changes the salt."""

    customer = models.OneToOneField(
        Customer, on_delete=models.CASCADE, related_name="github_integration"
    )
    secret_salt = models.CharField(max_length=64)
    secret_prefix = models.CharField(max_length=32)
    created_at = models.DateTimeField(default=timezone.now)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )

    def __str__(self) -> str:
        return f"GitHub receiver of {self.customer}"
