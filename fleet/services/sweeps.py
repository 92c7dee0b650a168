"""The periodic sweeps beat runs: silent agents go offline, expired leases go back to the
queue. Each is set-based (a fixed number of statements whatever the fleet's size, in
bounded chunks when very many rows change at once), idempotent, and safe to run twice at
the same time."""

from dataclasses import dataclass
from datetime import datetime, timedelta

from django.conf import settings
from django.db import IntegrityError, connection, transaction
from django.db.models import BooleanField, Q
from django.db.models.expressions import RawSQL
from django.utils import timezone

from fleet import policy
from fleet.agent_cache import agent_facts_changed
from fleet.choices import (
    AgentStatus,
    AlertEventType,
    AnomalyKind,
    AnomalySeverity,
    AuditAction,
    JobCancelReason,
    JobStatus,
)
from fleet.models import Agent, AgentFactsChange, Job, SweepState
from fleet.models.agents import GO_SILENT
from fleet.models.jobs import FAIL, STOP
from fleet.services.agent_controls import agents_drained, agents_resume_due
from fleet.services.alerts import Alert, alert_sends_held, alerts_emit
from fleet.services.anomalies import (
    Finding,
    anomalies_record,
    anomalies_record_agents_offline,
    anomalies_resolve,
    db_time,
)
from fleet.services.audit import SYSTEM, audit_record_rows
from fleet.services.jobs import jobs_requeue
from fleet.services.presence import presence_flush

CHUNK = 5000  # rows changed per statement: a mass change runs as several bounded ones
STALE_SWEEP = "stale_agents"
FACTS_CHANGES_KEPT = timedelta(hours=1)


@dataclass(frozen=True)
class StaleSweep:
    marked_offline: int
    in_grace: bool
    requeued: int
    abandoned: int


def _sweep_clock(name: str, now: datetime, *, heard_everything: bool = True) -> SweepState:
    """Lock this sweep's row (two sweeps run one after the other) and note a gap: when the
    previous run is older than the online window, the Control Plane itself was away, and
    agents get one window of grace to be heard from before anyone is marked offline. The
    same grace follows the moment heartbeats may have been lost with the presence buffer
    (once: while Redis stays away, heartbeats go to the database, and marking resumes)."""
    window = settings.AGENT_ONLINE_WINDOW
    state = SweepState.objects.select_for_update().filter(name=name).first()
    if state is None:
        try:
            with transaction.atomic():
                return SweepState.objects.create(
                    name=name, last_run_at=now, grace_until=now + window
                )
        except IntegrityError:  # another sweep created it first
            state = SweepState.objects.select_for_update().get(name=name)
    buffer_lost = state.presence_intact and not heard_everything
    if now - state.last_run_at > window or buffer_lost:
        state.grace_until = max(state.grace_until or now, now + window)
    state.last_run_at = max(state.last_run_at, now)
    state.presence_intact = heard_everything
    state.save(update_fields=["last_run_at", "grace_until", "presence_intact"])
    return state


def agents_mark_stale(*, now: datetime | None = None) -> StaleSweep:
    """Online or upgrading agents silent past the online window become offline, each with
    an "agent offline" finding; findings of agents heard from again are closed. Expired
    job leases go back to the queue (see jobs_requeue_expired)."""
    now = now or timezone.now()
    # Count from every heartbeat heard, not only those written; a lost buffer is this
    # sweep's to notice (and then grant grace), whichever flush saw it first.
    flushed = presence_flush(for_sweep=True)
    with transaction.atomic():
        state = _sweep_clock(STALE_SWEEP, now, heard_everything=flushed.complete)
    in_grace = state.grace_until is not None and now < state.grace_until
    with alert_sends_held():  # one agents.offline event per customer, sent complete
        marked = 0 if in_grace else _mark_offline(now)
    anomalies_resolve(
        where=Q(kind=AnomalyKind.AGENT_OFFLINE, agent__status=AgentStatus.ONLINE),
        note="The agent's heartbeat arrived again.",
        now=now,
        actor=SYSTEM,
    )
    requeued, abandoned = jobs_requeue_expired(now=now)
    jobs_stop_overdue(now=now)
    jobs_stop_unreported(now=now)
    agents_drained()  # a drain that raced its agent's last report, or expired leases
    agents_resume_due(now=now)
    AgentFactsChange.objects.filter(changed_at__lt=now - FACTS_CHANGES_KEPT).delete()
    return StaleSweep(marked, in_grace, requeued, abandoned)


def _mark_offline(now: datetime) -> int:
    """Mark silent agents offline in chunks of CHUNK, each its own transaction (so a mass
    offline never holds row locks that block heartbeats for long): five statements a
    chunk (select, update, findings, and audit rows for the agents and the findings)."""
    cutoff = now - settings.AGENT_ONLINE_WINDOW
    silent = Q(status__in=GO_SILENT.sources) & (
        Q(last_heartbeat_at__lt=cutoff)
        | Q(last_heartbeat_at__isnull=True, registered_at__lt=cutoff)
    )
    marked_total = 0
    while True:
        with transaction.atomic():
            # Lock the chunk (skipping rows another sweep holds), so two sweeps at once
            # mark, report and audit disjoint agents.
            rows = list(
                Agent.objects.select_for_update(skip_locked=True)
                .filter(silent)
                .values_list("pk", "customer_id", "name")
                .order_by()[:CHUNK]
            )
            if not rows:
                return marked_total
            chunk = [pk for pk, _, _ in rows]
            marked_total += Agent.objects.filter(pk__in=chunk).transition(
                GO_SILENT, offline_since=now
            )
            agent_facts_changed(agent_ids=chunk)  # its next heartbeat writes at once
            anomalies_record_agents_offline(chunk, now=now)
            audit_record_rows(
                actor=SYSTEM,
                action=AuditAction.AGENT_OFFLINE,
                model=Agent,
                ids=chunk,
                repr_sql="name",
                condition=f"status = '{GO_SILENT.target}' AND offline_since = %s",
                condition_params=[db_time(now)],
                changes={"status": ["online", "offline"]},
            )
            _alert_offline(rows, now)
        if len(chunk) < CHUNK:
            return marked_total


def _fold_offline(old: dict, new: dict) -> dict:
    """The same sweep's next chunk of a customer's agents: one event, counted whole."""
    names = old.get("agents", []) + new["agents"]
    return {
        **old,
        "count": old.get("count", 0) + new["count"],
        "agents": names[: policy.ALERT_AGENTS_LISTED],
    }


def _alert_offline(rows: list[tuple[int, int, str]], now: datetime) -> None:
    """agents.offline: one event per customer per sweep, however many agents went silent
    (a sweep's later chunks fold into it), naming the first of them."""
    names: dict[int, list[str]] = {}
    for _, customer_id, name in rows:
        names.setdefault(customer_id, []).append(name)
    alerts_emit(
        [
            Alert(
                customer_id,
                AlertEventType.AGENTS_OFFLINE,
                f"agents.offline:{now.isoformat()}",
                {
                    "count": len(agents),
                    "agents": agents[: policy.ALERT_AGENTS_LISTED],
                    "since": now.isoformat(),
                    "incident": "agents_offline",
                    "portal_path": "/portal/agents/?status=offline",
                },
                fold=_fold_offline,
            )
            for customer_id, agents in names.items()
        ],
        now=now,
    )


def jobs_requeue_expired(*, now: datetime | None = None) -> tuple[int, int]:
    """Running jobs whose lease expired go back to the queue with a new lease to come
    (the old holder's late result then gets 409); past JOB_MAX_ATTEMPTS they fail for
    good with a finding. Returns (requeued, failed)."""
    now = now or timezone.now()
    requeued_total = failed_total = 0
    while True:
        with transaction.atomic():
            expired = list(
                Job.objects.select_for_update(skip_locked=True)
                .filter(status=JobStatus.RUNNING, lease_expires_at__lt=now)
                .values_list("pk", "customer_id", "attempts", "agent_id")
                .order_by()[:CHUNK]
            )
            if not expired:
                return requeued_total, failed_total
            retry = [pk for pk, _, attempts, _ in expired if attempts < settings.JOB_MAX_ATTEMPTS]
            retried = set(retry)
            give_up = [row for row in expired if row[0] not in retried]
            jobs_requeue(Job.objects.filter(pk__in=retry), now=now)
            Job.objects.filter(pk__in=[pk for pk, *_ in give_up]).transition(
                FAIL,
                lease_id=None,
                lease_expires_at=None,
                finished_at=now,
                error="The lease expired on its last attempt: no agent finished it.",
            )
            anomalies_record(
                [
                    Finding(
                        customer_id=customer_id,
                        kind=AnomalyKind.JOB_ABANDONED,
                        fingerprint=f"job_abandoned:{pk}",
                        severity=AnomalySeverity.WARNING,
                        agent_id=agent_id,
                        job_id=pk,
                        message=f"Job {pk} failed: its lease expired on attempt {attempts} of "
                        f"{settings.JOB_MAX_ATTEMPTS} (its agent went silent each time).",
                    )
                    for pk, customer_id, attempts, agent_id in give_up
                ],
                now=now,
                actor=SYSTEM,
            )
            audit_record_rows(
                actor=SYSTEM,
                action=AuditAction.JOB_LEASE_EXPIRED,
                model=Job,
                ids=[pk for pk, *_ in expired],
                repr_sql="'job ' || CAST(id AS TEXT) || ' (' || status || ')'",
                changes={"status": ["running", "queued, or failed after its last attempt"]},
            )
        requeued_total += len(retry)
        failed_total += len(give_up)
        if len(expired) < CHUNK:
            return requeued_total, failed_total


def _overdue(now: datetime) -> RawSQL:
    """A running job is past its max runtime: its own, else its customer's default, else
    the product's (policy.JOB_MAX_RUNTIME_DEFAULT). Time arithmetic is each database's own."""
    seconds = (
        "COALESCE(fleet_job.max_runtime_seconds, (SELECT c.job_max_runtime_seconds FROM "
        "fleet_customer c WHERE c.id = fleet_job.customer_id), %s)"
    )
    if connection.vendor == "postgresql":
        deadline = f"fleet_job.started_at + {seconds} * INTERVAL '1 second'"
    else:  # SQLite keeps times as ISO text, which compares in time order
        deadline = (
            "strftime('%%Y-%%m-%%d %%H:%%M:%%f', fleet_job.started_at, "
            f"'+' || {seconds} || ' seconds')"
        )
    default = int(policy.JOB_MAX_RUNTIME_DEFAULT.total_seconds())
    # Our own SQL; the only values are parameters.
    return RawSQL(f"{deadline} < %s", (default, db_time(now)), BooleanField())  # noqa: S611


def jobs_stop_overdue(*, now: datetime | None = None) -> int:
    """Running jobs past their max runtime are told to stop, as an operator's cancel is
    (their agents learn it from their next heartbeat), and counted as timed out."""
    now = now or timezone.now()
    told = 0
    while True:
        with transaction.atomic():
            rows = list(
                Job.objects.select_for_update(skip_locked=True, of=("self",))
                .filter(status=JobStatus.RUNNING, stop_requested_at__isnull=True)
                .alias(overdue=_overdue(now))
                .filter(overdue=True)
                .values_list("pk", "agent_id")
                .order_by()[:CHUNK]
            )
            if not rows:
                return told
            ids = [pk for pk, _ in rows]
            told += Job.objects.filter(
                pk__in=ids, status=JobStatus.RUNNING, stop_requested_at__isnull=True
            ).update(stop_requested_at=now, stop_reason=JobCancelReason.TIMED_OUT)
            agent_facts_changed(agent_ids=sorted({a for _, a in rows if a}))
            audit_record_rows(
                actor=SYSTEM,
                action=AuditAction.JOB_TIMED_OUT,
                model=Job,
                ids=ids,
                repr_sql="'job ' || CAST(id AS TEXT) || ' (' || status || ')'",
                changes={"stop_requested": [None, JobCancelReason.TIMED_OUT.value]},
            )
        if len(rows) < CHUNK:
            return told


def jobs_stop_unreported(*, now: datetime | None = None) -> int:
    """Jobs told to stop a lease ago whose agent never reported it (an agent too old to
    know `cancel`, or stuck) are cancelled here; the agent's late result gets 409."""
    now = now or timezone.now()
    stopped = 0
    while True:
        with transaction.atomic():
            rows = list(
                Job.objects.select_for_update(skip_locked=True)
                .filter(status=JobStatus.RUNNING, stop_requested_at__lt=now - settings.JOB_LEASE)
                .values_list("pk", "agent_id")
                .order_by()[:CHUNK]
            )
            if not rows:
                return stopped
            ids = [pk for pk, _ in rows]
            stopped += Job.objects.filter(pk__in=ids).transition(
                STOP,
                lease_id=None,
                lease_expires_at=None,
                finished_at=now,
                error="Cancelled: its agent did not report stopping it within a lease.",
            )
            agents = sorted({a for _, a in rows if a})
            agent_facts_changed(agent_ids=agents)
            audit_record_rows(
                actor=SYSTEM,
                action=AuditAction.JOB_STOPPED,
                model=Job,
                ids=ids,
                repr_sql="'job ' || CAST(id AS TEXT) || ' (' || status || ')'",
                changes={"status": ["running", "cancelled"]},
            )
        if len(rows) < CHUNK:
            return stopped
