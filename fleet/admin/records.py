"""What the Control Plane recorded: fleet snapshots and the audit log. Read-only."""

from django.contrib import admin

from fleet.admin.base import ReadOnlyAdmin
from fleet.models import AuditEvent, FleetSnapshot


@admin.register(FleetSnapshot)
class FleetSnapshotAdmin(ReadOnlyAdmin):
    list_display = [
        "taken_at",
        "customer",
        "agents_total",
        "agents_online",
        "online_ratio",
        "jobs_completed_last_hour",
        "queue_depth",
        "idle_ratio",
        "anomalies_unresolved",
        "agents_not_on_latest",
        "agents_minor_behind",
        "backfilled",
    ]
    list_filter = ["customer"]
    list_select_related = ["customer"]
    date_hierarchy = "taken_at"


@admin.register(AuditEvent)
class AuditEventAdmin(ReadOnlyAdmin):
    list_display = [
        "at",
        "actor_label",
        "customer",
        "action",
        "target_type",
        "target_repr",
        "ip_address",
    ]
    list_filter = ["action", "target_type", "customer"]
    list_select_related = ["customer"]
    search_fields = ["actor_label", "action", "target_repr", "target_id"]
    date_hierarchy = "at"
