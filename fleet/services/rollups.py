"""Hourly and daily rollups of the fleet's numbers: each hour folded from its minute
snapshots and counted from its jobs, each day folded from its hours, all customers at once
in grouped queries (a fixed number of statements however many customers or hours). What
the long charts and the throughput baselines read once minutes and jobs are pruned.

Re-rolling is harmless (an upsert on customer, resolution and period): each run folds the
last few periods again, so minutes rebuilt by the snapshot backfill after a gap, or jobs
finished late in an hour, are counted."""

from datetime import datetime, timedelta
from typing import Any

from django.db.models import Avg, Count, Max, Min, Q, Sum
from django.db.models.functions import TruncDay, TruncHour
from django.utils import timezone

from fleet import policy
from fleet.choices import JobStatus, OutcomeVerdict, RollupResolution
from fleet.models import FleetRollup, FleetSnapshot, Job

HOUR = timedelta(hours=1)
DAY = timedelta(days=1)
# Folded again each run: the backfill rebuilds minutes up to this late.
REROLL = policy.SNAPSHOT_BACKFILL_LIMIT + HOUR

FOLDED = [
    "minutes",
    "jobs_completed",
    "jobs_failed",
    "agents_total",
    "online_ratio",
    "online_ratio_avg",
    "queue_depth",
    "wait_p50_seconds",
    "wait_p95_seconds",
    "idle_ratio",
    "anomalies_unresolved",
    "agents_not_on_latest",
    "cost_usd",
    "tokens",
    "jobs_judged",
    "jobs_accepted",
]


def _hour(at: datetime) -> datetime:
    return at.replace(minute=0, second=0, microsecond=0)


def _day(at: datetime) -> datetime:
    return at.replace(hour=0, minute=0, second=0, microsecond=0)


# How a minute's (or an hour's) value folds into its period: the worst of the online
# ratio, the most of what piles up, the average of the rest.
FOLDS = {
    "agents_total": Max,
    "online_ratio": Min,
    "queue_depth": Max,
    "wait_p50_seconds": Avg,
    "wait_p95_seconds": Max,
    "idle_ratio": Avg,
    "anomalies_unresolved": Max,
    "agents_not_on_latest": Max,
}


def _folds() -> dict[str, Any]:
    return {name: fold(name) for name, fold in FOLDS.items()}


def _as(**aggregates: Any) -> dict[str, Any]:
    """Aggregates under names no field has (an annotation named like a field would be
    read by the next aggregate of that field); `_fields` names them back."""
    return {f"folded_{name}": aggregate for name, aggregate in aggregates.items()}


def _fields(row: dict[str, Any]) -> dict[str, Any]:
    return {name.removeprefix("folded_"): value for name, value in row.items()}


def rollup_newest(resolution: str) -> datetime | None:
    """The start of the newest period rolled up at this resolution (any customer)."""
    return (
        FleetRollup.objects.filter(resolution=resolution)
        .order_by("-period_start")
        .values_list("period_start", flat=True)
        .first()
    )


def _save(resolution: str, rows: dict[tuple[int, datetime], dict[str, Any]]) -> int:
    FleetRollup.objects.bulk_create(
        [
            FleetRollup(customer_id=c, resolution=resolution, period_start=start, **fields)
            for (c, start), fields in rows.items()
        ],
        update_conflicts=True,
        unique_fields=["customer", "resolution", "period_start"],
        update_fields=FOLDED,
        batch_size=1000,
    )
    return len(rows)


def rollups_hourly(*, now: datetime | None = None) -> int:
    """Fold every finished hour not rolled up yet (and the last few again). The first run
    reaches back to the oldest minute or job there is, so every job's count survives it."""
    now = now or timezone.now()
    end = _hour(now)
    newest = rollup_newest(RollupResolution.HOUR)
    if newest is not None:
        start = _hour(newest + HOUR - REROLL)
    else:  # the first run: from the oldest minute or finished job there is
        oldest = [
            at
            for at in (
                FleetSnapshot.objects.order_by("taken_at")
                .values_list("taken_at", flat=True)
                .first(),
                Job.objects.filter(finished_at__isnull=False)
                .order_by("finished_at")
                .values_list("finished_at", flat=True)
                .first(),
            )
            if at is not None
        ]
        if not oldest:
            return 0
        start = _hour(min(oldest))
    if start >= end:
        return 0
    rows: dict[tuple[int, datetime], dict[str, Any]] = {}
    minutes = (
        FleetSnapshot.objects.filter(taken_at__gte=start, taken_at__lt=end)
        .annotate(period=TruncHour("taken_at"))
        .values("customer_id", "period")
        .annotate(**_as(minutes=Count("pk"), online_ratio_avg=Avg("online_ratio"), **_folds()))
        .order_by()
    )
    for row in minutes:
        key = (row.pop("customer_id"), row.pop("period"))
        rows[key] = {**_fields(row), "jobs_completed": 0, "jobs_failed": 0}
    jobs = (
        Job.objects.filter(
            finished_at__gte=start,
            finished_at__lt=end,
            status__in=[JobStatus.SUCCEEDED, JobStatus.FAILED],
        )
        .annotate(period=TruncHour("finished_at"))
        .values("customer_id", "period")
        .annotate(
            jobs_completed=Count("pk", filter=Q(status=JobStatus.SUCCEEDED)),
            jobs_failed=Count("pk", filter=Q(status=JobStatus.FAILED)),
            **_as(cost_usd=Sum("cost_usd"), tokens=Sum("input_tokens") + Sum("output_tokens")),
        )
        .order_by()
    )
    for row in jobs:
        key = (row.pop("customer_id"), row.pop("period"))
        rows.setdefault(key, {"minutes": 0}).update(_fields(row))
    # Verdicts by the hour they came in (a job judged again counts at its latest).
    judged = (
        Job.objects.filter(verdict_at__gte=start, verdict_at__lt=end)
        .annotate(period=TruncHour("verdict_at"))
        .values("customer_id", "period")
        .annotate(
            **_as(
                jobs_judged=Count("pk"),
                jobs_accepted=Count("pk", filter=Q(verdict=OutcomeVerdict.ACCEPTED)),
            )
        )
        .order_by()
    )
    for row in judged:
        key = (row.pop("customer_id"), row.pop("period"))
        rows.setdefault(key, {"minutes": 0}).update(_fields(row))
    return _save(RollupResolution.HOUR, rows)


def rollups_daily(*, now: datetime | None = None) -> int:
    """Fold every finished day (UTC) from its hours, the last day again."""
    now = now or timezone.now()
    end = _day(now)
    newest = rollup_newest(RollupResolution.DAY)
    oldest_hour = (
        FleetRollup.objects.filter(resolution=RollupResolution.HOUR)
        .order_by("period_start")
        .values_list("period_start", flat=True)
        .first()
    )
    if oldest_hour is None:
        return 0
    start = _day(newest) if newest is not None else _day(oldest_hour)
    if start >= end:
        return 0
    hours = (
        FleetRollup.objects.filter(
            resolution=RollupResolution.HOUR, period_start__gte=start, period_start__lt=end
        )
        .annotate(period=TruncDay("period_start"))
        .values("customer_id", "period")
        .annotate(
            **_as(
                minutes=Sum("minutes"),
                jobs_completed=Sum("jobs_completed"),
                jobs_failed=Sum("jobs_failed"),
                cost_usd=Sum("cost_usd"),
                tokens=Sum("tokens"),
                jobs_judged=Sum("jobs_judged"),
                jobs_accepted=Sum("jobs_accepted"),
                online_ratio_avg=Avg("online_ratio_avg"),
                **_folds(),
            )
        )
        .order_by()
    )
    rows = {(row.pop("customer_id"), row.pop("period")): _fields(row) for row in hours}
    return _save(RollupResolution.DAY, rows)
