"""Is the agents' work accepted, and what does it cost: acceptance rates (accepted ÷
judged) and costs, per role, agent or version, read from the jobs' own rows.

Definitions (the README says the same): a job is *judged* when some source reported a
verdict on it, and its verdict is the latest of them; *acceptance* is accepted ÷ judged;
*cost per accepted job* is what the jobs cost ÷ how many of them were accepted (the work
thrown away counts: it is what an accepted job really costs)."""

from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from django.db.models import Count, DecimalField, Q, QuerySet, Sum, Value
from django.db.models.functions import Coalesce
from django.utils import timezone

from fleet.choices import OutcomeVerdict
from fleet.models import Customer, Job
from fleet.models.jobs import FINISHED_JOB_STATUSES

ZERO = Decimal("0")
_judged = ~Q(verdict="")
_accepted = Q(verdict=OutcomeVerdict.ACCEPTED)


@dataclass(frozen=True)
class Work:
    """A set of finished jobs: how many, what they cost, how they were judged."""

    jobs: int = 0
    tokens: int = 0
    cost_usd: Decimal = ZERO
    judged: int = 0
    accepted: int = 0

    @property
    def acceptance(self) -> float | None:
        return self.accepted / self.judged if self.judged else None

    @property
    def cost_per_accepted(self) -> Decimal | None:
        return (
            (self.cost_usd / self.accepted).quantize(Decimal("0.000001")) if self.accepted else None
        )

    @property
    def tokens_per_job(self) -> float | None:
        return self.tokens / self.jobs if self.jobs else None

    def as_json(self) -> dict[str, Any]:
        return {
            "jobs": self.jobs,
            "tokens": self.tokens,
            "cost_usd": str(self.cost_usd.quantize(Decimal("0.000001"))),  # as stored
            "judged": self.judged,
            "accepted": self.accepted,
        }


def _sum(expression: Any, **extra: Any) -> Coalesce:
    return Coalesce(Sum(expression, **extra), Value(0))


WORK_AGGREGATES: dict[str, Any] = {
    "jobs": Count("pk"),
    "tokens": _sum("input_tokens") + _sum("output_tokens"),
    "cost_usd": Coalesce(
        Sum("cost_usd"), Value(ZERO), output_field=DecimalField(max_digits=20, decimal_places=6)
    ),
    "judged": Count("pk", filter=_judged),
    "accepted": Count("pk", filter=_accepted),
}


def _work(row: dict[str, Any]) -> Work:
    return Work(
        jobs=row["jobs"],
        tokens=int(row["tokens"] or 0),
        # To the micro-dollar, as stored (SQLite's sums come back with float noise digits).
        cost_usd=Decimal(row["cost_usd"] or 0).quantize(Decimal("0.000001")),
        judged=row["judged"],
        accepted=row["accepted"],
    )


def work_of(jobs: QuerySet[Job]) -> Work:
    """The jobs' totals, in one statement."""
    return _work(jobs.aggregate(**WORK_AGGREGATES))


def work_by(jobs: QuerySet[Job], key: str) -> dict[Any, Work]:
    """The jobs' totals per `key` (role, agent_id, agent_version...), in one statement."""
    rows = jobs.values(key).annotate(**WORK_AGGREGATES).order_by(key)
    return {row[key]: _work(row) for row in rows}


def jobs_finished(customer: Customer | int, since: datetime, until: datetime) -> QuerySet[Job]:
    """A customer's jobs finished in [since, until): three tight ranges of
    job_customer_finished (customer, status, finished_at), one a finished status."""
    return Job.objects.filter(
        customer=customer,
        status__in=FINISHED_JOB_STATUSES,
        finished_at__gte=since,
        finished_at__lt=until,
    ).order_by()


def jobs_judged(customer: Customer | int, since: datetime, until: datetime) -> QuerySet[Job]:
    """A customer's jobs whose latest verdict came in [since, until) (the job_judged index)."""
    return Job.objects.filter(
        customer=customer, verdict_at__gte=since, verdict_at__lt=until
    ).order_by()


def costliest_jobs(
    customer: Customer | int, since: datetime, until: datetime, limit: int = 10
) -> list[Job]:
    """The jobs that cost most among those finished in the window, costliest first."""
    return list(
        jobs_finished(customer, since, until)
        .filter(cost_usd__gt=0)
        .select_related("agent")
        .order_by("-cost_usd", "-id")[:limit]
    )


@dataclass
class UsageSnapshot:
    """A customer's last hour for its minute snapshot: spend of the jobs finished in it and
    verdicts received in it, in total and per role and per version."""

    total: Work
    by_role: dict[str, dict[str, Any]]
    by_version: dict[str, dict[str, Any]]


def _add(a: Work, b: Work) -> Work:
    return Work(
        a.jobs + b.jobs,
        a.tokens + b.tokens,
        a.cost_usd + b.cost_usd,
        a.judged + b.judged,
        a.accepted + b.accepted,
    )


def usage_snapshots(since: datetime, until: datetime) -> dict[int, UsageSnapshot]:
    """Every customer's UsageSnapshot of (since, until], in two grouped statements (jobs
    finished in it, over job_finished_at; verdicts received in it, over job_judged_at)."""
    parts: dict[tuple[int, str, str], Work] = {}
    finished = (
        Job.objects.filter(finished_at__gt=since, finished_at__lte=until)
        .values("customer_id", "role", "agent_version")
        .annotate(
            jobs=Count("pk"),
            tokens=_sum("input_tokens") + _sum("output_tokens"),
            cost_usd=WORK_AGGREGATES["cost_usd"],
        )
        .order_by()
    )
    for row in finished:
        key = (row["customer_id"], row["role"], row["agent_version"])
        parts[key] = Work(row["jobs"], int(row["tokens"]), Decimal(row["cost_usd"]))
    judged = (
        Job.objects.filter(verdict_at__gt=since, verdict_at__lte=until)
        .values("customer_id", "role", "agent_version")
        .annotate(judged=Count("pk"), accepted=Count("pk", filter=_accepted))
        .order_by()
    )
    for row in judged:
        key = (row["customer_id"], row["role"], row["agent_version"])
        parts[key] = _add(
            parts.get(key, Work()), Work(judged=row["judged"], accepted=row["accepted"])
        )
    snapshots: dict[int, UsageSnapshot] = {}
    for (customer_id, role, version), work in parts.items():
        snap = snapshots.setdefault(customer_id, UsageSnapshot(Work(), {}, {}))
        snap.total = _add(snap.total, work)
        for group, name in ((snap.by_role, role), (snap.by_version, version or "unknown")):
            group[name] = _add(Work(**_from_json(group.get(name))), work).as_json()
    return snapshots


def _from_json(row: dict[str, Any] | None) -> dict[str, Any]:
    if not row:
        return {}
    return {**row, "cost_usd": Decimal(row["cost_usd"])}


def _aggregates(within: Q, prefix: str) -> dict[str, Any]:
    """WORK_AGGREGATES over the rows `within`, named `prefix` + name."""
    return {
        f"{prefix}jobs": Count("pk", filter=within),
        f"{prefix}tokens": _sum("input_tokens", filter=within)
        + _sum("output_tokens", filter=within),
        f"{prefix}cost_usd": Coalesce(
            Sum("cost_usd", filter=within),
            Value(ZERO),
            output_field=DecimalField(max_digits=20, decimal_places=6),
        ),
        f"{prefix}judged": Count("pk", filter=within & _judged),
        f"{prefix}accepted": Count("pk", filter=within & _accepted),
    }


def _prefixed(row: dict[str, Any], prefix: str) -> Work:
    return _work({k.removeprefix(prefix): v for k, v in row.items() if k.startswith(prefix)})


@dataclass(frozen=True)
class Trend:
    """A group's work in a window and in the window before it."""

    now: Work
    before: Work

    @property
    def acceptance_change(self) -> float | None:
        """Relative: -0.25 is a quarter lower than before."""
        if self.now.acceptance is None or not self.before.acceptance:
            return None
        return self.now.acceptance / self.before.acceptance - 1


@dataclass(frozen=True)
class FleetQuality:
    """Is the work accepted and what does it cost, over the last `days` (jobs finished in
    the window, judged so far) against the `days` before; and the last hour's spend."""

    days: int
    total: Trend
    by_role: dict[str, Trend]
    by_version: dict[str, Trend]
    by_agent: dict[int, Trend]
    cost_usd_last_hour: Decimal
    costliest: list[Job]

    def headline(self) -> dict[str, Any]:
        """The fleet metrics API's fields."""
        return {
            "acceptance": self.total.now.acceptance,
            "acceptance_previous": self.total.before.acceptance,
            "jobs_judged": self.total.now.judged,
            "quality_window_days": self.days,
            "cost_usd_last_hour": self.cost_usd_last_hour,
            "cost_per_accepted_job": self.total.now.cost_per_accepted,
        }


def quality_trends(
    customer: Customer | int, key: str, *, now: datetime, days: int = 7
) -> dict[Any, Trend]:
    """The customer's work by `key` (role, agent_version, agent_id) in the last `days` and
    the `days` before, in one statement."""
    window = timedelta(days=days)
    this, before = Q(finished_at__gte=now - window), Q(finished_at__lt=now - window)
    rows = (
        jobs_finished(customer, now - 2 * window, now)
        .values(key)
        .annotate(**_aggregates(this, "n_"), **_aggregates(before, "b_"))
        .order_by(key)
    )
    return {r[key]: Trend(_prefixed(r, "n_"), _prefixed(r, "b_")) for r in rows}


def fleet_quality(
    customer: Customer | int, *, now: datetime | None = None, days: int = 7, by_agent: bool = True
) -> FleetQuality:
    """Five statements (four without `by_agent`): the two windows at once by role, by
    version and by agent, the last hour's cost, and the costliest jobs of the last 24
    hours. `costliest` and `cost_usd_last_hour` are of the jobs finished then."""
    now = now or timezone.now()

    def trends(key: str) -> dict[Any, Trend]:
        return quality_trends(customer, key, now=now, days=days)

    by_role = trends("role")
    total = Trend(
        _sum_works([t.now for t in by_role.values()]),
        _sum_works([t.before for t in by_role.values()]),
    )
    last_hour = jobs_finished(customer, now - timedelta(hours=1), now).aggregate(
        cost=WORK_AGGREGATES["cost_usd"]
    )["cost"]
    return FleetQuality(
        days=days,
        total=total,
        by_role=by_role,
        by_version={k or "unknown": v for k, v in trends("agent_version").items()},
        by_agent={k: v for k, v in trends("agent_id").items() if k is not None} if by_agent else {},
        cost_usd_last_hour=Decimal(last_hour or 0),
        costliest=costliest_jobs(customer, now - timedelta(hours=24), now),
    )


def agent_work(agent_id: int, *, now: datetime | None = None, days: int = 7) -> Work:
    """An agent's jobs finished in the last `days`: cost, tokens, how they were judged."""
    now = now or timezone.now()
    return work_of(
        Job.objects.filter(agent_id=agent_id, finished_at__gte=now - timedelta(days=days))
    )


def fleet_quality_headline(
    customer: Customer | int, *, now: datetime | None = None, days: int = 7
) -> dict[str, Any]:
    """FleetQuality.headline() in one statement (the fleet metrics API's fields)."""
    now = now or timezone.now()
    window = timedelta(days=days)
    row = jobs_finished(customer, now - 2 * window, now).aggregate(
        **_aggregates(Q(finished_at__gte=now - window), "n_"),
        **_aggregates(Q(finished_at__lt=now - window), "b_"),
        **_aggregates(Q(finished_at__gte=now - timedelta(hours=1)), "h_"),
    )
    total = Trend(_prefixed(row, "n_"), _prefixed(row, "b_"))
    return FleetQuality(
        days, total, {}, {}, {}, _prefixed(row, "h_").cost_usd, costliest=[]
    ).headline()


def _sum_works(works: list[Work]) -> Work:
    total = Work()
    for w in works:
        total = _add(total, w)
    return total
