"""Agents after activation: heartbeats, upgrade reports, secret rotation, decommission.
(Activation is fleet/services/activation.py.)"""

import random
from contextlib import nullcontext
from datetime import datetime
from typing import Any

from django.conf import settings
from django.db import DatabaseError, transaction
from django.db.models import BigIntegerField, Case, DecimalField, F, JSONField, Q, Value, When
from django.utils import timezone

from fleet import policy
from fleet.agent_cache import agent_facts_changed
from fleet.choices import (
    AgentStatus,
    AlertEventType,
    AnomalyKind,
    AnomalySeverity,
    AuditAction,
    JobStatus,
    UpgradeOutcome,
)
from fleet.errors import (
    AgentGone,
    database_fault_is_transient,
)
from fleet.models import Agent, Job
from fleet.models.agents import (
    COME_BACK,
    DECOMMISSION,
    FINISH_UPGRADE,
    START_UPGRADE,
    agent_status_after,
)
from fleet.secrets import (
    SecretKind,
    secret_mint,
)
from fleet.selectors import agent_latest_release
from fleet.services.activity import ActivityReport
from fleet.services.alerts import alert_emit
from fleet.services.anomalies import (
    agent_offline_fingerprint,
    anomalies_resolve,
    anomaly_open,
    anomaly_resolve_fingerprint,
)
from fleet.services.audit import Actor, audit_record
from fleet.services.jobs import jobs_requeue
from fleet.services.presence import activity_columns, presence_buffer
from fleet.services.rollouts import rollout_record_result, rollout_targets_drop
from fleet.services.usage import usage_stored, usage_totals
from fleet.versions import SemVer

UPGRADE_ACTIONS = {
    UpgradeOutcome.SUCCEEDED: AuditAction.AGENT_UPGRADE_SUCCEEDED,
    UpgradeOutcome.SMOKE_CHECK_FAILED: AuditAction.AGENT_UPGRADE_SMOKE_CHECK_FAILED,
    UpgradeOutcome.START_FAILED: AuditAction.AGENT_UPGRADE_START_FAILED,
    UpgradeOutcome.VERIFY_FAILED: AuditAction.AGENT_UPGRADE_VERIFY_FAILED,
}


def agent_secret_replace(*, agent: Agent) -> str:
    """A new secret for an agent that holds a seat; the old one stops working everywhere."""
    minted = secret_mint(SecretKind.AGENT_SECRET)
    if (
        not Agent.objects.filter(pk=agent.pk)
        .holding_seat()
        .update(secret_prefix=minted.display_prefix, secret_digest=minted.digest)
    ):
        raise AgentGone()  # decommissioned meanwhile: a retired agent gets no new secret
    agent_facts_changed(agent_ids=[agent.pk])  # the old secret stops working everywhere
    agent.secret_prefix, agent.secret_digest = minted.display_prefix, minted.digest
    return minted.plaintext


@transaction.atomic
def agent_rotate_secret(*, agent: Agent, ip_address: str | None = None) -> str:
    """A new secret for the agent; the old one stops working at once."""
    secret = agent_secret_replace(agent=agent)
    audit_record(
        actor=Actor.for_agent(agent, ip_address),
        action=AuditAction.AGENT_ROTATE_SECRET,
        target=agent,
        customer=agent.customer_id,
    )
    return secret


def agent_record_heartbeat(
    *,
    agent: Agent,
    version: SemVer,
    running_job_ids: list[int],
    load: float | None = None,
    sent_at: datetime | None = None,
    ip_address: str | None = None,
    upgrading: bool = False,
    activity: ActivityReport | None = None,
    usage: dict[int, list[dict[str, Any]]] | None = None,
) -> datetime:
    """Record that the agent is alive, by the server's clock.

    A steady heartbeat (same version and status, leases not yet due, no new clock skew)
    goes to the presence buffer and touches no database. Otherwise it is one UPDATE:
    job leases are extended once half a lease has passed, and state changes (back
    online, a new version, told to upgrade, clock skew appearing) write their extra rows
    at once and make every web process re-read the agent. Through a database fault, a
    beat that only had leases to renew is buffered all the same.

    A reported activity rides whatever the beat does: the buffer (the flush writes the
    newest, within PRESENCE_FLUSH_SECONDS) or its UPDATE; it never adds a write. Usage of
    running jobs so far is written with the lease renewal (the same UPDATE of the jobs),
    so between renewals it costs nothing: the next renewal carries the newest figures."""
    now = timezone.now()
    offset = _clock_offset(sent_at, now) if sent_at else None
    renew = bool(running_job_ids) and (
        agent.leases_renewed_at is None or now - agent.leases_renewed_at >= settings.JOB_LEASE / 2
    )
    came_back = agent.status == AgentStatus.OFFLINE
    skew_appeared = _is_skewed(offset) and not _is_skewed(agent.clock_offset_seconds)
    changed = (
        came_back
        or version != agent.version
        or (upgrading and agent.status != AgentStatus.UPGRADING)
        or skew_appeared
    )
    steady = not changed and not renew
    if steady and presence_buffer(
        agent_id=agent.pk, at=now, load=load, offset=offset, activity=activity
    ):
        return now
    updates: dict = {
        "last_heartbeat_at": now,
        # Told to upgrade: it drains (claims get nothing) until it reports the result.
        "status": agent_status_after(START_UPGRADE if upgrading else COME_BACK),
        "clock_offset_seconds": offset,
        "load": load,
    }
    if version != agent.version:
        updates["version"] = version
    if renew:
        updates["leases_renewed_at"] = now
    if activity is not None:
        updates |= activity_columns(activity, now)
    try:
        # One transaction when the heartbeat writes more than its own row, so that a
        # decommission either goes first (and nothing is written) or waits for all of it.
        with transaction.atomic() if changed or renew else nullcontext():
            # The agent may have been decommissioned since this process authenticated it
            # (its cached copy is up to AGENT_CACHE_POLL_SECONDS old): nothing is written.
            if not Agent.objects.filter(pk=agent.pk).holding_seat().update(**updates):
                raise AgentGone()
            if renew:
                Job.objects.filter(
                    agent_id=agent.pk, status=JobStatus.RUNNING, pk__in=running_job_ids
                ).update(
                    lease_expires_at=now + settings.JOB_LEASE,
                    **usage_so_far_columns(usage or {}, running_job_ids),
                )
            if changed or renew:  # every process re-reads it (leases_renewed_at included)
                agent_facts_changed(agent_ids=[agent.pk])
            if came_back or version != agent.version:
                _record_state_change(agent, version, came_back, ip_address)
            if skew_appeared:
                anomaly_open(
                    actor=Actor.for_agent(agent, ip_address),
                    customer=agent.customer_id,
                    kind=AnomalyKind.CLOCK_SKEW,
                    fingerprint=f"clock_skew:{agent.pk}",
                    severity=AnomalySeverity.INFO,
                    agent_id=agent.pk,
                    message=f"{agent.name}'s clock is {offset:+d} s off the server's. The "
                    "Control Plane uses its own time; fix NTP on the host so logs line up.",
                )
    except DatabaseError as exc:
        # A beat that only had leases to renew is still a beat: buffered, it keeps the
        # agent online through a database fault, and the next beat renews (half a lease
        # is left for that). A change of state must be written, so it answers 503.
        if changed or not database_fault_is_transient(exc):
            raise
        if not presence_buffer(
            agent_id=agent.pk, at=now, load=load, offset=offset, activity=activity
        ):
            raise
    agent.last_heartbeat_at = now
    return now


def usage_so_far_columns(
    usage: dict[int, list[dict[str, Any]]], running_job_ids: list[int]
) -> dict[str, Any]:
    """What a renewal's UPDATE of the running jobs writes of their usage so far: each
    job's list as reported (it replaces the last one) and its sums, as CASE expressions so
    the jobs stay one statement. A job not reported on keeps what it had."""
    reported = {job_id: items for job_id, items in usage.items() if job_id in running_job_ids}
    if not reported:
        return {}
    totals = {job_id: usage_totals(items) for job_id, items in reported.items()}

    def per_job(field: str, values: dict[int, Any], output: Any) -> Case:
        return Case(
            *[When(pk=job_id, then=Value(v, output_field=output)) for job_id, v in values.items()],
            default=F(field),
            output_field=output,
        )

    return {
        "usage": per_job(
            "usage", {j: usage_stored(items) for j, items in reported.items()}, JSONField()
        ),
        "input_tokens": per_job(
            "input_tokens", {j: t.input_tokens for j, t in totals.items()}, BigIntegerField()
        ),
        "output_tokens": per_job(
            "output_tokens", {j: t.output_tokens for j, t in totals.items()}, BigIntegerField()
        ),
        "cost_usd": per_job(
            "cost_usd",
            {j: t.cost_usd for j, t in totals.items()},
            DecimalField(max_digits=14, decimal_places=6),
        ),
    }


def _clock_offset(sent_at: datetime, now: datetime) -> int:
    """The agent's clock minus ours, in seconds, within what the column holds (±68 years:
    a clock that far off is simply very far off)."""
    return max(-CLOCK_OFFSET_LIMIT, min(CLOCK_OFFSET_LIMIT, round((sent_at - now).total_seconds())))


CLOCK_OFFSET_LIMIT = 2**31 - 1


def _is_skewed(offset: int | None) -> bool:
    limit = policy.AGENT_CLOCK_SKEW_TOLERANCE.total_seconds()
    return offset is not None and abs(offset) > limit


def _record_state_change(
    agent: Agent, version: SemVer, came_back: bool, ip_address: str | None
) -> None:
    changes: dict[str, list[str]] = {}
    if came_back:
        changes["status"] = [str(AgentStatus.OFFLINE), str(AgentStatus.ONLINE)]
        anomaly_resolve_fingerprint(
            customer=agent.customer_id,
            fingerprint=agent_offline_fingerprint(agent.pk),
            note="The agent's heartbeat arrived again.",
            actor=Actor.for_agent(agent, ip_address),
        )
        _alert_back_online(agent)
    if version != agent.version:
        changes["version"] = [str(agent.version), str(version)]
    audit_record(
        actor=Actor.for_agent(agent, ip_address),
        action=AuditAction.AGENT_HEARTBEAT_STATE,
        target=agent,
        customer=agent.customer_id,
        changes=changes,
    )


def _alert_back_online(agent: Agent) -> None:
    """agents.back_online; when it was the last one offline, it closes the incident (a
    PagerDuty channel resolves it)."""
    still = (
        Agent.objects.filter(customer_id=agent.customer_id, status=AgentStatus.OFFLINE)
        .exclude(pk=agent.pk)
        .count()
    )
    alert_emit(
        customer=agent.customer_id,
        type=AlertEventType.AGENTS_BACK_ONLINE,
        dedup_key=f"agents.back_online:{agent.pk}:{agent.offline_since or agent.last_heartbeat_at}",
        data={
            "agent": agent.name,
            "agent_id": agent.pk,
            "offline_since": agent.offline_since.isoformat() if agent.offline_since else None,
            "still_offline": still,
            **({"incident": "agents_offline"} if still == 0 else {}),
            "portal_path": f"/portal/agents/{agent.pk}/",
        },
    )


@transaction.atomic
def agent_record_upgrade_result(
    *,
    agent: Agent,
    outcome: str,
    from_version: SemVer,
    to_version: SemVer,
    detail: str = "",
    rolled_back_to: SemVer | None = None,
    rollback_level: str | None = None,
    ip_address: str | None = None,
) -> None:
    """An agent reports how applying a version went. A failure (a rollback, or a download
    refused by verify_failed, where nothing changed) opens a critical finding, and if a
    rollout asked for the version, moves it on (a failure pauses it)."""
    succeeded = outcome == UpgradeOutcome.SUCCEEDED
    runs = to_version if succeeded else (rolled_back_to or from_version)
    # First the agent's row (locked until commit, so a decommission waits or went first).
    if not Agent.objects.filter(pk=agent.pk).transition(FINISH_UPGRADE, version=runs):
        raise AgentGone()
    rollout_record_result(
        agent=agent,
        outcome=outcome,
        to_version=to_version,
        back_to=runs,
        detail=detail,
        actor=Actor.for_agent(agent, ip_address),
    )
    agent_facts_changed(agent_ids=[agent.pk])
    if not succeeded:
        if outcome == UpgradeOutcome.VERIFY_FAILED:
            what = (
                f"{agent.name} refused the download of {to_version} (its checksum or "
                f"signature did not verify) and keeps running {runs}."
            )
        else:
            level = " (its last known good)" if rollback_level == "last_known_good" else ""
            what = (
                f"{agent.name} could not move {from_version} → {to_version} ({outcome}) "
                f"and rolled back to {runs}{level}."
            )
        anomaly_open(
            actor=Actor.for_agent(agent, ip_address),
            customer=agent.customer_id,
            kind=AnomalyKind.ROLLBACK,
            fingerprint=f"rollback:{agent.pk}:{to_version}",
            severity=AnomalySeverity.CRITICAL,
            agent_id=agent.pk,
            message=f"{what} {detail}".strip(),
        )
    changes: dict[str, list] = {
        "version": [str(from_version), str(to_version)],
        "detail": [None, detail],
    }
    if not succeeded:
        changes["runs"] = [None, str(runs)]
    if rollback_level:
        changes["rollback_level"] = [None, rollback_level]
    audit_record(
        actor=Actor.for_agent(agent, ip_address),
        action=UPGRADE_ACTIONS[UpgradeOutcome(outcome)],
        target=agent,
        customer=agent.customer_id,
        changes=changes,
    )


@transaction.atomic
def agent_decommission(*, agent: Agent, actor: Actor) -> bool:
    """Retire an agent: its secret stops working, its seat frees, its jobs go back to the
    queue for another agent."""
    now = timezone.now()
    if not Agent.objects.filter(pk=agent.pk).transition(DECOMMISSION, decommissioned_at=now):
        return False
    agent_facts_changed(agent_ids=[agent.pk])  # its secret is refused everywhere
    requeued = jobs_requeue(
        Job.objects.filter(agent_id=agent.pk, status=JobStatus.RUNNING), now=now
    )
    rollout_targets_drop(agent_id=agent.pk)
    anomalies_resolve(where=Q(agent_id=agent.pk), note="The agent was decommissioned.", actor=actor)
    audit_record(
        actor=actor,
        action=AuditAction.AGENT_DECOMMISSION,
        target=agent,
        customer=agent.customer_id,
        changes={
            "status": [agent.status, AgentStatus.DECOMMISSIONED],
            "jobs_requeued": [None, requeued],
        },
    )
    agent.status = AgentStatus.DECOMMISSIONED
    return True


@transaction.atomic
def agent_exit(*, agent: Agent, ip_address: str | None = None) -> bool:
    """The agent says it stops cleanly. An ephemeral agent is then decommissioned (its
    seat frees at once, anything it still held goes back to the queue); any other agent
    is simply heard from. True when it was retired."""
    if not agent.ephemeral:
        return False
    return agent_decommission(
        agent=agent,
        actor=Actor(label=f"agent:{agent.name} (ephemeral, exited)"[:200], ip_address=ip_address),
    )


# --- what a heartbeat answers -------------------------------------------------------------


def agent_update_available(agent: Agent, version: SemVer) -> SemVer | None:
    """The release the agent should move to, if it runs `version`: the latest of its
    license's channel when it is behind (or on a yanked release newer than it); a hint,
    never an order."""
    latest = agent_latest_release(agent)
    on_yanked = agent.facts is not None and agent.facts.on_yanked and version == agent.version
    if latest is None or version == latest or (version > latest and not on_yanked):
        return None
    return latest


def heartbeat_interval(fleet: int) -> int:
    """Seconds to the next heartbeat: long enough that the whole fleet beats at most
    AGENT_HEARTBEATS_PER_SECOND times a second (as Nomad sizes its heartbeat TTL), within
    AGENT_HEARTBEAT_SECONDS..AGENT_HEARTBEAT_MAX_SECONDS, with ±20% jitter inside those
    bounds so a restarted fleet does not beat in step."""
    low, high = settings.AGENT_HEARTBEAT_SECONDS, settings.AGENT_HEARTBEAT_MAX_SECONDS
    base = min(high, max(low, fleet / settings.AGENT_HEARTBEATS_PER_SECOND))
    return round(random.uniform(max(low, base * 0.8), min(high, base * 1.2)))
