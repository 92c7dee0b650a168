"""A running job's question to a person: the agent waits (activity waiting_for_input)
until an owner or admin answers; the answer rides its heartbeats until it acknowledges."""

from django.conf import settings
from django.db import models
from django.db.models import Q
from django.utils import timezone

from fleet.models.agents import Agent
from fleet.models.jobs import Job
from fleet.models.tenancy import Customer

QUESTION_TEXT_MAX = 4000
ANSWER_TEXT_MAX = 4000
QUESTION_OPTIONS_MAX = 20
QUESTION_OPTION_MAX = 200


class Question(models.Model):
    customer = models.ForeignKey(Customer, on_delete=models.CASCADE, related_name="questions")
    job = models.ForeignKey(Job, on_delete=models.CASCADE, related_name="questions")
    agent = models.ForeignKey(
        Agent, null=True, blank=True, on_delete=models.SET_NULL, related_name="questions"
    )
    text = models.TextField()
    options = models.JSONField(default=list, blank=True, help_text="Suggested answers, if any.")
    asked_at = models.DateTimeField(default=timezone.now)
    answer = models.TextField(blank=True)
    answered_at = models.DateTimeField(null=True, blank=True)
    answered_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    answered_by_label = models.CharField(max_length=200, blank=True)
    acked_at = models.DateTimeField(
        null=True, blank=True, help_text="When the agent said it received the answer."
    )

    class Meta:
        constraints = [
            models.CheckConstraint(
                condition=Q(answered_at__isnull=False) | Q(acked_at__isnull=True),
                name="question_acked_only_when_answered",
            ),
        ]
        indexes = [
            # The Questions page: a customer's open ones, oldest first.
            models.Index(fields=["customer", "answered_at", "asked_at"], name="question_open"),
            # The heartbeat's facts: answers an agent has not acknowledged yet.
            models.Index(
                fields=["agent"],
                condition=Q(answered_at__isnull=False, acked_at__isnull=True),
                name="question_undelivered",
            ),
        ]
        ordering = ["-asked_at"]

    def __str__(self) -> str:
        return f"question {self.pk} (job {self.job_id})"

    @property
    def waited_seconds(self) -> float | None:
        """Asked → answered, or → now while it is open."""
        end = self.answered_at or timezone.now()
        return (end - self.asked_at).total_seconds()
