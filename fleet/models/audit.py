from django.conf import settings
from django.db import models

from fleet.choices import AuditAction
from fleet.models.tenancy import Customer


class AuditEvent(models.Model):
    """Who did what to which object, when, from where. Written by services, never updated."""

    at = models.DateTimeField(auto_now_add=True, db_index=True)
    actor_user = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    actor_label = models.CharField(
        max_length=200, help_text="The user, agent, API key or 'system' at the time."
    )
    customer = models.ForeignKey(  # indexed by audit_customer_at, which leads with it
        Customer,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="audit_events",
        db_index=False,
    )
    action = models.CharField(max_length=64, choices=AuditAction.choices)
    target_type = models.CharField(max_length=64)
    target_id = models.CharField(max_length=64)
    target_repr = models.CharField(max_length=200)
    changes = models.JSONField(default=dict, blank=True)
    ip_address = models.GenericIPAddressField(null=True, blank=True)

    class Meta:
        indexes = [
            models.Index(fields=["customer", "-at"], name="audit_customer_at"),
            # The API's cursor pages: a customer's events by id, however many others have.
            models.Index(fields=["customer", "id"], name="audit_customer_id"),
            # One object's trail (an agent's or a job's page).
            models.Index(
                fields=["customer", "target_type", "target_id", "at"], name="audit_target"
            ),
        ]
        ordering = ["-at", "-id"]

    def __str__(self) -> str:
        return f"{self.at:%Y-%m-%d %H:%M} {self.actor_label} {self.action} {self.target_repr}"
