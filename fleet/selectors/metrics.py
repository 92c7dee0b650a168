"""The fleet's numbers: live counts, snapshot rates and throughput baselines."""

from dataclasses import dataclass, field, fields
from datetime import datetime, timedelta
from typing import Any

from django.db.models import Count, Max, Min, Q, Sum
from django.utils import timezone

from fleet import policy
from fleet.choices import (
    AgentActivity,
    AgentRole,
    AgentStatus,
    Channel,
    JobCancelReason,
    JobStatus,
    RollupResolution,
)
from fleet.models import Agent, Anomaly, Customer, FleetRollup, FleetSnapshot, Job
from fleet.models.agents import heard_q
from fleet.models.jobs import FINISHED_JOB_STATUSES, OPEN_JOB
from fleet.selectors.agents import with_label
from fleet.selectors.licenses import customer_channel
from fleet.selectors.releases import release_latest
from fleet.versions import SemVer


def throughput_baselines(now: datetime, customer: Customer | int | None = None) -> dict[int, float]:
    """By customer: jobs completed in the hour up to this time of day, averaged over the
    previous days that have it (THROUGHPUT_BASELINE_DAYS). Read from the hourly rollups'
    exact counts: the hour straddles two clock hours, each weighed by its share of it."""
    into_hour = now - now.replace(minute=0, second=0, microsecond=0)
    share = into_hour / timedelta(hours=1)  # of the later clock hour
    weights: dict[datetime, tuple[int, float]] = {}
    for day in range(1, policy.THROUGHPUT_BASELINE_DAYS + 1):
        later = now - timedelta(days=day) - into_hour
        weights[later - timedelta(hours=1)] = (day, 1 - share)
        if share:  # on the hour, the earlier clock hour is the whole window
            weights[later] = (day, share)
    rollups = FleetRollup.objects.filter(resolution=RollupResolution.HOUR, period_start__in=weights)
    if customer is not None:
        rollups = rollups.filter(customer=customer)
    days: dict[int, dict[int, list[float]]] = {}
    for customer_id, start, jobs in rollups.values_list(
        "customer_id", "period_start", "jobs_completed"
    ):
        day, weight = weights[start]
        days.setdefault(customer_id, {}).setdefault(day, []).append(weight * jobs)
    needed = 2 if share else 1  # a day counts when it has every hour of its window
    baselines = {}
    for customer_id, by_day in days.items():
        whole = [sum(parts) for parts in by_day.values() if len(parts) >= needed]
        if whole:
            baselines[customer_id] = round(sum(whole) / len(whole), 3)
    return baselines


@dataclass(frozen=True)
class FleetMetrics:
    """The four numbers operators watch: counts live, rates from the latest snapshot."""

    at: datetime
    agents_active: int
    agents_online: int
    online_ratio: float | None
    jobs_completed_last_hour: int
    jobs_completed_previous_hour: int
    jobs_failed_last_hour: int
    jobs_timed_out_last_hour: int  # stopped past their max runtime
    queue_depth: int
    jobs_running: int
    anomalies_unresolved: int
    latest_version: str | None
    agents_not_on_latest: int
    agents_minor_behind: int
    throughput_baseline: float | None = None  # same hour on the previous days
    idle_ratio: float | None = None
    wait_p50_seconds: float | None = None
    wait_p95_seconds: float | None = None
    snapshot_at: datetime | None = None
    # The same counts by role (the dashboard's table reads these: one scan of the fleet).
    roles: list["RoleNumbers"] = field(default_factory=list, repr=False)

    @property
    def throughput_trend(self) -> float | None:
        """Last hour's completions against the baseline (the same hour on previous days),
        or against the hour before when there is no baseline yet; 1.0 is steady."""
        reference = self.throughput_baseline or self.jobs_completed_previous_hour
        return self.jobs_completed_last_hour / reference if reference else None

    def as_dict(self) -> dict[str, Any]:
        numbers = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "roles"}
        return {**numbers, "throughput_trend": self.throughput_trend}


@dataclass(frozen=True)
class RoleNumbers:
    """One role of a fleet, now: what the dashboard, Plan and advice say of it."""

    role: str
    agents: int  # holding a seat
    online: int  # heard from within the online window
    can_work: int  # online and not upgrading: these claim jobs
    busy: int  # online and running at least one job
    running: int  # jobs running
    queued: int  # jobs waiting
    oldest_wait_seconds: float | None  # how long the oldest waiting job has waited
    behind: int = 0  # not on the latest release (counted when role_numbers is given it)
    minor_behind: int = 0  # more than one minor version behind it
    # Online agents by the activity they report (only those some agent reports).
    activity: dict[str, int] = field(default_factory=dict)

    @property
    def activity_words(self) -> list[str]:
        """ "2 waiting for input", "3 rate-limited by their provider", … for the table."""
        return [
            f"{n} {AgentActivity(a).label.lower()}"
            for a, n in self.activity.items()
            if a != AgentActivity.WORKING and a != AgentActivity.IDLE
        ]

    @property
    def offline(self) -> int:
        return self.agents - self.online

    @property
    def idle(self) -> int:
        return max(self.can_work - self.busy, 0)


def role_numbers(
    customer: Customer | int | None,
    *,
    now: datetime | None = None,
    label: str = "",
    latest: SemVer | None = None,
) -> list[RoleNumbers]:
    """Every role's numbers (roles with neither agents nor jobs included, as zeros), in
    two queries whatever the fleet's size; `customer=None` is every fleet together. With
    `label` ("key=value" or "key"): the agents that carry it and the jobs that require it.
    With `latest`: how many agents are behind it, counted in the same scan."""
    now = now or timezone.now()
    online = heard_q(now)
    seated = Agent.objects.holding_seat()
    open_jobs = Job.objects.all()
    if customer is not None:
        seated = seated.filter(customer=customer)
        open_jobs = open_jobs.filter(customer=customer)
    running = open_jobs.filter(status=JobStatus.RUNNING)
    if label:
        seated = with_label(seated, "labels", label)
        running = with_label(running, "agent__labels", label)
        open_jobs = with_label(open_jobs, "required_labels", label)
    version_counts: dict[str, Any] = {}
    if latest is not None:
        version_counts = {
            "behind": Count("pk", filter=~Q(version=latest)),
            "minor_behind": Count("pk", filter=Q(version__lt=minor_floor(latest))),
        }
    agents = {
        row["role"]: row
        for row in seated.values("role")
        .annotate(
            n=Count("pk"),
            online=Count("pk", filter=online),
            can_work=Count("pk", filter=online & ~Q(status=AgentStatus.UPGRADING)),
            # Online and holding a running job: the running jobs' agents are hashed once
            # (a few thousand ids), never joined row by row to the whole fleet.
            busy=Count("pk", filter=online & Q(pk__in=running.values("agent_id"))),
            **version_counts,
            **{f"act_{a}": Count("pk", filter=online & Q(activity=a)) for a in AgentActivity},
        )
        .order_by()
    }
    jobs = {
        row["role"]: row
        for row in open_jobs.filter(OPEN_JOB)
        .values("role")
        .annotate(
            queued=Count("pk", filter=Q(status=JobStatus.QUEUED)),
            running=Count("pk", filter=Q(status=JobStatus.RUNNING)),
            oldest=Min("queued_at", filter=Q(status=JobStatus.QUEUED)),
        )
        .order_by()
    }
    numbers = []
    for role in AgentRole.values:
        a, j = agents.get(role, {}), jobs.get(role, {})
        oldest = j.get("oldest")
        numbers.append(
            RoleNumbers(
                role=role,
                agents=a.get("n", 0),
                online=a.get("online", 0),
                can_work=a.get("can_work", 0),
                busy=a.get("busy", 0),
                running=j.get("running", 0),
                queued=j.get("queued", 0),
                oldest_wait_seconds=(now - oldest).total_seconds() if oldest else None,
                behind=a.get("behind", 0),
                minor_behind=a.get("minor_behind", 0),
                activity={x: a[f"act_{x}"] for x in AgentActivity.values if a.get(f"act_{x}")},
            )
        )
    return numbers


def minor_floor(latest: SemVer) -> SemVer:
    """The lowest version that is at most one minor behind `latest`."""
    return SemVer(f"{latest.major}.{max(latest.minor - 1, 0)}.0-0")


def fleet_metrics(customer: Customer | int | None, *, now: datetime | None = None) -> FleetMetrics:
    """Eight queries whatever the fleet's size. `customer=None` is every fleet together
    (staff's view), measured against the stable channel, without snapshot rates."""
    now = now or timezone.now()
    scope = Q(customer=customer) if customer is not None else Q()
    latest = release_latest(customer_channel(customer) if customer is not None else Channel.STABLE)
    latest_version = latest.version if latest else None
    roles = role_numbers(customer, now=now, latest=latest_version)
    hour = timedelta(hours=1)
    # Open jobs are counted by role; those finished within two hours here, a tight range
    # of (customer, status, finished_at), never the customer's whole history.
    jobs = Job.objects.filter(
        scope, status__in=FINISHED_JOB_STATUSES, finished_at__gt=now - 2 * hour
    ).aggregate(
        last_hour=Count("pk", filter=Q(status=JobStatus.SUCCEEDED, finished_at__gt=now - hour)),
        previous_hour=Count(
            "pk", filter=Q(status=JobStatus.SUCCEEDED, finished_at__lte=now - hour)
        ),
        failed=Count("pk", filter=Q(status=JobStatus.FAILED, finished_at__gt=now - hour)),
        timed_out=Count(
            "pk",
            filter=Q(
                status=JobStatus.CANCELLED,
                stop_reason=JobCancelReason.TIMED_OUT,
                finished_at__gt=now - hour,
            ),
        ),
    )
    anomalies = Anomaly.objects.filter(scope, resolved_at__isnull=True).count()
    snapshot = (
        FleetSnapshot.objects.filter(customer=customer).order_by("-taken_at").first()
        if customer is not None
        else None
    )
    baseline = (
        throughput_baselines(now, customer).get(
            customer if isinstance(customer, int) else customer.pk
        )
        if customer is not None
        else None
    )
    active, online = sum(r.agents for r in roles), sum(r.online for r in roles)
    return FleetMetrics(
        at=now,
        agents_active=active,
        agents_online=online,
        online_ratio=online / active if active else None,
        jobs_completed_last_hour=jobs["last_hour"],
        jobs_completed_previous_hour=jobs["previous_hour"],
        jobs_failed_last_hour=jobs["failed"],
        jobs_timed_out_last_hour=jobs["timed_out"],
        queue_depth=sum(r.queued for r in roles),
        jobs_running=sum(r.running for r in roles),
        anomalies_unresolved=anomalies,
        latest_version=str(latest_version) if latest_version else None,
        agents_not_on_latest=sum(r.behind for r in roles),
        agents_minor_behind=sum(r.minor_behind for r in roles),
        throughput_baseline=baseline,
        idle_ratio=snapshot.idle_ratio if snapshot else None,
        wait_p50_seconds=snapshot.wait_p50_seconds if snapshot else None,
        wait_p95_seconds=snapshot.wait_p95_seconds if snapshot else None,
        snapshot_at=snapshot.taken_at if snapshot else None,
        roles=roles,
    )


@dataclass(frozen=True)
class TakenNumbers:
    """The four numbers as the newest minute snapshot took them, summed over the fleets it
    covers: what staff's admin lists show above them (every fleet at once, without counting
    every agent and job again on each view). Version skew is against each customer's own
    channel."""

    at: datetime  # the minute the snapshot stands for
    agents_active: int
    agents_online: int
    jobs_completed_last_hour: int
    jobs_completed_previous_hour: int | None  # None: no snapshot an hour before it
    queue_depth: int
    anomalies_unresolved: int
    agents_not_on_latest: int
    agents_minor_behind: int
    latest_version: str | None  # one customer's: its channel's latest

    @property
    def online_ratio(self) -> float | None:
        return self.agents_online / self.agents_active if self.agents_active else None


def fleet_numbers_taken(customer: Customer | None) -> TakenNumbers | None:
    """Three indexed reads of the minute snapshots (None before the first one)."""
    rows = FleetSnapshot.objects.all() if customer is None else customer.snapshots.all()
    at = rows.aggregate(at=Max("taken_at"))["at"]
    if at is None:
        return None
    taken = rows.filter(taken_at=at).aggregate(
        active=Sum("agents_total", default=0),
        online=Sum("agents_online", default=0),
        completed=Sum("jobs_completed_last_hour", default=0),
        queued=Sum("queue_depth", default=0),
        anomalies=Sum("anomalies_unresolved", default=0),
        behind=Sum("agents_not_on_latest", default=0),
        minor_behind=Sum("agents_minor_behind", default=0),
    )
    before = rows.filter(taken_at=at - timedelta(hours=1)).aggregate(
        n=Count("pk"), completed=Sum("jobs_completed_last_hour", default=0)
    )
    latest = release_latest(customer_channel(customer)) if customer is not None else None
    return TakenNumbers(
        at=at,
        agents_active=taken["active"],
        agents_online=taken["online"],
        jobs_completed_last_hour=taken["completed"],
        jobs_completed_previous_hour=before["completed"] if before["n"] else None,
        queue_depth=taken["queued"],
        anomalies_unresolved=taken["anomalies"],
        agents_not_on_latest=taken["behind"],
        agents_minor_behind=taken["minor_behind"],
        latest_version=str(latest.version) if latest else None,
    )


def snapshot_series(
    customer: Customer | int, *, hours: int = 24, now: datetime | None = None
) -> list[FleetSnapshot | None]:
    """The customer's minutes of the last `hours`, oldest first (for charts): one entry a
    minute, None for a minute with no snapshot, so a chart shows the gap where it was."""
    now = (now or timezone.now()).replace(second=0, microsecond=0)
    since = now - timedelta(hours=hours)
    by_minute = {
        s.taken_at: s
        for s in FleetSnapshot.objects.filter(
            customer=customer, taken_at__gt=since, taken_at__lte=now
        )
    }
    if not by_minute:
        return []
    minute = timedelta(minutes=1)
    first = min(by_minute)  # from the customer's first minute
    last = max(max(by_minute), now - minute)  # this minute's may not be taken yet
    return [by_minute.get(first + minute * i) for i in range((last - first) // minute + 1)]


# The dashboard's chart ranges: each reads the resolution kept that long (retention).
@dataclass(frozen=True)
class ChartRange:
    key: str
    words: str  # "24 h", for "24 h ago"
    resolution: str | None  # None: minute snapshots
    periods: int


CHART_RANGES = {
    r.key: r
    for r in (
        ChartRange("24h", "24 h", None, 24),
        ChartRange("30d", "30 days", RollupResolution.HOUR, 30 * 24),
        ChartRange("1y", "12 months", RollupResolution.DAY, 365),
    )
}


def rollup_series(
    customer: Customer | int, resolution: str, *, periods: int, now: datetime | None = None
) -> list[FleetRollup | None]:
    """The customer's finished hours (or days) of the last `periods`, oldest first: one
    entry a period from its first, None for a period with no rollup (a gap in the chart)."""
    step = timedelta(days=1) if resolution == RollupResolution.DAY else timedelta(hours=1)
    now = now or timezone.now()
    end = now.replace(minute=0, second=0, microsecond=0)
    if resolution == RollupResolution.DAY:
        end = end.replace(hour=0)
    by_start = {
        r.period_start: r
        for r in FleetRollup.objects.filter(
            customer=customer,
            resolution=resolution,
            period_start__gte=end - step * periods,
            period_start__lt=end,
        )
    }
    if not by_start:
        return []
    first = min(by_start)
    return [by_start.get(first + step * i) for i in range((end - first) // step)]
