"""Advice on the fleet's size: from recent snapshots, and from the sizing table."""

from dataclasses import dataclass
from datetime import datetime

from django.db.models import Count
from django.utils import timezone

from fleet import policy
from fleet.choices import JobStatus
from fleet.models import Agent, Customer, FleetSnapshot, Job
from fleet.selectors.licenses import license_current


@dataclass(frozen=True)
class Advice:
    verdict: str  # add_agent, add_work, sized_right or no_data
    headline: str
    reasons: list[str]


def fleet_advice(customer: Customer | int, *, now: datetime | None = None) -> Advice:
    """When to add the next agent and when not to, from the last 15 minutes of snapshots:
    add one when the queue holds steady, idle is under the target and every online agent
    runs its license's maximum of concurrent tasks (so jobs wait); add work instead when
    idle is over the target. Three queries."""
    now = now or timezone.now()
    recent = list(
        FleetSnapshot.objects.filter(
            customer=customer, taken_at__gt=now - policy.ADVICE_WINDOW
        ).order_by("taken_at")
    )
    if not recent:
        return Advice("no_data", "Advice appears once beat has taken a few snapshots.", [])
    last = recent[-1]
    target = policy.IDLE_TARGET
    if last.idle_ratio is not None and last.idle_ratio > target:
        return Advice(
            "add_work",
            "Add work, not agents.",
            [
                f"{last.idle_ratio:.0%} of online agent time was idle over the last hour "
                f"(above {target:.0%}): the fleet can take more jobs as it is."
            ],
        )
    license = license_current(customer)
    cap = license.max_concurrent_tasks_per_agent if license else 1
    steady = (
        len(recent) >= 5
        and all(s.queue_depth > 0 for s in recent)
        and (last.queue_depth >= 0.8 * recent[0].queue_depth)
    )
    online = last.agents_online or 0  # never empty in the newest minute (beat took it)
    at_cap = online > 0 and last.jobs_running >= online * cap
    if steady and at_cap:
        waiting = (
            Job.objects.filter(customer=customer, status=JobStatus.QUEUED)
            .values("role")
            .annotate(n=Count("pk"))
            .order_by("-n")
            .first()
        )
        role = waiting["role"] if waiting else "coder"
        wait = f", p95 wait {last.wait_p95_seconds:.0f} s" if last.wait_p95_seconds else ""
        return Advice(
            "add_agent",
            f"Add an agent: a {role}.",
            [
                f"{last.queue_depth} jobs have waited for {len(recent)} minutes{wait}.",
                f"Every online agent runs its {cap} concurrent task(s) and idle is "
                f"{(last.idle_ratio or 0):.0%}.",
                f"Most waiting jobs are for {role}s.",
            ],
        )
    return Advice("sized_right", "The fleet is sized for its work.", [])


# Repo size (lines of code) → agents per role, (min, max), from the product's sizing table.
SIZING = [
    (50_000, {"coder": (1, 2), "reviewer": (1, 1), "tester": (1, 1), "indexer": (1, 1)}),
    (500_000, {"coder": (3, 5), "reviewer": (1, 2), "tester": (1, 2), "indexer": (1, 1)}),
    (None, {"coder": (5, 15), "reviewer": (2, 3), "tester": (2, 4), "indexer": (1, 1)}),
]


@dataclass(frozen=True)
class SizingRow:
    role: str
    recommended_min: int
    recommended_max: int
    current: int

    @property
    def verdict(self) -> str:
        if self.current < self.recommended_min:
            return f"add {self.recommended_min - self.current}"
        if self.current > self.recommended_max:
            return f"{self.current - self.recommended_max} more than needed"
        return "ok"


def fleet_sizing(customer: Customer | int, repo_loc: int) -> list[SizingRow]:
    """The sizing table's row for a repository of `repo_loc` lines against the fleet."""
    table = next(roles for limit, roles in SIZING if limit is None or repo_loc < limit)
    current = dict(
        Agent.objects.for_customer(customer)
        .holding_seat()
        .values("role")
        .annotate(n=Count("pk"))
        .order_by()
        .values_list("role", "n")
    )
    return [SizingRow(role, lo, hi, current.get(role, 0)) for role, (lo, hi) in table.items()]
