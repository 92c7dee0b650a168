"""The customer's audit log in the customer API: the Activity page's list, and the export
that takes it away (CSV or JSON Lines, streamed) before old events are pruned."""

from typing import Any

from django.db.models import QuerySet
from django.http import HttpRequest, StreamingHttpResponse
from django.utils.http import content_disposition_header
from ninja import Query, Router, Schema
from ninja.pagination import paginate
from pydantic import Field, ValidationInfo, field_validator

from fleet.api.auth import authed_key, key_read
from fleet.api.pagination import KeysetPagination
from fleet.api.schemas import errors
from fleet.api.throttles import ApiKeyThrottle
from fleet.choices import AuditAction
from fleet.models import AuditEvent
from fleet.selectors import ActorKind, actor_kind
from fleet.selectors.audit_export import (
    BOUND_MAX_LENGTH,
    CONTENT_TYPES,
    ExportFormat,
    ExportRange,
    ExportRangeError,
    action_words,
    audit_export,
    audit_export_events,
    export_bound,
    export_range,
    utc_iso,
)

router = Router(tags=["activity"], auth=key_read, throttle=[ApiKeyThrottle()])

BOUND_HELP = (
    "a date (2025-03-31, UTC) or an ISO 8601 date and time (2025-03-31T12:00:00Z; "
    "without an offset: UTC)"
)


class ActivityFilters(Schema):
    """The Activity page's filters, and a range: `since` <= time < `until` (a date as
    `until` takes that whole day)."""

    actor: ActorKind | None = Field(None, description="Who acted.")
    action: AuditAction | None = Field(
        None, description="One action; naming a machine action shows it without `machine`."
    )
    machine: bool = Field(
        False, description="Include machine events (job claims and completions, heartbeats)."
    )
    since: str = Field(
        "", max_length=BOUND_MAX_LENGTH, description=f"From, inclusive: {BOUND_HELP}."
    )
    until: str = Field(
        "",
        max_length=BOUND_MAX_LENGTH,
        description=f"To, exclusive (a date: through it): {BOUND_HELP}.",
    )

    @field_validator("since")
    @classmethod
    def _since(cls, value: str) -> str:
        if value.strip():
            export_bound(value, end=False)
        return value

    @field_validator("until")
    @classmethod
    def _until(cls, value: str, info: ValidationInfo) -> str:
        if value.strip():
            export_bound(value, end=True)
            export_range(info.data.get("since", ""), value)  # an empty range names until
        return value

    def events(self, customer_id: int, *, period: bool = True) -> QuerySet[AuditEvent]:
        """The customer's events these filters pick, in the range unless `period` is off."""
        return audit_export_events(
            customer_id,
            actor=self.actor or "",
            action=self.action or "",
            machine=self.machine,
            period=self.period() if period else None,
        )

    def period(self) -> ExportRange:
        try:
            return export_range(self.since, self.until)
        except ExportRangeError:  # the validators refused these already
            return ExportRange()


class ExportFilters(ActivityFilters):
    format: ExportFormat = Field(
        ExportFormat.CSV, description="`csv` (formula cells neutralised) or `jsonl`."
    )


class ActivityOut(Schema):
    """One event, as each row of the export has it."""

    id: int
    time: str = Field(description="ISO 8601, UTC, to the microsecond.")
    actor: str = Field(description="As recorded: a username, agent:<name>, api-key:<name>, system.")
    actor_kind: ActorKind
    action: str
    action_words: str
    target_type: str
    target_id: str
    target_label: str | None
    changes: Any = Field(description="What changed: {field: [old, new]} or {field: value}.")
    address: str | None = Field(description="The client's address, when one was recorded.")

    # The same values as each row of the export (audit_export_record).
    @staticmethod
    def resolve_time(event: AuditEvent) -> str:
        return utc_iso(event.at)

    @staticmethod
    def resolve_actor(event: AuditEvent) -> str:
        return event.actor_label

    @staticmethod
    def resolve_actor_kind(event: AuditEvent) -> str:
        return actor_kind(event)

    @staticmethod
    def resolve_action_words(event: AuditEvent) -> str:
        return action_words(event.action)

    @staticmethod
    def resolve_target_label(event: AuditEvent) -> str | None:
        return event.target_repr or None

    @staticmethod
    def resolve_address(event: AuditEvent) -> str | None:
        return event.ip_address or None


@router.get(
    "/activity",
    response={200: list[ActivityOut], **errors(401, 403, 422, 429)},
    summary="The customer's audit log with the Activity page's filters, newest first",
)
@paginate(KeysetPagination)
def list_activity(request: HttpRequest, filters: Query[ActivityFilters]) -> QuerySet[AuditEvent]:
    """Machine events (claims, completions, heartbeats) only with `machine=true` or when
    `action` names one."""
    return filters.events(authed_key(request).customer_id)


EXPORT_CONTENT = {"schema": {"type": "string"}}


@router.get(
    "/activity/export",
    response=errors(401, 403, 422, 429),
    summary="Download the audit log as CSV or JSON Lines (streamed), oldest first",
    openapi_extra={
        "responses": {
            "200": {
                "description": "The file, as an attachment named "
                "agentina-activity-<customer>-<from>-<to>.<format>. Columns (CSV) or keys "
                "(JSON Lines): " + ", ".join(ActivityOut.model_fields) + ".",
                "content": {
                    CONTENT_TYPES[fmt].partition(";")[0]: EXPORT_CONTENT for fmt in ExportFormat
                },
            }
        }
    },
)
def export_activity(request: HttpRequest, filters: Query[ExportFilters]) -> StreamingHttpResponse:
    """Every event in the range (default: all of them, up to now) with the filters, read
    in batches while it downloads. CSV cells starting with = + - @ (or a tab or line
    break) get a leading apostrophe so no spreadsheet runs them; JSON Lines are as
    recorded. Events are pruned after 400 days: export before then."""
    key = authed_key(request)
    export = audit_export(
        filters.events(key.customer_id, period=False),
        ExportFormat(filters.format),
        name=key.customer.slug,
        period=filters.period(),
    )
    return StreamingHttpResponse(
        export.chunks,
        content_type=export.content_type,
        headers={
            "Content-Disposition": content_disposition_header(True, export.filename),
            "Cache-Control": "private, no-store",
        },
    )
