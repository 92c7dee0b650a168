"""The customer's activity to take away: its audit events as CSV or JSON Lines, for a
date range, with the Activity page's filters. A read, written as a generator of text
chunks that reads the rows in keyset batches, so a year of events streams in the memory
of one batch (the portal, the API and the admin hand it to a StreamingHttpResponse).

The range is half-open, `since` <= time < `until`, so consecutive exports tile without
overlap or gap. A bare date means 00:00 UTC that day for `since`, and the whole day for
`until` (`until=2025-03-31` takes the 31st); a date and time without an offset is UTC."""

import csv
import io
import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any, NamedTuple, cast

from django.db.models import QuerySet, TextChoices
from django.utils import timezone

from fleet.choices import AuditAction
from fleet.models import AuditEvent, Customer
from fleet.selectors.audit import actor_kind, audit_search

# Rows read per query: 100,000 events are 50 short, indexed queries, and a batch's rows
# and text (about 1 MB) are all the memory an export holds at once.
EXPORT_BATCH = 2000
BOUND_MAX_LENGTH = 40  # "2025-03-31T23:59:59.999999+05:30" and room to spare


class ExportFormat(TextChoices):
    CSV = "csv", "CSV"
    JSONL = "jsonl", "JSON Lines"


CONTENT_TYPES = {
    ExportFormat.CSV: "text/csv; charset=utf-8",
    ExportFormat.JSONL: "application/x-ndjson; charset=utf-8",
}

# One row of the file, in this order: CSV's header, and each JSON line's keys.
COLUMNS = (
    "id",
    "time",
    "actor",
    "actor_kind",
    "action",
    "action_words",
    "target_type",
    "target_id",
    "target_label",
    "changes",
    "address",
)

# A spreadsheet runs a cell starting with these as a formula (OWASP's "CSV injection"):
# such a cell gets a leading apostrophe, which spreadsheets show as text and hide.
FORMULA_TRIGGERS = frozenset("=+-@\t\r\n")


class ExportRangeError(ValueError):
    """Input that names no range: `field` is the parameter at fault."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field
        self.message = message


@dataclass(frozen=True)
class Bound:
    """One end of the range: the moment compared against (UTC) and how the file's name
    says it (the date as given, or the moment to the second)."""

    moment: datetime
    label: str


@dataclass(frozen=True)
class ExportRange:
    since: Bound | None = None
    until: Bound | None = None


def _stamp(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y%m%dT%H%M%SZ")


def export_bound(text: str, *, end: bool) -> Bound:
    """`since` (end=False) or `until` (end=True) from a date (YYYY-MM-DD) or an ISO 8601
    date and time; ValueError, in words, for anything else."""
    text = text.strip()
    if "\x00" in text:
        raise ValueError("must not contain NUL bytes")
    if len(text) > BOUND_MAX_LENGTH:
        raise ValueError(f"must be at most {BOUND_MAX_LENGTH} characters")
    try:
        if not text.isascii():
            raise ValueError(text)
        try:  # a bare date: the day starts, or (as an end) ends, at UTC midnight
            day = date.fromisoformat(text)
        except ValueError:
            moment = datetime.fromisoformat(text)
        else:
            start = datetime.combine(day, time.min, tzinfo=UTC)
            if end:  # through that day; 9999-12-31 has no next one
                start = (
                    start + timedelta(days=1)
                    if day < date.max
                    else datetime.max.replace(tzinfo=UTC)
                )
            return Bound(start, day.isoformat())
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=UTC)
        moment = moment.astimezone(UTC)
    except (ValueError, OverflowError):
        raise ValueError(
            "must be a date (2025-03-31) or an ISO 8601 date and time (2025-03-31T12:00:00Z)"
        ) from None
    return Bound(moment, _stamp(moment))


def export_range(since: str = "", until: str = "") -> ExportRange:
    """The range two parameters name (either may be empty: open on that side);
    ExportRangeError naming the parameter when one is no date or the range is empty
    (`since` not before `until`)."""
    bounds: dict[str, Bound | None] = {}
    for field, text, end in (("since", since, False), ("until", until, True)):
        try:
            bounds[field] = export_bound(text, end=end) if text.strip() else None
        except ValueError as exc:
            raise ExportRangeError(field, str(exc)) from None
    return export_range_check(bounds["since"], bounds["until"])


def export_range_check(since: Bound | None, until: Bound | None) -> ExportRange:
    if since and until and since.moment >= until.moment:  # an empty range is a mistake
        raise ExportRangeError("until", "must be after the start of the range")
    return ExportRange(since, until)


def audit_export_events(
    customer: Customer | int,
    *,
    actor: str = "",
    action: str = "",
    machine: bool = False,
    period: ExportRange | None = None,
) -> QuerySet[AuditEvent]:
    """The customer's events the Activity page shows with these filters, in the range."""
    events = audit_search(customer, actor=actor, action=action, machine=machine)
    return audit_in_range(events, period or ExportRange())


def audit_in_range(events: QuerySet[AuditEvent], period: ExportRange) -> QuerySet[AuditEvent]:
    if period.since:
        events = events.filter(at__gte=period.since.moment)
    if period.until:
        events = events.filter(at__lt=period.until.moment)
    return events


class ExportRow(NamedTuple):
    """The columns an export reads of each event: a tuple, not a model instance, so a
    batch costs a fraction of the time and memory."""

    id: int
    at: datetime
    actor_user_id: int | None
    actor_label: str
    action: str
    target_type: str
    target_id: str
    target_repr: str
    changes: Any
    ip_address: str | None


def audit_batches(
    events: QuerySet[AuditEvent], batch_size: int | None = None
) -> Iterator[list[ExportRow]]:
    """The events oldest first, `batch_size` at a time, each batch one query that starts
    after the last row read (keyset on time, then id): no offset scan, no cursor or
    transaction held open while a slow client downloads."""
    batch_size = batch_size or EXPORT_BATCH
    events = events.select_related(None).order_by("at", "id")
    last: ExportRow | None = None
    while True:
        page = events
        if last is not None:
            # at >= last.at narrows the index scan; the exclude drops the rows already read.
            page = events.filter(at__gte=last.at).exclude(at=last.at, id__lte=last.id)
        rows = cast(
            list[ExportRow], list(page.values_list(*ExportRow._fields, named=True)[:batch_size])
        )
        if rows:
            yield rows
        if len(rows) < batch_size:
            return
        last = rows[-1]


def utc_iso(moment: datetime) -> str:
    """ISO 8601 in UTC to the microsecond, always the same width: 2025-03-31T12:00:00.000000Z."""
    return moment.astimezone(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


ACTION_WORDS: dict[str, str] = dict(AuditAction.choices)  # read per row: built once


def action_words(action: str) -> str:
    """The action as the admin and the Activity menu name it (an action retired since
    reads as its value)."""
    return ACTION_WORDS.get(action, action)


def audit_export_record(row: ExportRow | AuditEvent) -> dict[str, Any]:
    """One event as a row of the export, as `GET /api/v1/activity` lists it too."""
    return {
        "id": row.id,
        "time": utc_iso(row.at),
        "actor": row.actor_label,
        # actor_kind reads the two fields every ExportRow has.
        "actor_kind": str(actor_kind(cast(AuditEvent, row))),
        "action": row.action,
        "action_words": action_words(row.action),
        "target_type": row.target_type,
        "target_id": row.target_id,
        "target_label": row.target_repr or None,
        "changes": row.changes,
        "address": row.ip_address or None,
    }


def csv_cell(value: Any) -> str:
    """A value as a CSV cell no spreadsheet will run: text starting with a formula
    trigger (after any spaces) gets a leading apostrophe; nothing else changes."""
    text = "" if value is None else str(value)
    if text[:1] in FORMULA_TRIGGERS or (
        text[:1] == " " and text.lstrip(" ")[:1] in FORMULA_TRIGGERS
    ):
        return "'" + text
    return text


def _csv_chunks(batches: Iterable[list[ExportRow]]) -> Iterator[str]:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")  # RFC 4180
    writer.writerow(COLUMNS)
    yield buffer.getvalue()
    for rows in batches:
        buffer.seek(0)
        buffer.truncate()
        for row in rows:
            record = audit_export_record(row)
            record["changes"] = json.dumps(record["changes"], sort_keys=True, ensure_ascii=False)
            writer.writerow([csv_cell(value) for value in record.values()])
        yield buffer.getvalue()


def _jsonl_chunks(batches: Iterable[list[ExportRow]]) -> Iterator[str]:
    for rows in batches:
        yield "".join(
            json.dumps(audit_export_record(row), ensure_ascii=False) + "\n" for row in rows
        )


def audit_export_chunks(events: QuerySet[AuditEvent], fmt: ExportFormat) -> Iterator[str]:
    """The file's text, one chunk per batch (a CSV's header first). CSV cells are
    neutralised against formulas; JSON Lines carry the values as recorded."""
    batches = audit_batches(events)
    return _csv_chunks(batches) if fmt == ExportFormat.CSV else _jsonl_chunks(batches)


@dataclass(frozen=True)
class AuditExport:
    """A download ready to stream: its chunks, its name and its content type."""

    chunks: Iterator[str]
    filename: str
    content_type: str


def audit_export(
    events: QuerySet[AuditEvent],
    fmt: ExportFormat,
    *,
    name: str,
    period: ExportRange | None = None,
    now: datetime | None = None,
) -> AuditExport:
    """`events` (already filtered) as a download named agentina-activity-<name>-<from>-<to>:
    an open end is closed at `now` (so events written during the download are not
    chased), and an open start is named after the first event (today when none)."""
    period = period or ExportRange()
    now = now or timezone.now()
    until = period.until or Bound(now, _stamp(now))
    events = audit_in_range(events, ExportRange(period.since, until))
    since = period.since
    if since is None:
        first = events.order_by("at").values_list("at", flat=True).first()
        since = Bound(first or now, (first or now).astimezone(UTC).date().isoformat())
    filename = f"agentina-activity-{name}-{since.label}-{until.label}.{fmt.value}"
    return AuditExport(audit_export_chunks(events, fmt), filename, CONTENT_TYPES[fmt])
