"""Upgrade waves: one canary soaked (24 h), then batches of the rest (25%, each watched
1 h), each step behind gates on the upgraded agents' health and their real work. A failed
gate, a rollback or a silent agent pauses the wave and opens a finding; nobody else is
offered the version until an operator resumes.

rollout_advance is called by beat every minute; it row-locks the rollout, so two beats or
workers never advance one rollout twice."""

import math
from collections import Counter
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import Count, Q
from django.utils import timezone

from fleet.agent_cache import agent_facts_changed
from fleet.choices import (
    ACTIVE_ROLLOUT_STATES,
    AnomalyKind,
    AnomalySeverity,
    JobStatus,
    MemberRole,
    RolloutState,
    RolloutTargetState,
    UpgradeOutcome,
)
from fleet.errors import NotAllowed, RolloutRefused, RolloutStateError
from fleet.models import Agent, Customer, Job, Membership, Release, Rollout, RolloutTarget
from fleet.services.anomalies import anomaly_open
from fleet.services.audit import SYSTEM, Actor, audit_record
from fleet.versions import SemVer

ALL_AT_ONCE_REASON = (
    "Upgrading the whole fleet at once is refused: one bad release would stop every agent "
    "together. A wave upgrades one canary and soaks it, then batches of at most a part of "
    "the fleet, each watched before the next."
)
BASELINE_WINDOW = timedelta(hours=24)
MIN_BASELINE_JOBS = 3  # fewer jobs than this before the upgrade: too little to compare


def _require_operator(actor: Actor, customer_id: int) -> None:
    """Owners of the customer and staff steer waves; everyone else is refused."""
    user = actor.user
    if user is None:  # the Control Plane itself (beat)
        return
    if user.is_staff:
        return
    if Membership.objects.filter(
        user=user, customer_id=customer_id, role=MemberRole.OWNER
    ).exists():
        return
    raise NotAllowed("Only the customer's owners and Agentina staff steer upgrade waves.")


# --- planning ---------------------------------------------------------------------------


def _groups(agent: Agent) -> list[tuple[str, Any]]:
    return [("role", agent.role), ("zone", agent.host.zone), ("host", agent.host_id)]


def plan_batches(members: list[Agent], fleet: list[Agent], fraction: Decimal) -> list[list[Agent]]:
    """Split `members` into batches of ceil(fraction * members), never putting every agent
    of a role, a zone or a host (counted over the whole active fleet) in one batch, so the
    rest keep serving while it upgrades. Members are taken spread across zones and hosts."""
    if not members:
        return []
    size = max(1, math.ceil(Decimal(len(members)) * fraction))
    fleet_counts = Counter(key for agent in fleet for key in _groups(agent))
    # Spread: round-robin over zones, then hosts, so each batch mixes them.
    by_place: dict[tuple[str, int], list[Agent]] = {}
    for agent in sorted(members, key=lambda a: (a.host.zone, a.host_id, a.role, a.pk)):
        by_place.setdefault((agent.host.zone, agent.host_id), []).append(agent)
    pool: list[Agent] = []
    while any(by_place.values()):
        for queue in by_place.values():
            if queue:
                pool.append(queue.pop(0))
    batches: list[list[Agent]] = []
    while pool:
        batch: list[Agent] = []
        taken: Counter[tuple[str, Any]] = Counter()
        for agent in list(pool):
            if len(batch) == size:
                break
            keys = _groups(agent)
            if any(fleet_counts[k] >= 2 and taken[k] + 1 >= fleet_counts[k] for k in keys):
                continue
            batch.append(agent)
            taken.update(keys)
            pool.remove(agent)
        if not batch:  # only possible for groups of one, which nothing can spread
            batch.append(pool.pop(0))
        batches.append(batch)
    return batches


def _in_scope(agents: Any, scope: dict[str, list[Any]]) -> Any:
    if scope.get("role"):
        agents = agents.filter(role__in=scope["role"])
    if scope.get("zone"):
        agents = agents.filter(host__zone__in=scope["zone"])
    if scope.get("host"):
        agents = agents.filter(host_id__in=scope["host"])
    return agents


@dataclass(frozen=True)
class WavePlan:
    canary: Agent
    batches: list[list[Agent]]
    excluded: list[Agent]  # behind the release but offline now


def rollout_plan(
    *,
    customer: Customer,
    release: Release,
    actor: Actor = SYSTEM,
    scope: dict[str, list[Any]] | None = None,
    canary: Agent | None = None,
    batch_fraction: Decimal = Decimal("0.25"),
    all_at_once: bool = False,
) -> WavePlan:
    """Check a wave may start and plan it, writing nothing (forms call it to explain a
    refusal before anything is saved)."""
    _require_operator(actor, customer.pk)
    if all_at_once or batch_fraction >= 1:
        raise RolloutRefused(ALL_AT_ONCE_REASON, field="batch_fraction")
    if batch_fraction <= 0:
        raise RolloutRefused("batch_fraction must be above 0.", field="batch_fraction")
    if release.yanked:
        raise RolloutRefused(f"Release {release.version} is yanked.", field="release")
    if Rollout.objects.filter(customer=customer, state__in=ACTIVE_ROLLOUT_STATES).exists():
        raise RolloutRefused(
            f"{customer} already has a rollout under way: finish, abort or wait for it."
        )
    target = release.version
    active = Agent.objects.for_customer(customer).holding_seat()
    fleet = list(active.select_related("host"))
    in_scope = list(_in_scope(active, scope or {}).select_related("host"))
    ahead = [a for a in in_scope if a.version > target]
    if ahead:
        names = ", ".join(f"{a.name} ({a.version})" for a in ahead[:5])
        raise RolloutRefused(
            f"{len(ahead)} agent(s) already run a newer version than {target}: {names}. "
            "A wave never downgrades.",
            field="release",
        )
    behind = [a for a in in_scope if a.version < target]
    heard_since = timezone.now() - settings.AGENT_ONLINE_WINDOW
    online = [a for a in behind if a.last_heartbeat_at and a.last_heartbeat_at >= heard_since]
    if not online:
        raise RolloutRefused(f"No online agent is behind {target}: nothing to upgrade.")
    if canary is not None and canary not in online:
        raise RolloutRefused(
            f"{canary.name} cannot be the canary: it is not an online agent behind {target}.",
            field="canary_agent",
        )
    role_sizes = Counter(a.role for a in fleet)
    canary = canary or max(
        online, key=lambda a: (role_sizes[a.role], a.last_heartbeat_at or heard_since, -a.pk)
    )
    return WavePlan(
        canary=canary,
        batches=plan_batches([a for a in online if a != canary], fleet, batch_fraction),
        excluded=[a for a in behind if a not in online],
    )


@transaction.atomic
def rollout_start(
    *,
    customer: Customer,
    release: Release,
    actor: Actor = SYSTEM,
    reason: str = "",
    scope: dict[str, list[Any]] | None = None,
    canary: Agent | None = None,
    batch_fraction: Decimal = Decimal("0.25"),
    canary_soak: timedelta = timedelta(hours=24),
    batch_watch: timedelta = timedelta(hours=1),
    throughput_drop_tolerance: Decimal = Decimal("0.20"),
    online_ratio_floor: Decimal = Decimal("0.95"),
    all_at_once: bool = False,
) -> Rollout:
    """Freeze the wave's membership (active agents in scope behind the release; agents
    offline now are excluded, not failed), plan its batches and offer the canary."""
    plan = rollout_plan(
        customer=customer,
        release=release,
        actor=actor,
        scope=scope,
        canary=canary,
        batch_fraction=batch_fraction,
        all_at_once=all_at_once,
    )
    now = timezone.now()
    try:
        with transaction.atomic():
            rollout = Rollout.objects.create(
                customer=customer,
                release=release,
                state=RolloutState.CANARY,
                canary_soak=canary_soak,
                batch_fraction=batch_fraction,
                batch_watch=batch_watch,
                throughput_drop_tolerance=throughput_drop_tolerance,
                online_ratio_floor=online_ratio_floor,
                canary_agent=plan.canary,
                scope=scope or {},
                current_batch=0,
                batches_total=len(plan.batches),
                step_started_at=now,
                started_at=now,
                created_by=actor.user,
            )
    except IntegrityError as exc:  # another start won the race for the one active rollout
        raise RolloutRefused(
            f"{customer} already has a rollout under way: finish, abort or wait for it."
        ) from exc
    RolloutTarget.objects.bulk_create(
        [
            RolloutTarget(
                rollout=rollout,
                agent=plan.canary,
                batch=0,
                from_version=plan.canary.version,
                state=RolloutTargetState.OFFERED,
                offered_at=now,
            )
        ]
        + [
            RolloutTarget(rollout=rollout, agent=agent, batch=number, from_version=agent.version)
            for number, batch in enumerate(plan.batches, start=1)
            for agent in batch
        ]
        + [
            RolloutTarget(
                rollout=rollout,
                agent=agent,
                from_version=agent.version,
                state=RolloutTargetState.EXCLUDED,
                detail="Offline when the wave began.",
            )
            for agent in plan.excluded
        ]
    )
    agent_facts_changed(customer_id=customer.pk)  # the canary's heartbeat carries the order
    audit_record(
        actor=actor,
        action="rollout.start",
        target=rollout,
        customer=customer.pk,
        changes={
            "release": [None, str(release.version)],
            "canary": [None, plan.canary.name],
            "batches": [None, [len(b) for b in plan.batches]],
            "excluded": [None, len(plan.excluded)],
            "reason": [None, reason],
        },
    )
    return rollout


# --- the engine -------------------------------------------------------------------------


@dataclass(frozen=True)
class Gate:
    passed: bool
    failed: str  # which gate, empty when passed
    numbers: dict[str, Any]


def _gate(rollout: Rollout, now: datetime) -> Gate:
    """The checks before the next step: every agent upgraded so far is online on the new
    version; the step's agents do their work as well as before (throughput and success
    rate within the tolerance of their own baseline); the fleet's online ratio holds."""
    upgraded = list(
        RolloutTarget.objects.filter(
            rollout=rollout, state=RolloutTargetState.SUCCEEDED
        ).select_related("agent")
    )
    heard_since = now - settings.AGENT_ONLINE_WINDOW
    target = rollout.release.version
    unhealthy = [
        t.agent.name
        for t in upgraded
        if t.agent.version != target
        or not t.agent.last_heartbeat_at
        or t.agent.last_heartbeat_at < heard_since
    ]
    numbers: dict[str, Any] = {"upgraded": len(upgraded), "at": now.isoformat()}
    if unhealthy:
        numbers["not_heartbeating_new_version"] = unhealthy
        return Gate(False, "upgraded agents online on the new version", numbers)

    step = [t for t in upgraded if t.batch == rollout.current_batch]
    work = _work_before_and_after(step, now)
    numbers.update(work)
    tolerance = float(rollout.throughput_drop_tolerance)
    # Judge by work only when there was work to do: jobs waiting, or finished since.
    work_available = (
        work["after_jobs"] > 0
        or Job.objects.filter(customer=rollout.customer_id, status=JobStatus.QUEUED).exists()
    )
    numbers["work_available"] = work_available
    if work_available and work["before_jobs"] >= MIN_BASELINE_JOBS and work["before_rate"] > 0:
        drop = 1 - work["after_rate"] / work["before_rate"]
        numbers["throughput_drop"] = round(drop, 3)
        if drop > tolerance:
            return Gate(False, "job throughput", numbers)
        if work["after_jobs"] and work["before_success"] - work["after_success"] > tolerance:
            return Gate(False, "job success rate", numbers)
    active = (
        Agent.objects.for_customer(rollout.customer_id)
        .holding_seat()
        .aggregate(
            total=Count("pk"), online=Count("pk", filter=Q(last_heartbeat_at__gte=heard_since))
        )
    )
    ratio = active["online"] / active["total"] if active["total"] else 1.0
    numbers["online_ratio"] = round(ratio, 3)
    if ratio < float(rollout.online_ratio_floor):
        return Gate(False, "fleet online ratio", numbers)
    return Gate(True, "", numbers)


def _work_before_and_after(upgraded: list[RolloutTarget], now: datetime) -> dict[str, Any]:
    """Jobs finished per hour by the upgraded agents since each upgraded, against the same
    agents in the day before each was told to upgrade; and their success rates."""
    before = Q()
    after = Q()
    before_hours = after_hours = 0.0
    for t in upgraded:
        offered = t.offered_at or now
        reported = t.reported_at or now
        before |= Q(
            agent_id=t.agent_id, finished_at__gte=offered - BASELINE_WINDOW, finished_at__lt=offered
        )
        after |= Q(agent_id=t.agent_id, finished_at__gte=reported, finished_at__lte=now)
        before_hours += BASELINE_WINDOW.total_seconds() / 3600
        after_hours += max((now - reported).total_seconds(), 60) / 3600
    if not upgraded:
        return {
            "before_jobs": 0,
            "after_jobs": 0,
            "before_rate": 0.0,
            "after_rate": 0.0,
            "before_success": 1.0,
            "after_success": 1.0,
        }
    finished = [JobStatus.SUCCEEDED, JobStatus.FAILED]
    counts = Job.objects.filter(status__in=finished).aggregate(
        b_ok=Count("pk", filter=before & Q(status=JobStatus.SUCCEEDED)),
        b_all=Count("pk", filter=before),
        a_ok=Count("pk", filter=after & Q(status=JobStatus.SUCCEEDED)),
        a_all=Count("pk", filter=after),
    )
    return {
        "before_jobs": counts["b_all"],
        "after_jobs": counts["a_all"],
        "before_rate": round(counts["b_ok"] / before_hours, 3),
        "after_rate": round(counts["a_ok"] / after_hours, 3),
        "before_success": round(counts["b_ok"] / counts["b_all"], 3) if counts["b_all"] else 1.0,
        "after_success": round(counts["a_ok"] / counts["a_all"], 3) if counts["a_all"] else 1.0,
    }


def _pause(rollout: Rollout, reason: str, numbers: dict[str, Any], actor: Actor = SYSTEM) -> None:
    rollout.paused_from = rollout.state
    rollout.state = RolloutState.PAUSED
    rollout.paused_reason = reason
    rollout.last_gate = numbers
    rollout.save(update_fields=["paused_from", "state", "paused_reason", "last_gate"])
    agent_facts_changed(customer_id=rollout.customer_id)
    anomaly_open(
        customer=rollout.customer_id,
        kind=AnomalyKind.ROLLOUT_GATE,
        fingerprint=f"rollout:{rollout.pk}",
        severity=AnomalySeverity.CRITICAL,
        message=f"Upgrade wave to {rollout.release.version} paused: {reason}",
    )
    audit_record(
        actor=actor,
        action="rollout.pause",
        target=rollout,
        customer=rollout.customer_id,
        changes={
            "reason": [None, reason],
            **{k: [None, v] for k, v in numbers.items() if k != "at"},
        },
    )


def _offer(rollout: Rollout, batch: int, now: datetime) -> int:
    agent_facts_changed(customer_id=rollout.customer_id)
    return RolloutTarget.objects.filter(
        rollout=rollout, batch=batch, state=RolloutTargetState.PENDING
    ).update(state=RolloutTargetState.OFFERED, offered_at=now)


def rollout_advance(rollout_id: int, *, now: datetime | None = None) -> str:
    """Move one rollout at most one step. Returns what happened, for the log."""
    now = now or timezone.now()
    with transaction.atomic():
        rollout = (
            Rollout.objects.select_for_update(skip_locked=True)
            .select_related("release")
            .filter(pk=rollout_id, state__in=[RolloutState.CANARY, RolloutState.ROLLING])
            .first()
        )
        if rollout is None:
            return "not active (or another worker holds it)"
        step = RolloutTarget.objects.filter(rollout=rollout, batch=rollout.current_batch)
        # Agents told to upgrade and silent past the deadline count as failed.
        late = step.filter(
            state=RolloutTargetState.OFFERED, offered_at__lt=now - rollout.agent_deadline
        )
        late_names = list(late.values_list("agent__name", flat=True))
        if late_names:
            late.update(
                state=RolloutTargetState.FAILED,
                reported_at=now,
                detail="No upgrade report within the deadline.",
            )
            _pause(
                rollout,
                f"{', '.join(late_names)} did not report within {rollout.agent_deadline}.",
                {"silent": late_names},
            )
            return "paused: silent agents"
        states = Counter(step.values_list("state", flat=True))
        if states[RolloutTargetState.OFFERED] or states[RolloutTargetState.PENDING]:
            return "waiting for upgrade reports"
        if rollout.watch_started_at is None:
            rollout.watch_started_at = now
            rollout.save(update_fields=["watch_started_at"])
            return "step upgraded; watching"
        watch = rollout.canary_soak if rollout.current_batch == 0 else rollout.batch_watch
        if not rollout.skip_soak and now < rollout.watch_started_at + watch:
            return "watching"
        gate = _gate(rollout, now)
        rollout.last_gate = gate.numbers
        if not gate.passed:
            _pause(rollout, f"the {gate.failed} gate failed.", gate.numbers)
            return f"paused: {gate.failed}"
        return _next_step(rollout, now)


def _next_step(rollout: Rollout, now: datetime) -> str:
    old = rollout.current_batch
    if old >= rollout.batches_total:
        rollout.state = RolloutState.COMPLETED
        rollout.finished_at = now
        rollout.save(update_fields=["state", "finished_at", "last_gate"])
        audit_record(
            actor=SYSTEM,
            action="rollout.complete",
            target=rollout,
            customer=rollout.customer_id,
            changes={"gate": [None, rollout.last_gate]},
        )
        return "completed"
    rollout.current_batch = old + 1
    rollout.state = RolloutState.ROLLING
    rollout.step_started_at = now
    rollout.watch_started_at = None
    rollout.skip_soak = False
    rollout.save(
        update_fields=[
            "current_batch",
            "state",
            "step_started_at",
            "watch_started_at",
            "skip_soak",
            "last_gate",
        ]
    )
    offered = _offer(rollout, rollout.current_batch, now)
    audit_record(
        actor=SYSTEM,
        action="rollout.batch",
        target=rollout,
        customer=rollout.customer_id,
        changes={
            "batch": [old, rollout.current_batch],
            "agents_offered": [None, offered],
            "gate": [None, rollout.last_gate],
        },
    )
    return f"batch {rollout.current_batch} of {rollout.batches_total} offered"


def rollouts_advance_all(*, now: datetime | None = None) -> dict[int, str]:
    """Beat's entry point: advance every active rollout one step at most."""
    ids = list(
        Rollout.objects.filter(state__in=[RolloutState.CANARY, RolloutState.ROLLING]).values_list(
            "pk", flat=True
        )
    )
    return {pk: rollout_advance(pk, now=now) for pk in ids}


# --- what agents see and report ---------------------------------------------------------


def rollout_record_result(*, agent: Agent, outcome: str, to_version: SemVer, detail: str) -> None:
    """An agent's upgrade report moves its target on; a rollback pauses the wave."""
    target = (
        RolloutTarget.objects.select_for_update()
        .select_related("rollout__release")
        .filter(
            agent=agent, state=RolloutTargetState.OFFERED, rollout__state__in=ACTIVE_ROLLOUT_STATES
        )
        .first()
    )
    if target is None or target.rollout.release.version != to_version:
        return
    now = timezone.now()
    ok = outcome == UpgradeOutcome.SUCCEEDED
    target.state = RolloutTargetState.SUCCEEDED if ok else RolloutTargetState.ROLLED_BACK
    target.reported_at = now
    target.detail = detail or outcome
    target.save(update_fields=["state", "reported_at", "detail"])
    if not ok:
        rollout = target.rollout  # locked with the target (FOR UPDATE covers the join)
        if rollout.state != RolloutState.PAUSED:
            _pause(
                rollout,
                f"{agent.name} reported {outcome} and rolled back to "
                f"{agent.version}. No other agent is offered {to_version}.",
                {"agent": agent.name, "outcome": outcome, "detail": detail},
            )


def rollout_targets_drop(*, agent_id: int) -> int:
    """A decommissioned agent leaves every wave still waiting for it (in the decommission's
    transaction): it is offered nothing more, and no wave waits on its report."""
    return RolloutTarget.objects.filter(
        agent_id=agent_id, state__in=[RolloutTargetState.PENDING, RolloutTargetState.OFFERED]
    ).update(state=RolloutTargetState.EXCLUDED, detail="The agent was decommissioned.")


# --- operators --------------------------------------------------------------------------


def _locked(rollout: Rollout) -> Rollout:
    return Rollout.objects.select_for_update().select_related("release").get(pk=rollout.pk)


@transaction.atomic
def rollout_pause(*, rollout: Rollout, actor: Actor, reason: str) -> Rollout:
    _require_operator(actor, rollout.customer_id)
    rollout = _locked(rollout)
    if rollout.state not in (RolloutState.CANARY, RolloutState.ROLLING):
        raise RolloutStateError(f"A {rollout.state} rollout cannot be paused.")
    _pause(rollout, f"paused by {actor.label}: {reason}", {}, actor)
    return rollout


@transaction.atomic
def rollout_resume(*, rollout: Rollout, actor: Actor, reason: str) -> Rollout:
    _require_operator(actor, rollout.customer_id)
    rollout = _locked(rollout)
    if rollout.state != RolloutState.PAUSED:
        raise RolloutStateError(f"A {rollout.state} rollout cannot be resumed.")
    rollout.state = rollout.paused_from or RolloutState.CANARY
    rollout.paused_reason = ""
    rollout.save(update_fields=["state", "paused_reason"])
    agent_facts_changed(customer_id=rollout.customer_id)
    RolloutTarget.objects.filter(
        rollout=rollout, batch=rollout.current_batch, state=RolloutTargetState.OFFERED
    ).update(offered_at=timezone.now())  # a fresh deadline for agents told before the pause
    audit_record(
        actor=actor,
        action="rollout.resume",
        target=rollout,
        customer=rollout.customer_id,
        changes={"reason": [None, reason]},
    )
    return rollout


@transaction.atomic
def rollout_abort(*, rollout: Rollout, actor: Actor, reason: str) -> Rollout:
    _require_operator(actor, rollout.customer_id)
    rollout = _locked(rollout)
    if rollout.state not in ACTIVE_ROLLOUT_STATES:
        raise RolloutStateError(f"A {rollout.state} rollout cannot be aborted.")
    rollout.state = RolloutState.ABORTED
    rollout.finished_at = timezone.now()
    rollout.save(update_fields=["state", "finished_at"])
    RolloutTarget.objects.filter(
        rollout=rollout, state__in=[RolloutTargetState.PENDING, RolloutTargetState.OFFERED]
    ).update(state=RolloutTargetState.EXCLUDED, detail="The wave was aborted.")
    agent_facts_changed(customer_id=rollout.customer_id)
    audit_record(
        actor=actor,
        action="rollout.abort",
        target=rollout,
        customer=rollout.customer_id,
        changes={"reason": [None, reason]},
    )
    return rollout


@transaction.atomic
def rollout_skip_soak(*, rollout: Rollout, actor: Actor, reason: str) -> Rollout:
    """End the current soak or watch now; the gates still run before the next step."""
    _require_operator(actor, rollout.customer_id)
    rollout = _locked(rollout)
    if rollout.state not in (RolloutState.CANARY, RolloutState.ROLLING):
        raise RolloutStateError(f"A {rollout.state} rollout has no soak to skip.")
    rollout.skip_soak = True
    rollout.save(update_fields=["skip_soak"])
    audit_record(
        actor=actor,
        action="rollout.skip_soak",
        target=rollout,
        customer=rollout.customer_id,
        changes={"reason": [None, reason]},
    )
    return rollout


@transaction.atomic
def rollout_retry_failed(*, rollout: Rollout, actor: Actor, reason: str) -> int:
    """Offer the version again to agents of the current step that failed or rolled back."""
    _require_operator(actor, rollout.customer_id)
    rollout = _locked(rollout)
    if rollout.state not in ACTIVE_ROLLOUT_STATES:
        raise RolloutStateError(f"A {rollout.state} rollout has nothing to retry.")
    retried = RolloutTarget.objects.filter(
        rollout=rollout,
        batch=rollout.current_batch,
        state__in=[RolloutTargetState.FAILED, RolloutTargetState.ROLLED_BACK],
    ).update(
        state=RolloutTargetState.OFFERED, offered_at=timezone.now(), reported_at=None, detail=""
    )
    rollout.watch_started_at = None
    rollout.save(update_fields=["watch_started_at"])
    agent_facts_changed(customer_id=rollout.customer_id)
    audit_record(
        actor=actor,
        action="rollout.retry_failed",
        target=rollout,
        customer=rollout.customer_id,
        changes={"agents": [None, retried], "reason": [None, reason]},
    )
    return retried
