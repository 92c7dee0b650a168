"""What the Control Plane recorded: fleet snapshots and the audit log. Read-only; staff
download any customer's log (filtered, then "select all") as CSV or JSON Lines."""

from django.contrib import admin
from django.db.models import QuerySet
from django.http import HttpRequest, StreamingHttpResponse
from django.utils.http import content_disposition_header

from fleet.admin.base import ReadOnlyAdmin
from fleet.models import AuditEvent, FleetSnapshot
from fleet.selectors.audit_export import ExportFormat, audit_export


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
    # No date drill-down and no menu of target types: each is a DISTINCT over the whole
    # log (10,000,000 rows a year) on every view. The action menu is the choices.
    list_filter = ["action", "customer"]
    list_select_related = ["customer"]
    search_fields = ["actor_label", "action", "target_repr", "target_id"]
    ordering = ["-id"]  # newest first, read backwards from the primary key
    actions = ["export_csv", "export_jsonl"]

    @admin.action(description="Download as CSV (streamed, oldest first)", permissions=["view"])
    def export_csv(
        self, request: HttpRequest, queryset: QuerySet[AuditEvent]
    ) -> StreamingHttpResponse:
        return self._export(queryset, ExportFormat.CSV)

    @admin.action(
        description="Download as JSON Lines (streamed, oldest first)", permissions=["view"]
    )
    def export_jsonl(
        self, request: HttpRequest, queryset: QuerySet[AuditEvent]
    ) -> StreamingHttpResponse:
        return self._export(queryset, ExportFormat.JSONL)

    def _export(self, events: QuerySet[AuditEvent], fmt: ExportFormat) -> StreamingHttpResponse:
        """The selected events, or with "select all" every event the filters match (filter
        by customer and date first): named after the customer when there is one."""
        slugs = list(events.order_by().values_list("customer__slug", flat=True).distinct()[:2])
        name = slugs[0] if len(slugs) == 1 and slugs[0] else "customers"
        export = audit_export(events, fmt, name=name)
        return StreamingHttpResponse(
            export.chunks,
            content_type=export.content_type,
            headers={"Content-Disposition": content_disposition_header(True, export.filename)},
        )
