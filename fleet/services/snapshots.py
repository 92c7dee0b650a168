"""The minute snapshot: one FleetSnapshot row per customer, computed for every customer at
once with grouped aggregates (a fixed number of statements whatever the number of
customers, agents or jobs). Charts, trends, detections and /fleet/metrics read these.

No minute is lost: when beat resumes after missing some (beat, worker or broker down),
the missed minutes are rebuilt from the timestamps that outlive them, and marked so."""

from collections import defaultdict
from datetime import datetime, timedelta
from typing import Any

from django.db.models import Count, Max, Q, Sum
from django.utils import timezone

from fleet import policy
from fleet.choices import AgentActivity, AgentRole, AgentStatus, Channel, JobStatus
from fleet.models import Agent, Anomaly, Customer, FleetSnapshot, Job, License
from fleet.models.agents import heard_q
from fleet.models.jobs import OPEN_JOB
from fleet.selectors import minor_floor, release_latest
from fleet.selectors.outcomes import UsageSnapshot, Work, usage_snapshots
from fleet.selectors.waits import wait_percentiles
from fleet.services.presence import presence_flush

HOUR = timedelta(hours=1)
MINUTE = timedelta(minutes=1)


def _version_counts() -> dict[str, Any]:
    """Per-agent counts of being behind the latest release of each channel."""
    counts: dict[str, Any] = {}
    for channel in Channel.values:
        latest = release_latest(channel)
        if latest is None:
            continue
        counts[f"behind_{channel}"] = Count("pk", filter=~Q(version=latest.version))
        counts[f"minor_behind_{channel}"] = Count(
            "pk", filter=Q(version__lt=minor_floor(latest.version))
        )
    return counts


def _activity_counts(online_q: Q) -> dict[str, Any]:
    """Online agents by role and reported activity (those that never said: not counted)."""
    return {
        f"act_{r}_{a}": Count("pk", filter=online_q & Q(role=r, activity=a))
        for r in AgentRole.values
        for a in AgentActivity.values
    }


def _by_activity(row: dict[str, Any]) -> dict[str, dict[str, int]]:
    """{role: {activity: agents}}, only the non-zero counts (an agent waiting for input
    holds its running job, so it counts busy, never idle, in idle_ratio)."""
    counts: dict[str, dict[str, int]] = {}
    for r in AgentRole.values:
        for a in AgentActivity.values:
            if row.get(f"act_{r}_{a}"):
                counts.setdefault(r, {})[a] = row[f"act_{r}_{a}"]
    return counts


def fleet_snapshots_take(*, now: datetime | None = None) -> list[FleetSnapshot]:
    """Write this minute's snapshot of every customer (twice in a minute updates the same
    rows) and return them."""
    now = now or timezone.now()
    presence_flush()  # online counts come from every heartbeat heard
    minute = now.replace(second=0, microsecond=0)
    online_q = heard_q(now)

    customers = list(Customer.objects.values_list("pk", flat=True))
    channels = dict(License.objects.filter(is_current=True).values_list("customer_id", "channel"))
    running = Job.objects.filter(status=JobStatus.RUNNING)
    agents = {
        row["customer_id"]: row
        for row in Agent.objects.holding_seat()
        .values("customer_id")
        .annotate(
            total=Count("pk"),
            online=Count("pk", filter=online_q),
            # Online and holding a running job: the running jobs' agents are hashed once,
            # never joined row by row to every agent.
            busy=Count("pk", filter=online_q & Q(pk__in=running.values("agent_id"))),
            **{f"status_{s}": Count("pk", filter=Q(status=s)) for s in AgentStatus.values},
            **{f"role_{r}": Count("pk", filter=Q(role=r)) for r in AgentRole.values},
            **_activity_counts(online_q),
            **_version_counts(),
        )
        .order_by()
    }
    # Open jobs (two partial indexes), then those finished within the hour (a range of
    # finished_at): each read where it lies, never an OR over the whole table.
    jobs: dict[int, dict[str, int]] = defaultdict(dict)
    for row in (
        Job.objects.filter(OPEN_JOB)
        .values("customer_id")
        .annotate(
            queued=Count("pk", filter=Q(status=JobStatus.QUEUED)),
            running=Count("pk", filter=Q(status=JobStatus.RUNNING)),
        )
        .order_by()
    ):
        jobs[row["customer_id"]] |= row
    for row in (
        Job.objects.filter(finished_at__gt=now - HOUR)
        .values("customer_id")
        .annotate(
            completed=Count("pk", filter=Q(status=JobStatus.SUCCEEDED)),
            failed=Count("pk", filter=Q(status=JobStatus.FAILED)),
        )
        .order_by()
    ):
        jobs[row["customer_id"]] |= row
    waits = wait_percentiles(now - policy.WAIT_WINDOW, now)
    usage = usage_snapshots(now - HOUR, now)
    anomalies = dict(
        Anomaly.objects.filter(resolved_at__isnull=True)
        .values("customer_id")
        .annotate(n=Count("pk"))
        .order_by()
        .values_list("customer_id", "n")
    )
    earlier = {
        row["customer_id"]: row
        for row in FleetSnapshot.objects.filter(taken_at__gt=minute - HOUR, taken_at__lt=minute)
        .values("customer_id")
        .annotate(online=Sum("agents_online"), busy=Sum("agents_busy"))
        .order_by()
    }

    snapshots = []
    for customer_id in customers:
        a = agents.get(customer_id, {})
        j = jobs.get(customer_id, {})
        channel = channels.get(customer_id, Channel.STABLE)
        online, busy_now = a.get("online", 0), a.get("busy", 0)
        past = earlier.get(customer_id, {})
        online_minutes = (past.get("online") or 0) + online
        busy_minutes = (past.get("busy") or 0) + busy_now
        p50, p95 = waits.get(customer_id, (None, None))
        spent = usage.get(customer_id) or UsageSnapshot(Work(), {}, {})
        snapshots.append(
            FleetSnapshot(
                customer_id=customer_id,
                taken_at=minute,
                agents_total=a.get("total", 0),
                agents_online=online,
                agents_busy=busy_now,
                agents_by_status={s: a.get(f"status_{s}", 0) for s in AgentStatus.values},
                agents_by_role={r: a.get(f"role_{r}", 0) for r in AgentRole.values},
                agents_by_activity=_by_activity(a),
                online_ratio=online / a["total"] if a.get("total") else None,
                jobs_completed_last_hour=j.get("completed", 0),
                jobs_failed_last_hour=j.get("failed", 0),
                queue_depth=j.get("queued", 0),
                jobs_running=j.get("running", 0),
                wait_p50_seconds=p50,
                wait_p95_seconds=p95,
                idle_ratio=1 - busy_minutes / online_minutes if online_minutes else None,
                anomalies_unresolved=anomalies.get(customer_id, 0),
                agents_not_on_latest=a.get(f"behind_{channel}", 0),
                agents_minor_behind=a.get(f"minor_behind_{channel}", 0),
                cost_usd_last_hour=spent.total.cost_usd,
                tokens_last_hour=spent.total.tokens,
                jobs_judged_last_hour=spent.total.judged,
                jobs_accepted_last_hour=spent.total.accepted,
                usage_by_role=spent.by_role,
                usage_by_version=spent.by_version,
            )
        )
    fields = [
        f.name
        for f in FleetSnapshot._meta.concrete_fields
        if f.name not in ("id", "customer", "taken_at")
    ]
    missed = _missed_minutes(minute)
    FleetSnapshot.objects.bulk_create(
        snapshots,
        update_conflicts=True,
        unique_fields=["customer", "taken_at"],
        update_fields=fields,
    )
    if missed:
        snapshots_backfill(missed, customers)
    return snapshots


def _missed_minutes(minute: datetime) -> list[datetime]:
    """The minutes between the newest snapshot before `minute` and `minute` itself, within
    the backfill limit (one indexed statement)."""
    limit = minute - policy.SNAPSHOT_BACKFILL_LIMIT
    newest = FleetSnapshot.objects.filter(taken_at__gte=limit, taken_at__lt=minute).aggregate(
        at=Max("taken_at")
    )["at"]
    if newest is None:  # a new install, or a gap older than the limit: nothing to rebuild
        return []
    return [newest + MINUTE * i for i in range(1, (minute - newest) // MINUTE)]


def snapshots_backfill(minutes: list[datetime], customers: list[int]) -> int:
    """Rebuild the snapshots of minutes beat missed from the timestamps that outlive them:
    jobs (completed, failed, queued and running at that minute), agents (holding a seat
    then, by role) and findings (open then). Presence, busy agents, versions and waits
    are not kept per minute, so they stay empty and the charts show a gap there instead
    of a guess. Three statements a minute; a real snapshot is never overwritten."""
    rows = []
    for at in minutes:
        jobs = {
            row["customer_id"]: row
            for row in Job.objects.filter(  # unfinished now (queued, running) or lately
                Q(status=JobStatus.QUEUED)
                | Q(status=JobStatus.RUNNING)
                | Q(finished_at__gt=at - HOUR),
                queued_at__lte=at,
            )
            .values("customer_id")
            .annotate(
                completed=Count("pk", filter=Q(status=JobStatus.SUCCEEDED, finished_at__lte=at)),
                failed=Count("pk", filter=Q(status=JobStatus.FAILED, finished_at__lte=at)),
                queued=Count(
                    "pk",
                    filter=(Q(started_at__isnull=True) | Q(started_at__gt=at))
                    & (Q(finished_at__isnull=True) | Q(finished_at__gt=at)),
                ),
                running=Count(
                    "pk",
                    filter=Q(started_at__lte=at)
                    & (Q(finished_at__isnull=True) | Q(finished_at__gt=at)),
                ),
            )
            .order_by()
        }
        agents = {
            row["customer_id"]: row
            for row in Agent.objects.filter(
                Q(decommissioned_at__isnull=True) | Q(decommissioned_at__gt=at),
                registered_at__lte=at,
            )
            .values("customer_id")
            .annotate(
                total=Count("pk"),
                **{f"role_{r}": Count("pk", filter=Q(role=r)) for r in AgentRole.values},
            )
            .order_by()
        }
        anomalies = dict(
            Anomaly.objects.filter(
                Q(resolved_at__isnull=True) | Q(resolved_at__gt=at), first_seen__lte=at
            )
            .values("customer_id")
            .annotate(n=Count("pk"))
            .order_by()
            .values_list("customer_id", "n")
        )
        for customer_id in customers:
            a, j = agents.get(customer_id, {}), jobs.get(customer_id, {})
            rows.append(
                FleetSnapshot(
                    customer_id=customer_id,
                    taken_at=at,
                    backfilled=True,
                    agents_total=a.get("total", 0),
                    agents_online=None,
                    agents_busy=None,
                    agents_by_role={r: a.get(f"role_{r}", 0) for r in AgentRole.values},
                    jobs_completed_last_hour=j.get("completed", 0),
                    jobs_failed_last_hour=j.get("failed", 0),
                    queue_depth=j.get("queued", 0),
                    jobs_running=j.get("running", 0),
                    anomalies_unresolved=anomalies.get(customer_id, 0),
                    agents_not_on_latest=None,
                    agents_minor_behind=None,
                )
            )
    FleetSnapshot.objects.bulk_create(rows, ignore_conflicts=True)
    return len(rows)
