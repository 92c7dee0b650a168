"""The engine: rollout_advance moves one wave at most one step (beat calls it every
minute). It row-locks the rollout, so two beats or workers never advance one wave twice;
each step waits for its agents' reports, soaks or is watched, then passes its gates."""

from collections import Counter
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

from django.db import transaction
from django.db.models import Count, Q
from django.utils import timezone

from fleet import policy
from fleet.agent_cache import agent_facts_changed
from fleet.choices import (
    ADVANCING_ROLLOUT_STATES,
    AlertEventType,
    AnomalyKind,
    AnomalySeverity,
    AuditAction,
    JobStatus,
    RolloutState,
    RolloutTargetState,
)
from fleet.models import Customer, Job, Rollout, RolloutTarget
from fleet.models.agents import SEAT_HOLDING
from fleet.selectors.agents import agent_follows_release, update_pin_rules
from fleet.selectors.outcomes import Work, work_of
from fleet.selectors.rollouts import rollout_final_counts
from fleet.services.alerts import alert_emit
from fleet.services.anomalies import anomaly_open
from fleet.services.audit import SYSTEM, Actor, audit_record


@dataclass(frozen=True)
class GateCheck:
    """One check before the next step, in words a customer reads: what was measured
    against which threshold, and which agents are behind a failure."""

    name: str
    passed: bool
    text: str


@dataclass(frozen=True)
class Gate:
    checks: list[GateCheck]
    numbers: dict[str, Any]  # the raw measures, for the audit log

    @property
    def passed(self) -> bool:
        return all(c.passed for c in self.checks)

    @property
    def failed(self) -> GateCheck | None:
        return next((c for c in self.checks if not c.passed), None)

    def as_json(self, at: datetime) -> dict[str, Any]:
        """What the wave keeps as its latest gate (Rollout.last_gate)."""
        return {"at": at.isoformat(), "checks": [c.__dict__ for c in self.checks]}


def _names(names: list[str], limit: int = 5) -> str:
    shown = ", ".join(sorted(names)[:limit])
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")


def _pct(value: float) -> str:
    return f"{value:.0%}"


def _gate(rollout: Rollout, now: datetime) -> Gate:
    """The checks before the next step, over the wave's own agents (an agent the wave
    excluded, or decommissioned since, never counts against it): every agent upgraded so
    far is online on the new version; the step's agents do their work as well as before
    (throughput and success rate within the tolerance of their own baseline); and the
    wave's agents are online at or above the wave's floor."""
    targets = list(
        RolloutTarget.objects.filter(rollout=rollout, agent__status__in=SEAT_HOLDING)
        .exclude(state=RolloutTargetState.EXCLUDED)
        .select_related("agent")
    )
    version = rollout.release.version
    upgraded = [t for t in targets if t.state == RolloutTargetState.SUCCEEDED]
    unhealthy = [
        t.agent.name for t in upgraded if t.agent.version != version or not t.agent.heard_since(now)
    ]
    numbers: dict[str, Any] = {"upgraded": len(upgraded), "not_healthy": unhealthy}
    checks = [
        GateCheck(
            "upgraded agents healthy",
            not unhealthy,
            f"{len(unhealthy)} of {len(upgraded)} upgraded agents are not online on "
            f"{version}: {_names(unhealthy)}."
            if unhealthy
            else f"All {len(upgraded)} upgraded agents are online on {version}.",
        )
    ]

    step = [t for t in upgraded if t.batch == rollout.current_batch]
    work = _work_before_and_after(step, now)
    numbers.update(work)
    tolerance = float(rollout.throughput_drop_tolerance)
    # Judge by work only when there was work to do: jobs waiting, or finished since.
    work_available = (
        work["after_jobs"] > 0
        or Job.objects.filter(customer=rollout.customer_id, status=JobStatus.QUEUED).exists()
    )
    if not work_available:
        checks.append(GateCheck("throughput", True, "No work to judge by: no job waited."))
    elif work["before_jobs"] < policy.WAVE_MIN_BASELINE_JOBS or not work["before_rate"]:
        checks.append(
            GateCheck(
                "throughput",
                True,
                f"Too little work before the upgrade to compare ({work['before_jobs']} jobs; "
                f"{policy.WAVE_MIN_BASELINE_JOBS} needed).",
            )
        )
    elif work["before_rate"] * work["after_hours"] < policy.WAVE_MIN_BASELINE_JOBS:
        # At the rate before, fewer jobs were due since the upgrade than it takes to
        # tell a slowdown from chance (a short watch): no verdict either way.
        checks.append(
            GateCheck(
                "throughput",
                True,
                f"Too soon to compare: at {work['before_rate']:.3g} jobs per hour before, fewer "
                f"than {policy.WAVE_MIN_BASELINE_JOBS} were due since the upgrade.",
            )
        )
    else:
        drop = 1 - work["after_rate"] / work["before_rate"]
        numbers["throughput_drop"] = round(drop, 3)
        checks.append(
            GateCheck(
                "throughput",
                drop <= tolerance,
                f"Jobs per hour of this step's agents: {work['after_rate']:.3g} after, "
                f"{work['before_rate']:.3g} before ({-drop:+.0%}; at most "
                f"-{_pct(tolerance)} allowed).",
            )
        )
        if work["after_jobs"]:
            fell = work["before_success"] - work["after_success"]
            checks.append(
                GateCheck(
                    "success rate",
                    fell <= tolerance,
                    f"Jobs succeeding: {_pct(work['after_success'])} after, "
                    f"{_pct(work['before_success'])} before (at most {_pct(tolerance)} "
                    "points lower allowed).",
                )
            )

    before, after = _judged_before_and_after(upgraded, str(version), now)
    numbers.update(judged_before=before.as_json(), judged_after=after.as_json())
    checks += _quality_checks(rollout, str(version), before, after)

    offline = [t.agent.name for t in targets if not t.agent.heard_since(now)]
    ratio = 1 - len(offline) / len(targets) if targets else 1.0
    floor = float(rollout.online_ratio_floor)
    numbers.update(online_ratio=round(ratio, 3), offline=offline)
    checks.append(
        GateCheck(
            "online ratio",
            ratio >= floor,
            f"{_pct(ratio)} of the wave's {len(targets)} agents are online "
            f"({'at or above' if ratio >= floor else 'below'} the floor of {_pct(floor)})"
            + (f": {len(offline)} offline — {_names(offline)}." if offline else "."),
        )
    )
    if rollout.gates_waived_batch == rollout.current_batch:
        checks = [
            c if c.passed else GateCheck(c.name, True, f"Waived by an owner: {c.text}")
            for c in checks
        ]
    return Gate(checks, numbers)


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
            agent_id=t.agent_id,
            finished_at__gte=offered - policy.WAVE_BASELINE_WINDOW,
            finished_at__lt=offered,
        )
        after |= Q(agent_id=t.agent_id, finished_at__gte=reported, finished_at__lte=now)
        before_hours += policy.WAVE_BASELINE_WINDOW.total_seconds() / 3600
        after_hours += max((now - reported).total_seconds(), 60) / 3600
    if not upgraded:
        return {
            "before_jobs": 0,
            "after_jobs": 0,
            "before_rate": 0.0,
            "after_rate": 0.0,
            "after_hours": 0.0,
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
        "after_hours": round(after_hours, 3),
        "before_success": round(counts["b_ok"] / counts["b_all"], 3) if counts["b_all"] else 1.0,
        "after_success": round(counts["a_ok"] / counts["a_all"], 3) if counts["a_all"] else 1.0,
    }


def _judged_before_and_after(
    upgraded: list[RolloutTarget], version: str, now: datetime
) -> tuple[Work, Work]:
    """The judged jobs of the agents upgraded so far: on the new version, and on their
    earlier versions (their own baseline) within WAVE_QUALITY_WINDOW before the first of
    them was told to upgrade. Two statements over the job_agent_status index."""
    if not upgraded:
        return Work(), Work()
    first_offered = min(t.offered_at or now for t in upgraded)
    judged = Job.objects.filter(
        agent_id__in=[t.agent_id for t in upgraded],
        finished_at__gte=first_offered - policy.WAVE_QUALITY_WINDOW,
        finished_at__lte=now,
    ).exclude(verdict="")
    return (
        work_of(judged.exclude(agent_version=version)),
        work_of(judged.filter(agent_version=version)),
    )


def _usd(value: Decimal) -> str:
    return f"${value:,.2f}" if value >= Decimal("0.1") else f"${value:.4f}"


def _quality_checks(rollout: Rollout, version: str, before: Work, after: Work) -> list[GateCheck]:
    """Acceptance and cost per accepted job of the upgraded agents' judged work, against
    their own work before the upgrade, once enough jobs were judged on both sides."""
    need = policy.WAVE_MIN_JUDGED_JOBS
    if before.judged < need or after.judged < need:
        words = (
            f"Not enough judged jobs to compare: {after.judged} on {version}, {before.judged} "
            f"before ({need} needed on each side)."
        )
        return [
            GateCheck("acceptance", True, words),
            GateCheck("cost per accepted job", True, words),
        ]
    drop_allowed = float(rollout.acceptance_drop_tolerance)
    growth_allowed = float(rollout.cost_increase_tolerance)
    acceptance_after, acceptance_before = after.acceptance or 0.0, before.acceptance or 0.0
    if not before.accepted:
        acceptance = GateCheck(
            "acceptance",
            True,
            f"Nothing was accepted before the upgrade ({before.judged} judged): no acceptance "
            "to fall from.",
        )
    else:
        drop = 1 - acceptance_after / acceptance_before
        acceptance = GateCheck(
            "acceptance",
            drop <= drop_allowed,
            f"Acceptance of the upgraded agents' work: {_pct(acceptance_after)} on {version} "
            f"({after.accepted} of {after.judged} judged), {_pct(acceptance_before)} before "
            f"({before.accepted} of {before.judged}): {-drop:+.0%}; at most "
            f"-{_pct(drop_allowed)} allowed.",
        )
    per_before, per_after = before.cost_per_accepted, after.cost_per_accepted
    if not per_before:
        cost = GateCheck(
            "cost per accepted job",
            True,
            "Nothing to compare the cost with: no accepted job with a cost before the upgrade.",
        )
    elif per_after is None:
        cost = GateCheck(
            "cost per accepted job",
            False,
            f"Cost per accepted job: nothing accepted on {version} ({after.judged} judged, "
            f"{_usd(after.cost_usd)} spent); {_usd(per_before)} before.",
        )
    else:
        ratio = float(per_after / per_before)
        cost = GateCheck(
            "cost per accepted job",
            ratio <= 1 + growth_allowed,
            f"Cost per accepted job: {_usd(per_after)} on {version}, {_usd(per_before)} before "
            f"({ratio:.1f} times as much; at most {1 + growth_allowed:.1f} times allowed).",
        )
    return [acceptance, cost]


def rollout_alert_data(rollout: Rollout) -> dict[str, Any]:
    """What every rollout event says about its wave; `incident` ties a pause to the
    completion that closes it."""
    return {
        "rollout_id": rollout.pk,
        "release": str(rollout.release.version),
        "state": rollout.state,
        "batch": rollout.current_batch,
        "batches_total": rollout.batches_total,
        "incident": f"rollout:{rollout.pk}",
        "portal_path": f"/portal/upgrades/{rollout.pk}/",
    }


def pause_wave(
    rollout: Rollout,
    reason: str,
    numbers: dict[str, Any],
    actor: Actor,
    *,
    gate: Gate | None = None,
) -> None:
    """Pause the wave, open its finding, alert and audit. `gate` when a gate failed: its
    checks go with the alert (a pause for another cause carries none, not the checks of
    an earlier step)."""
    rollout.paused_from = rollout.state
    rollout.state = RolloutState.PAUSED
    rollout.paused_reason = reason
    rollout.save(update_fields=["paused_from", "state", "paused_reason", "last_gate"])
    agent_facts_changed(customer_id=rollout.customer_id)
    anomaly_open(
        actor=actor,
        customer=rollout.customer_id,
        kind=AnomalyKind.ROLLOUT_GATE,
        fingerprint=f"rollout:{rollout.pk}",
        severity=AnomalySeverity.CRITICAL,
        message=f"Upgrade wave to {rollout.release.version} paused: {reason}",
    )
    alert_emit(
        customer=rollout.customer_id,
        type=AlertEventType.ROLLOUT_PAUSED,
        dedup_key=f"rollout.paused:{rollout.pk}:{timezone.now().isoformat()}",
        data={
            **rollout_alert_data(rollout),
            "reason": reason,
            "gate": [c.__dict__ for c in gate.checks] if gate else [],
        },
    )
    audit_record(
        actor=actor,
        action=AuditAction.ROLLOUT_PAUSE,
        target=rollout,
        customer=rollout.customer_id,
        changes={
            "reason": [None, reason],
            **{k: [None, v] for k, v in numbers.items() if k != "at"},
        },
    )


def offer_batch(rollout: Rollout, batch: int, now: datetime) -> int:
    agent_facts_changed(customer_id=rollout.customer_id)
    step = RolloutTarget.objects.filter(
        rollout=rollout, batch=batch, state=RolloutTargetState.PENDING
    )
    # An agent pinned elsewhere since the wave was planned is left out: a pin is never passed.
    rules = update_pin_rules(
        Customer.objects.filter(pk=rollout.customer_id).values_list("update_pins", flat=True)[0]
    )
    away = [
        target.pk
        for target in step.select_related("agent")
        if not agent_follows_release(target.agent, rollout.release, rules)
    ]
    if away:
        RolloutTarget.objects.filter(pk__in=away).update(
            state=RolloutTargetState.EXCLUDED,
            detail="Pinned to another release after the wave was planned.",
        )
    return step.update(state=RolloutTargetState.OFFERED, offered_at=now)


def rollout_advance(rollout_id: int, *, now: datetime | None = None) -> str:
    """Move one rollout at most one step. Returns what happened, for the log."""
    now = now or timezone.now()
    with transaction.atomic():
        rollout = (
            Rollout.objects.select_for_update(skip_locked=True, of=("self",))
            .select_related("release", "customer")
            .filter(pk=rollout_id, state__in=ADVANCING_ROLLOUT_STATES)
            .first()
        )
        if rollout is None:
            return "not active (or another worker holds it)"
        step = RolloutTarget.objects.filter(rollout=rollout, batch=rollout.current_batch)
        open_now = rollout.customer.in_maintenance_window(now)
        if (
            not step.filter(state=RolloutTargetState.OFFERED).exists()
            and step.filter(state=RolloutTargetState.PENDING).exists()
        ):
            # A step planned outside the maintenance window (the canary of a wave started
            # then) is offered when the window opens.
            if not open_now:
                return "waiting for the maintenance window"
            offer_batch(rollout, rollout.current_batch, now)
            rollout.step_started_at = now
            rollout.save(update_fields=["step_started_at"])
            return "step offered in the maintenance window"
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
            pause_wave(
                rollout,
                f"{', '.join(late_names)} did not report within {rollout.agent_deadline}.",
                {"silent": late_names},
                SYSTEM,
            )
            return "paused: silent agents"
        states = Counter(step.values_list("state", flat=True))
        if states[RolloutTargetState.OFFERED] or states[RolloutTargetState.PENDING]:
            return "waiting for upgrade reports"
        if rollout.watch_started_at is None:  # the step's reports are all in: watch it
            rollout.watch_started_at = now
            rollout.save(update_fields=["watch_started_at"])
        watch = rollout.canary_soak if rollout.current_batch == 0 else rollout.batch_watch
        if not rollout.skip_soak and now < rollout.watch_started_at + watch:
            return "watching"  # (a watch of zero gates at once, in this same run)
        gate = _gate(rollout, now)
        rollout.last_gate = gate.as_json(now)
        if gate.failed:
            pause_wave(rollout, gate.failed.text, gate.numbers, SYSTEM, gate=gate)
            return f"paused: {gate.failed.name}"
        if rollout.current_batch < rollout.batches_total and not open_now:
            return "gate passed; waiting for the maintenance window"
        return _next_step(rollout, now)


def rollout_counts_keep(rollout: Rollout) -> None:
    """A wave that ended keeps its target counts (its targets no longer change)."""
    for name, n in rollout_final_counts(rollout).items():
        setattr(rollout, name, n)
    rollout.save(update_fields=["final_targets", "final_done"])


def _next_step(rollout: Rollout, now: datetime) -> str:
    old = rollout.current_batch
    if old >= rollout.batches_total:
        rollout.state = RolloutState.COMPLETED
        rollout.finished_at = now
        rollout.save(update_fields=["state", "finished_at", "last_gate"])
        rollout_counts_keep(rollout)
        audit_record(
            actor=SYSTEM,
            action=AuditAction.ROLLOUT_COMPLETE,
            target=rollout,
            customer=rollout.customer_id,
            changes={"gate": [None, rollout.last_gate]},
        )
        alert_emit(
            customer=rollout.customer_id,
            type=AlertEventType.ROLLOUT_COMPLETED,
            dedup_key=f"rollout.completed:{rollout.pk}",
            data=rollout_alert_data(rollout),
        )
        return "completed"
    rollout.current_batch = old + 1
    rollout.state = RolloutState.ROLLING
    rollout.step_started_at = now
    rollout.watch_started_at = None
    rollout.skip_soak = False
    rollout.gates_waived_batch = None  # a waiver holds for the step it was given in
    rollout.save(
        update_fields=[
            "current_batch",
            "state",
            "step_started_at",
            "watch_started_at",
            "skip_soak",
            "gates_waived_batch",
            "last_gate",
        ]
    )
    offered = offer_batch(rollout, rollout.current_batch, now)
    audit_record(
        actor=SYSTEM,
        action=AuditAction.ROLLOUT_BATCH,
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
        Rollout.objects.filter(state__in=ADVANCING_ROLLOUT_STATES).values_list("pk", flat=True)
    )
    return {pk: rollout_advance(pk, now=now) for pk in ids}
