"""Advice on the fleet's size: from the role numbers now, and from the sizing table."""

import math
from dataclasses import dataclass
from datetime import datetime

from django.template.defaultfilters import pluralize
from django.utils import timezone

from fleet import policy
from fleet.models import Customer, FleetSnapshot
from fleet.selectors.licenses import license_current
from fleet.selectors.metrics import RoleNumbers, role_numbers
from fleet.selectors.outcomes import FleetQuality, Trend, quality_trends


@dataclass(frozen=True)
class Advice:
    verdict: str  # add_agents, check_agents, add_work, sized_right or no_agents
    headline: str
    reasons: list[str]


def _agents(n: int, role: str) -> str:
    return f"{n} {role}{pluralize(n)}"


def _waited_long(r: RoleNumbers) -> bool:
    """Jobs of the role wait, the oldest past the threshold (a moment's queue is no
    shortage: advice that flips every minute helps nobody)."""
    return bool(r.queued) and (r.oldest_wait_seconds or 0) >= policy.ADVICE_WAIT.total_seconds()


def _short_handed(r: RoleNumbers, cap: int) -> bool:
    """Jobs of the role wait and nobody can take them: no agent of the role can work,
    or the wait is long and every working agent runs its cap."""
    if not r.queued:
        return False
    return not r.can_work or (_waited_long(r) and r.running >= r.can_work * cap)


def _working(r: RoleNumbers, cap: int) -> str:
    """How the role's working agents stand, in words."""
    if not r.can_work:
        return f"no {r.role} can work"
    tasks = f"{cap} task{pluralize(cap)}"
    if r.running < r.can_work * cap:
        return f"{_agents(r.can_work, r.role)} can work and have room for more"
    if r.can_work == 1:
        return f"the one {r.role} that can work runs its {tasks}"
    return f"all {r.can_work} {r.role}s that can work run their {tasks}"


def fleet_advice(
    customer: Customer | int,
    *,
    now: datetime | None = None,
    roles: list[RoleNumbers] | None = None,
    quality: FleetQuality | None = None,
) -> Advice:
    """What to do about the fleet's size now, role by role, from the same numbers the
    dashboard and Plan show (role_numbers): add agents of a role whose jobs wait with
    every agent busy (how many, and whether the license has the seats); check the agents
    when jobs wait long though they have room; add work when more than a quarter of the
    online agents' time is idle and nothing waits. Never two at once. Five queries (and
    the role's acceptance, when adding agents: more agents of a role whose work is
    accepted less and less multiply the rework)."""
    now = now or timezone.now()
    roles = roles if roles is not None else role_numbers(customer, now=now)
    license = license_current(customer)
    cap = license.max_concurrent_tasks_per_agent if license else 1
    if not any(r.agents for r in roles) and not any(r.queued for r in roles):
        return Advice("no_agents", "Activate your first agent: mint a token on Tokens.", [])

    short = [r for r in roles if _short_handed(r, cap)]
    if short:
        reasons, wanted = [], []
        for r in short:
            add = max(math.ceil(r.queued / cap), 1)  # enough to start every waiting job now
            wanted.append(_agents(add, r.role))
            waited = f", the oldest for {_duration(r.oldest_wait_seconds or 0)}"
            waits = pluralize(r.queued, "s,")
            reason = f"{r.queued} {r.role} job{pluralize(r.queued)} wait{waits}{waited}; "
            reason += f"{_working(r, cap)}."
            if r.offline:
                reason += f" {_agents(r.offline, r.role)} {pluralize(r.offline, 'is,are')} "
                reason += "offline: bringing them back is the cheapest help."
            reasons.append(reason)
        needed = sum(max(math.ceil(r.queued / cap), 1) for r in short)
        free = license.max_agents - sum(r.agents for r in roles) if license else 0
        if needed <= free:
            reasons.append(f"The license has {free} free seat{pluralize(free)}.")
        else:
            reasons.append(
                f"The license has {max(free, 0)} free seat{pluralize(max(free, 0))}: raise "
                f"max_agents to {sum(r.agents for r in roles) + needed} first."
            )
        # Only the roles' trends are read here (one statement), unless the caller has them.
        by_role = quality.by_role if quality else quality_trends(customer, "role", now=now)
        reasons += [w for r in short if (w := _acceptance_falling(r.role, by_role))]
        return Advice("add_agents", f"Add {' and '.join(wanted)}.", reasons)

    stuck = [r for r in roles if _waited_long(r)]  # long waits, yet room to take them
    if stuck:
        return Advice(
            "check_agents",
            "Check your agents: jobs wait though agents have room.",
            [
                f"{r.queued} {r.role} job{pluralize(r.queued)} wait{pluralize(r.queued, 's,')}, "
                f"the oldest for {_duration(r.oldest_wait_seconds or 0)}; "
                f"{_working(r, cap)}. More agents would not help: see why these do not "
                "claim (`agentina status` on their hosts, their findings)."
                for r in stuck
            ],
        )
    queued = sum(r.queued for r in roles)
    idle = _idle_ratio(customer, roles)
    if not queued and idle is not None and idle > policy.IDLE_TARGET:
        return Advice(
            "add_work",
            "Add work, not agents.",
            [
                f"{idle:.0%} of online agent time was idle over the last hour (above "
                f"{policy.IDLE_TARGET:.0%}) and no job waits: the fleet can take more work "
                "as it is."
            ],
        )
    why = (
        f"{queued} job{pluralize(queued)} wait{pluralize(queued, 's,')}, none for long: the "
        "agents keep up."
        if queued
        else "No job waits, and the agents are busy most of the time."
    )
    return Advice("sized_right", "The fleet is sized for its work.", [why])


def _acceptance_falling(role: str, by_role: dict[str, Trend], days: int = 7) -> str:
    """ "Acceptance 62% for coders this week, down from 81% — review before adding agents"
    when the role's acceptance fell by more than ADVICE_ACCEPTANCE_DROP (relative) over
    enough judged jobs on both sides; "" otherwise."""
    trend = by_role.get(role)
    if trend is None or min(trend.now.judged, trend.before.judged) < policy.WAVE_MIN_JUDGED_JOBS:
        return ""
    change = trend.acceptance_change
    if change is None or change >= -policy.ADVICE_ACCEPTANCE_DROP:
        return ""
    week = "this week" if days == 7 else f"over the last {days} days"
    return (
        f"Acceptance {trend.now.acceptance:.0%} for {role}s {week}, down from "
        f"{trend.before.acceptance:.0%} — review their work before adding agents."
    )


def _idle_ratio(customer: Customer | int, roles: list[RoleNumbers]) -> float | None:
    """Over the last hour (the newest snapshot's), or now when there is none yet."""
    hour = (
        FleetSnapshot.objects.filter(customer=customer, idle_ratio__isnull=False)
        .order_by("-taken_at")
        .values_list("idle_ratio", flat=True)
        .first()
    )
    if hour is not None:
        return hour
    online = sum(r.online for r in roles)
    return 1 - sum(r.busy for r in roles) / online if online else None


def _duration(seconds: float) -> str:
    return f"{seconds / 60:.0f} min" if seconds >= 90 else f"{seconds:.0f} s"


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
    current: int  # agents that can work now (online, not upgrading): offline ones do no work
    offline: int = 0

    @property
    def verdict(self) -> str:
        if self.current < self.recommended_min:
            return f"add {self.recommended_min - self.current}"
        if self.current > self.recommended_max:
            return f"{self.current - self.recommended_max} more than needed"
        return "ok"


def fleet_sizing(
    customer: Customer | int, repo_loc: int, *, roles: list[RoleNumbers] | None = None
) -> list[SizingRow]:
    """The sizing table's row for a repository of `repo_loc` lines against the agents
    that can work now (role_numbers, as the dashboard and advice count them)."""
    table = next(roles for limit, roles in SIZING if limit is None or repo_loc < limit)
    numbers = {r.role: r for r in (roles if roles is not None else role_numbers(customer))}
    return [
        SizingRow(role, lo, hi, numbers[role].can_work, numbers[role].offline)
        for role, (lo, hi) in table.items()
    ]
