"""Operator actions on every agent matching a filter (not just a page): pause, resume,
decommission or label thousands at once, run by a Celery task in chunks that each commit
their progress, so a killed worker's run is picked up where it stopped."""

from django.conf import settings
from django.db import models

from fleet.choices import BulkActionKind, BulkActionState
from fleet.models.tenancy import Customer


class BulkAction(models.Model):
    customer = models.ForeignKey(Customer, on_delete=models.CASCADE, related_name="bulk_actions")
    kind = models.CharField(max_length=16, choices=BulkActionKind.choices)
    filters = models.JSONField(default=dict, help_text="The Agents page's filters it matched.")
    params = models.JSONField(default=dict, help_text="The pause's reason, the labels to add.")
    state = models.CharField(
        max_length=16, choices=BulkActionState.choices, default=BulkActionState.QUEUED
    )
    agent_ids = models.JSONField(
        default=list, help_text="The agents the filter matched when it was asked for, by id."
    )
    total = models.PositiveIntegerField(default=0)
    processed = models.PositiveIntegerField(default=0, help_text="Agents gone through so far.")
    changed = models.PositiveIntegerField(default=0, help_text="Of those, the ones it moved.")
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    actor_label = models.CharField(max_length=200)
    created_at = models.DateTimeField(auto_now_add=True)
    progressed_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        indexes = [
            models.Index(  # the sweep's stalled actions: the few not done
                fields=["progressed_at"],
                condition=~models.Q(state=BulkActionState.DONE),
                name="bulk_action_open",
            ),
            models.Index(fields=["finished_at"], name="bulk_action_finished"),  # the prune
        ]

    def __str__(self) -> str:
        return f"{self.get_kind_display().lower()} of {self.total} agents"

    @property
    def percent(self) -> int:
        return 100 if not self.total else round(100 * self.processed / self.total)
