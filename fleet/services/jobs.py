"""The job queue: submit, claim under the per-agent cap, finish under a lease."""

import re
import uuid
from collections.abc import Callable
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from django.conf import settings
from django.db import IntegrityError, connection, transaction
from django.utils import timezone

from fleet.agent_cache import agent_facts_changed
from fleet.choices import AuditAction, JobCancelReason, JobStatus
from fleet.errors import (
    IdempotencyKeyReused,
    JobAlreadyFinished,
    JobNotStopping,
    NotFound,
    StaleLease,
)
from fleet.labels import labels_check
from fleet.models import Agent, Customer, Job
from fleet.models.agents import DRAINING, MAY_CLAIM
from fleet.models.jobs import (
    CANCEL,
    CLAIM,
    FAIL,
    REQUEUE,
    STOP,
    SUCCEED,
    JobQuerySet,
)
from fleet.models.lifecycle import Transition
from fleet.services.agent_controls import agents_drained
from fleet.services.audit import AUDIT_INSERT, Actor, audit_record
from fleet.services.budgets import budget_charge
from fleet.services.outcomes import pull_request_named
from fleet.services.usage import UsageTotals, usage_fields

# A claim is three statements: lock the agent's row, so its claims run one at a time;
# claim the next job, counting the agent's running jobs in a snapshot taken after that
# lock (a count taken before waiting would let two claims both see room under the cap),
# with SKIP LOCKED so different agents claim different jobs at once; write the audit row.
# On PostgreSQL they run inside the function fleet_claim_job (installed by a migration that
# `manage.py claim_function_migration` writes from these very statements; a test fails
# when the two differ): one round trip, plans kept by each connection, and
# each statement still takes its own snapshot. Elsewhere they run one by one. Statuses are
# written out, not parameters, so the kept plans can use the partial job_queue index.
_CLAIM_STATEMENTS = [
    "SELECT status FROM fleet_agent WHERE id = %(agent)s {lock_agent}",
    """UPDATE fleet_job
   SET status = '{running}', agent_id = %(agent)s, lease_id = %(lease)s,
       lease_expires_at = %(expires)s, started_at = %(now)s, attempts = attempts + 1
 WHERE id = (
       SELECT id FROM fleet_job
        WHERE customer_id = %(customer)s AND role = %(role)s AND status = '{queued}'
          AND (SELECT status FROM fleet_agent WHERE id = %(agent)s) = '{may_claim}'
          AND {labels_match}
          AND (SELECT COUNT(*) FROM fleet_job
                WHERE agent_id = %(agent)s AND status = '{running}') < %(cap)s
        ORDER BY priority DESC, queued_at, id
        LIMIT 1 {skip_locked})
RETURNING *""",
    AUDIT_INSERT
    + """
SELECT %(now)s, NULL, %(actor)s, customer_id, '{claim_action}', 'fleet.job', CAST(id AS TEXT),
       'job ' || id || ' (' || role || ', ' || status || ')',
       {changes}, NULL
  FROM fleet_job
 WHERE agent_id = %(agent)s AND status = '{running}' AND lease_id = %(lease)s""",
]
# The job's required labels are all among the agent's (fleet/labels.py says the same in
# Python): jsonb containment on PostgreSQL (a job requiring nothing passes at once); on
# SQLite, no required key whose value the agent lacks (keys cannot hold quotes).
_LABELS_MATCH_POSTGRES = "required_labels <@ (SELECT labels FROM fleet_agent WHERE id = %(agent)s)"
_LABELS_MATCH_SQLITE = """NOT EXISTS (
              SELECT 1 FROM json_each(fleet_job.required_labels) AS required
               WHERE json_extract((SELECT labels FROM fleet_agent WHERE id = %(agent)s),
                                  '$."' || required.key || '"') IS NOT required.value)"""
_CLAIM_CHANGES = """'{"status": ["queued", "running"], "attempt": [null, ' || attempts || ']}'"""
_CLAIM_PARAMETERS = {  # name: PostgreSQL type
    "agent": "bigint",
    "customer": "bigint",
    "role": "text",
    "cap": "integer",
    "lease": "uuid",
    "now": "timestamptz",
    "expires": "timestamptz",
    "actor": "text",
}


def _claim_statements(*, postgres: bool) -> list[str]:
    return [
        sql.format(
            lock_agent="FOR UPDATE" if postgres else "",
            skip_locked="FOR UPDATE SKIP LOCKED" if postgres else "",
            changes=f"CAST({_CLAIM_CHANGES} AS jsonb)" if postgres else _CLAIM_CHANGES,
            labels_match=_LABELS_MATCH_POSTGRES if postgres else _LABELS_MATCH_SQLITE,
            may_claim=MAY_CLAIM,
            queued=_CLAIMABLE,
            running=CLAIM.target,
            claim_action=AuditAction.JOB_CLAIM.value,
        )
        for sql in _CLAIM_STATEMENTS
    ]


def claim_function_sql() -> str:
    """CREATE OR REPLACE the PostgreSQL function that runs _CLAIM_STATEMENTS."""
    lock, claim, audit = (
        re.sub(r"%\((\w+)\)s", r"p_\1", sql) for sql in _claim_statements(postgres=True)
    )
    arguments = ", ".join(f"p_{name} {kind}" for name, kind in _CLAIM_PARAMETERS.items())
    return (
        f"CREATE OR REPLACE FUNCTION fleet_claim_job({arguments}) RETURNS SETOF fleet_job\n"
        "LANGUAGE plpgsql AS $claim$\nBEGIN\n"
        f"{lock.replace('SELECT', 'PERFORM', 1)};\n"
        f"RETURN QUERY {claim};\n"
        f"{audit};\nEND\n$claim$"
    )


(_CLAIMABLE,) = CLAIM.sources  # the one status a claim takes a job from

# Who retires an ephemeral agent, as the audit log names it.
EPHEMERAL_END = Actor(label="system:ephemeral agent finished its job")

FINISHED_ACTIONS = {  # what the holder's report is audited as, by where it moves the job
    SUCCEED: AuditAction.JOB_SUCCEEDED,
    FAIL: AuditAction.JOB_FAILED,
    REQUEUE: AuditAction.JOB_REQUEUED,
    STOP: AuditAction.JOB_STOPPED,
}

_CALL_CLAIM_FUNCTION = (
    "SELECT * FROM fleet_claim_job(%(agent)s, %(customer)s, %(role)s, %(cap)s, %(lease)s, "
    "%(now)s, %(expires)s, %(actor)s)"
)  # the arguments in _CLAIM_PARAMETERS's order


@transaction.atomic
def job_submit(
    *,
    customer: Customer,
    role: str,
    payload: dict[str, Any],
    priority: int = 0,
    idempotency_key: str = "",
    max_runtime: timedelta | None = None,
    required_labels: dict[str, str] | None = None,
    actor: Actor,
) -> tuple[Job, bool]:
    """Queue a job. With an idempotency key, a retried submit returns the first job
    (created False); the same key with a different job is refused."""
    try:
        with transaction.atomic():
            job = Job.objects.create(
                customer=customer,
                role=role,
                payload=payload,
                priority=priority,
                idempotency_key=idempotency_key,
                max_runtime_seconds=int(max_runtime.total_seconds()) if max_runtime else None,
                required_labels=labels_check(required_labels or {}),
            )
    except IntegrityError:
        job = Job.objects.get(customer=customer, idempotency_key=idempotency_key)
        if (job.role, job.payload, job.priority) != (role, payload, priority):
            raise IdempotencyKeyReused(
                "This Idempotency-Key was used for a different job.", job_id=job.pk
            ) from None
        return job, False
    audit_record(
        actor=actor,
        action=AuditAction.JOB_SUBMIT,
        target=job,
        customer=customer.pk,
        changes={"role": [None, role], "priority": [None, priority]},
    )
    return job, True


def jobs_requeue(jobs: JobQuerySet, *, now: datetime) -> int:
    """Put running jobs back in the queue for any agent: no holder, no lease (a late
    result under the old lease then gets 409). Returns how many went back."""
    return jobs.transition(
        REQUEUE,
        agent=None,
        lease_id=None,
        lease_expires_at=None,
        started_at=None,
        queued_at=now,
    )


def job_claim_next(*, agent: Agent, max_concurrent: int) -> Job | None:
    """The oldest highest-priority queued job of the agent's role, or None when the agent
    already holds `max_concurrent` jobs, is draining for an upgrade (or retired), or the
    queue is empty. See _CLAIM_STATEMENTS."""

    def db(name: str, value: object) -> object:
        return Job._meta.get_field(name).get_db_prep_value(value, connection)  # type: ignore[union-attr]

    now = timezone.now()
    params: dict[str, Any] = {
        "agent": agent.pk,
        "customer": agent.customer_id,
        "role": agent.role,
        "cap": max_concurrent,
        "lease": db("lease_id", uuid.uuid4()),
        "now": db("started_at", now),
        "expires": db("lease_expires_at", now + settings.JOB_LEASE),
        "actor": Actor.for_agent(agent).label[:200],
    }
    if connection.vendor == "postgresql":
        return next(iter(Job.objects.raw(_CALL_CLAIM_FUNCTION, params)), None)
    lock, claim, audit = _claim_statements(postgres=False)
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(lock, params)
        job = next(iter(Job.objects.raw(claim, params)), None)
        cursor.execute(audit, params)
    return job


def _finish(
    *,
    agent: Agent,
    job_id: int,
    lease_id: uuid.UUID,
    outcome: JobStatus,
    changes: Callable[[Job], tuple[Transition, dict[str, Any]]],
) -> Job:
    """Make the move `changes(job)` says, with its fields, if the agent holds the job
    under `lease_id` (the row is locked). A repeat of the same call is answered with the
    job as it is; anything else is refused unchanged."""
    job = Job.objects.select_for_update().filter(pk=job_id, customer_id=agent.customer_id).first()
    if job is None:
        raise NotFound("No such job.")
    if job.lease_id != lease_id or job.agent_id not in (agent.pk, None):
        raise StaleLease(
            "This lease no longer holds the job: it expired and the job went back to the "
            "queue. Drop the result.",
            job_id=job_id,
        )
    if job.status != JobStatus.RUNNING:
        requeued_by_fail = outcome == JobStatus.FAILED and job.status == JobStatus.QUEUED
        if job.status == outcome or requeued_by_fail:
            return job
        raise JobAlreadyFinished(f"The job already finished as {job.status}.", status=job.status)
    move, fields = changes(job)
    Job.objects.filter(pk=job.pk, lease_id=lease_id).transition(move, **fields)
    if job.stop_requested_at is not None:  # its heartbeats stop naming it for a stop
        agent_facts_changed(agent_ids=[agent.pk])
    if agent.status == DRAINING:  # its last job done: the drain ends in a pause
        agents_drained(agent_ids=[agent.pk])
    if agent.ephemeral:  # its one job is done: retired, its seat free at once
        from fleet.services.agents import agent_decommission  # (agents imports this module)

        agent_decommission(agent=agent, actor=EPHEMERAL_END)
    for name, value in {**fields, "status": move.target}.items():
        setattr(job, name, value)
    # What the job holds now (this report's usage, else its heartbeats' so far) counts
    # against the budgets: once per finish, since a repeat returned above.
    budget_charge(
        job,
        UsageTotals(job.input_tokens, job.output_tokens, Decimal(job.cost_usd)),
        budgeted=agent.facts.budgeted if agent.facts else None,
    )
    audit_record(
        actor=Actor.for_agent(agent),
        action=FINISHED_ACTIONS[move],
        target=job,
        customer=agent.customer_id,
        changes={"status": [JobStatus.RUNNING, job.status]},
    )
    return job


@transaction.atomic
def job_complete(
    *,
    agent: Agent,
    job_id: int,
    lease_id: uuid.UUID,
    result: Any,
    usage: list[dict[str, Any]] | None = None,
    wall_seconds: float | None = None,
) -> Job:
    """Its usage (a list, one item per model) is stored with its sums, the agent's
    version and the pull request its result names, all in the same UPDATE."""
    return _finish(
        agent=agent,
        job_id=job_id,
        lease_id=lease_id,
        outcome=JobStatus.SUCCEEDED,
        changes=lambda job: (
            SUCCEED,
            {
                "result": result,
                "finished_at": timezone.now(),
                "lease_expires_at": None,
                "agent_version": str(agent.version),
                "pull_request": pull_request_named(result),
                **usage_fields(usage, wall_seconds),
            },
        ),
    )


@transaction.atomic
def job_fail(
    *,
    agent: Agent,
    job_id: int,
    lease_id: uuid.UUID,
    error: str,
    retryable: bool = False,
    usage: list[dict[str, Any]] | None = None,
    wall_seconds: float | None = None,
) -> Job:
    """A failed job goes back to the queue while it is retryable and has attempts left
    (the lease stays on it so a repeated report is recognised); else it fails for good.
    Its usage is stored as on complete (a retried job keeps its last attempt's)."""

    def changes(job: Job) -> tuple[Transition, dict[str, Any]]:
        spent = {"agent_version": str(agent.version), **usage_fields(usage, wall_seconds)}
        if retryable and job.attempts < settings.JOB_MAX_ATTEMPTS:
            # Back in the queue from now; `agent` keeps the agent that failed it until the
            # next claim, so repeated failures of one agent are seen.
            return REQUEUE, {
                "error": error,
                "started_at": None,
                "queued_at": timezone.now(),
                "lease_expires_at": None,
                **spent,
            }
        return FAIL, {
            "error": error,
            "finished_at": timezone.now(),
            "lease_expires_at": None,
            **spent,
        }

    return _finish(
        agent=agent, job_id=job_id, lease_id=lease_id, outcome=JobStatus.FAILED, changes=changes
    )


@transaction.atomic
def job_stopped(*, agent: Agent, job_id: int, lease_id: uuid.UUID) -> Job:
    """The agent stopped a job it was told to stop (an operator's cancel, or past its max
    runtime): the job is cancelled. A repeat is answered with the job; a job nobody told
    to stop is refused (409 `job_not_stopping`): the agent should finish it."""

    def changes(job: Job) -> tuple[Transition, dict[str, Any]]:
        if job.stop_requested_at is None:
            raise JobNotStopping("Nobody asked to stop this job: finish it.", job_id=job.pk)
        return STOP, {
            "finished_at": timezone.now(),
            "lease_expires_at": None,
            "error": _stop_words(job),
        }

    return _finish(
        agent=agent, job_id=job_id, lease_id=lease_id, outcome=JobStatus.CANCELLED, changes=changes
    )


def _stop_words(job: Job) -> str:
    if job.stop_reason == JobCancelReason.TIMED_OUT:
        return "Timed out: it ran past its max runtime and its agent stopped it."
    return "Cancelled while it ran: its agent stopped it."


@transaction.atomic
def job_cancel(*, customer: Customer, job_id: int, actor: Actor) -> Job:
    """Cancel a job: a queued one at once; a running one is marked, its agent learns it
    from its next heartbeat (`cancel`), stops it and reports (the job is then cancelled).
    Cancelling again changes nothing."""
    job = Job.objects.select_for_update().filter(pk=job_id, customer=customer).first()
    if job is None:
        raise NotFound("No such job.")
    if job.status == JobStatus.CANCELLED or job.stop_requested_at is not None:
        return job
    if job.status == JobStatus.RUNNING:
        job.stop_requested_at, job.stop_reason = timezone.now(), JobCancelReason.OPERATOR
        Job.objects.filter(pk=job.pk, status=JobStatus.RUNNING).update(
            stop_requested_at=job.stop_requested_at, stop_reason=job.stop_reason
        )
        agent_facts_changed(agent_ids=[job.agent_id] if job.agent_id else [])
        audit_record(
            actor=actor,
            action=AuditAction.JOB_CANCEL_REQUEST,
            target=job,
            customer=customer.pk,
            changes={"stop_requested": [None, job.stop_reason]},
        )
        return job
    if job.status != JobStatus.QUEUED:
        raise JobAlreadyFinished(
            f"The job already finished as {job.status}; it cannot be cancelled.",
            status=job.status,
        )
    job.finished_at = timezone.now()
    Job.objects.filter(pk=job.pk).transition(CANCEL, finished_at=job.finished_at)
    job.status = CANCEL.target
    audit_record(
        actor=actor,
        action=AuditAction.JOB_CANCEL,
        target=job,
        customer=customer.pk,
        changes={"status": [JobStatus.QUEUED, JobStatus.CANCELLED]},
    )
    return job


def jobs_to_stop(agent: Agent) -> list[int]:
    """The running jobs this agent was told to stop (what its heartbeat answers in
    `cancel`). Read only when its facts say there are some, so a steady beat reads nothing."""
    if agent.facts is None or not agent.facts.stop_jobs:
        return []
    return list(
        Job.objects.filter(
            agent_id=agent.pk, status=JobStatus.RUNNING, stop_requested_at__isnull=False
        )
        .values_list("pk", flat=True)
        .order_by("pk")[:1000]
    )
