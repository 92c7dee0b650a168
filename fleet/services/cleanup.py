"""Stale cleanup, opted in per customer (`Customer.stale_cleanup_days`): agents not heard
from for that many days are cleaned up by beat — their seats free, their secrets refused,
their running jobs back in the queue — and can be restored for 7 days while a seat is
free; then they are decommissioned for good. Never an agent heard from inside the window:
the UPDATE that cleans up re-checks it, so a heartbeat racing the cleanup wins. What the
cleanup will do is on the portal a day before it does it."""

from dataclasses import dataclass
from datetime import datetime, timedelta

from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from fleet import policy
from fleet.agent_cache import agent_facts_changed
from fleet.choices import AuditAction, JobStatus
from fleet.errors import AgentStateConflict, SeatLimitReached
from fleet.models import Agent, Customer, Job, License
from fleet.models.agents import CLEAN_UP, CLEANED_UP, DECOMMISSION, RESTORE, silent_since_q
from fleet.selectors import customer_active_agent_count
from fleet.services.audit import SYSTEM, Actor, audit_record, audit_record_rows
from fleet.services.jobs import jobs_requeue
from fleet.services.presence import presence_flush
from fleet.services.rollouts import rollout_targets_drop

CHUNK = 1000


@dataclass(frozen=True)
class CleanupRun:
    cleaned_up: int
    finalized: int
    skipped: bool  # heartbeats may be missing (presence buffer lost): nothing was done


def agents_clean_up_stale(*, now: datetime | None = None) -> CleanupRun:
    """Clean up every opted-in customer's agents silent for its days (customers that
    turned it on less than a day ago wait, so the portal listed it first), and decommission
    those cleaned up more than 7 days ago."""
    now = now or timezone.now()
    if not presence_flush().complete:
        # Buffered heartbeats may be lost: an agent could look silent that is not. Wait.
        return CleanupRun(0, 0, skipped=True)
    cleaned = 0
    customers = Customer.objects.filter(
        stale_cleanup_days__isnull=False, stale_cleanup_since__lte=now - policy.CLEANUP_NOTICE
    ).values_list("pk", "stale_cleanup_days")
    for customer_id, days in customers:
        if days:  # (the filter says so; the type checker cannot know)
            cleaned += _clean_up_customer(customer_id, days, now)
    return CleanupRun(cleaned, _finalize(now), skipped=False)


def _clean_up_customer(customer_id: int, days: int, now: datetime) -> int:
    cutoff = now - timedelta(days=days)
    stale = Q(customer_id=customer_id, status__in=CLEAN_UP.sources) & silent_since_q(cutoff)
    total = 0
    while True:
        with transaction.atomic():
            ids = list(
                Agent.objects.select_for_update(skip_locked=True)
                .filter(stale)
                .values_list("pk", flat=True)
                .order_by()[:CHUNK]
            )
            if not ids:
                return total
            # The same condition again in the UPDATE: an agent heard meanwhile stays.
            moved = Agent.objects.filter(stale, pk__in=ids).transition(CLEAN_UP, cleaned_up_at=now)
            done = list(
                Agent.objects.filter(pk__in=ids, status=CLEANED_UP, cleaned_up_at=now).values_list(
                    "pk", flat=True
                )
            )
            agent_facts_changed(agent_ids=done)  # their secrets are refused everywhere
            jobs_requeue(Job.objects.filter(agent_id__in=done, status=JobStatus.RUNNING), now=now)
            for agent_id in done:
                rollout_targets_drop(agent_id=agent_id)
            audit_record_rows(
                actor=SYSTEM,
                action=AuditAction.AGENT_CLEAN_UP,
                model=Agent,
                ids=done,
                repr_sql="name",
                changes={"status": ["offline", CLEANED_UP], "silent_days": [None, days]},
            )
            total += moved
        if len(ids) < CHUNK:
            return total


def _finalize(now: datetime) -> int:
    """Cleaned up more than CLEANUP_UNDO_WINDOW ago: decommissioned for good."""
    overdue = Q(status=CLEANED_UP, cleaned_up_at__lt=now - policy.CLEANUP_UNDO_WINDOW)
    with transaction.atomic():
        ids = list(Agent.objects.filter(overdue).values_list("pk", flat=True).order_by()[:CHUNK])
        moved = Agent.objects.filter(overdue, pk__in=ids).transition(
            DECOMMISSION, decommissioned_at=now
        )
        audit_record_rows(
            actor=SYSTEM,
            action=AuditAction.AGENT_DECOMMISSION,
            model=Agent,
            ids=ids,
            repr_sql="name",
            condition="status = 'decommissioned'",
            changes={"status": [CLEANED_UP, "decommissioned"], "undo_window": ["7 days", None]},
        )
    return moved


@transaction.atomic
def agent_cleanup_undo(*, agent: Agent, actor: Actor) -> None:
    """Bring a cleaned-up agent back (offline until its next heartbeat) within 7 days,
    if its license has a free seat (the license row is locked while the seat is counted,
    as activation does)."""
    license = (
        License.objects.select_for_update()
        .filter(customer_id=agent.customer_id, is_current=True)
        .first()
    )
    locked = Agent.objects.select_for_update().filter(pk=agent.pk).first()
    if locked is None or locked.status != CLEANED_UP or locked.cleaned_up_at is None:
        raise AgentStateConflict("Only a cleaned-up agent can be restored.")
    if locked.cleaned_up_at < timezone.now() - policy.CLEANUP_UNDO_WINDOW:
        raise AgentStateConflict("The 7 days to undo this cleanup have passed.")
    used = customer_active_agent_count(agent.customer_id)
    if license is None or used >= license.max_agents:
        raise SeatLimitReached(
            f"No seat is free ({used} of {license.max_agents if license else 0} used): "
            "decommission an agent or raise max_agents, then restore it."
        )
    Agent.objects.filter(pk=agent.pk).transition(RESTORE, cleaned_up_at=None)
    agent_facts_changed(agent_ids=[agent.pk])
    audit_record(
        actor=actor,
        action=AuditAction.AGENT_RESTORE,
        target=locked,
        customer=locked.customer_id,
        changes={"status": [CLEANED_UP, RESTORE.target]},
    )
    agent.status, agent.cleaned_up_at = RESTORE.target, None
