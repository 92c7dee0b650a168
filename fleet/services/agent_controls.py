"""What operators do to a running agent besides retiring it: pause it (it heartbeats and
finishes its running jobs but claims nothing), drain it (paused once its running jobs
finish), resume it — by hand or when the pause's timeout passes. Every move is a row of
AGENT_TRANSITIONS made with `transition()`; claims refuse a held agent in the claim's own
statement (it may claim only when online), so a pause is exact from its commit on."""

from datetime import datetime, timedelta

from django.db import transaction
from django.db.models import Exists, OuterRef
from django.utils import timezone

from fleet import policy
from fleet.agent_cache import agent_facts_changed
from fleet.choices import AgentStatus, AuditAction, Channel, JobStatus
from fleet.errors import AgentStateConflict, InvalidVersion
from fleet.labels import labels_check, labels_text
from fleet.models import Agent, Job, Release
from fleet.models.agents import DRAIN, DRAINED, DRAINING, PAUSE, RESUME
from fleet.services.audit import SYSTEM, Actor, audit_record, audit_record_rows
from fleet.versions import SemVer

CHUNK = 5000


def _running(agent_pk: OuterRef) -> Exists:
    return Exists(Job.objects.filter(agent=agent_pk, status=JobStatus.RUNNING))


@transaction.atomic
def agent_pause(
    *,
    agent: Agent,
    reason: str,
    timeout: timedelta | None = None,
    drain: bool = False,
    actor: Actor,
) -> str:
    """Hold the agent: from now on its claims get nothing; it keeps heartbeating and
    finishes what it runs. `drain`: it is draining while it still runs jobs, and paused
    when the last one finishes (at once when it runs none). With `timeout`, beat resumes
    it then. Pausing a paused agent again changes its reason and timeout. Returns the
    status it is in."""
    reason = reason.replace("\x00", "").strip()[: policy.AGENT_PAUSE_REASON_MAX]
    if not reason:
        raise AgentStateConflict("Say why the agent is paused: the reason is audited.")
    until = timezone.now() + timeout if timeout else None
    locked = Agent.objects.select_for_update().filter(pk=agent.pk).first()
    if locked is None:
        raise AgentStateConflict("No such agent.")
    before = locked.status
    fields = {"paused_reason": reason, "paused_until": until}
    if before in (AgentStatus.PAUSED, DRAINING) and (not drain or before == DRAINING):
        # Already held: a new reason or timeout, the status as it is.
        Agent.objects.filter(pk=agent.pk).update(**fields)
        moved = before
    else:
        busy = Job.objects.filter(agent_id=agent.pk, status=JobStatus.RUNNING).exists()
        move = DRAIN if drain and busy else PAUSE
        if not Agent.objects.filter(pk=agent.pk).transition(move, **fields):
            raise AgentStateConflict(
                f"{locked.name} is {locked.get_status_display().lower()}; only an online or "
                "offline agent can be paused.",
                status=before,
            )
        moved = move.target
    agent_facts_changed(agent_ids=[agent.pk])  # every web process answers its beats anew
    audit_record(
        actor=actor,
        action=AuditAction.AGENT_DRAIN if moved == DRAINING else AuditAction.AGENT_PAUSE,
        target=locked,
        customer=locked.customer_id,
        changes={
            "status": [before, moved],
            "reason": [locked.paused_reason or None, reason],
            "until": [None, until.isoformat() if until else None],
        },
    )
    agent.status, agent.paused_reason, agent.paused_until = moved, reason, until
    return moved


@transaction.atomic
def agent_resume(*, agent: Agent, actor: Actor) -> bool:
    """Let a paused or draining agent claim again. False when it was not held (a resume
    called twice)."""
    locked = Agent.objects.select_for_update().filter(pk=agent.pk).first()
    if locked is None or not Agent.objects.filter(pk=agent.pk).transition(
        RESUME, paused_reason="", paused_until=None
    ):
        return False
    agent_facts_changed(agent_ids=[agent.pk])
    audit_record(
        actor=actor,
        action=AuditAction.AGENT_RESUME,
        target=locked,
        customer=locked.customer_id,
        changes={"status": [locked.status, RESUME.target], "reason": [locked.paused_reason, None]},
    )
    agent.status, agent.paused_reason, agent.paused_until = RESUME.target, "", None
    return True


@transaction.atomic
def agent_labels_set(*, agent: Agent, labels: dict[str, str], actor: Actor) -> bool:
    """Replace the agent's labels (an operator's edit); its next claims and heartbeats
    follow them. False when they were the same already."""
    labels = labels_check(labels)
    locked = Agent.objects.select_for_update().filter(pk=agent.pk).first()
    if locked is None or locked.labels == labels:
        return False
    Agent.objects.filter(pk=agent.pk).update(labels=labels)
    agent_facts_changed(agent_ids=[agent.pk])  # heartbeats count jobs_pending by them
    audit_record(
        actor=actor,
        action=AuditAction.AGENT_LABELS,
        target=locked,
        customer=locked.customer_id,
        changes={"labels": [labels_text(locked.labels) or None, labels_text(labels) or None]},
    )
    agent.labels = labels
    return True


@transaction.atomic
def agent_update_pin_set(
    *, agent: Agent, channel: str = "", version: str | None = None, actor: Actor
) -> bool:
    """Pin the agent to an update channel ("": its license's) and, or, to exactly one
    published, unyanked release (None: no pin). Its heartbeat's update_available follows
    at once; waves to another version leave it out. False when nothing changed."""
    if channel and channel not in Channel.values:
        raise InvalidVersion(f"Unknown channel {channel[:40]!r}.", field="channel")
    pinned: SemVer | None = None
    if version:
        try:
            pinned = SemVer(version)
        except (ValueError, TypeError) as exc:
            raise InvalidVersion(f"{version[:80]!r} is not a version.", field="version") from exc
        if not Release.objects.filter(version=pinned, yanked=False).exists():
            raise InvalidVersion(
                f"No published (unyanked) release {pinned} to pin to.", field="version"
            )
    locked = Agent.objects.select_for_update().holding_seat().filter(pk=agent.pk).first()
    if locked is None:  # a person's request: not the agent's secret refused (AgentGone)
        raise AgentStateConflict(
            f"{agent.name} is decommissioned: it runs no updates to pin.", field="agent_id"
        )
    if (locked.update_channel, locked.pinned_version) == (channel, pinned):
        return False
    Agent.objects.filter(pk=agent.pk).update(update_channel=channel, pinned_version=pinned)
    agent_facts_changed(agent_ids=[agent.pk])  # its update_available follows the pin
    audit_record(
        actor=actor,
        action=AuditAction.AGENT_UPDATE_PIN,
        target=locked,
        customer=locked.customer_id,
        changes={
            "update_channel": [locked.update_channel or None, channel or None],
            "pinned_version": [
                str(locked.pinned_version) if locked.pinned_version else None,
                str(pinned) if pinned else None,
            ],
        },
    )
    agent.update_channel, agent.pinned_version = channel, pinned
    return True


def agents_drained(*, agent_ids: list[int] | None = None) -> int:
    """Draining agents (these, or all) that run no job any more become paused: one UPDATE
    and one audit INSERT. Called where a job stops running, and by beat's sweep (which
    catches a drain that raced its agent's last report)."""
    draining = Agent.objects.filter(status=DRAINING)
    if agent_ids is not None:
        draining = draining.filter(pk__in=agent_ids)
    ids = list(
        draining.exclude(_running(OuterRef("pk"))).values_list("pk", flat=True).order_by()[:CHUNK]
    )
    if not ids:
        return 0
    with transaction.atomic():
        moved = (
            Agent.objects.filter(pk__in=ids).exclude(_running(OuterRef("pk"))).transition(DRAINED)
        )
        agent_facts_changed(agent_ids=ids)
        audit_record_rows(
            actor=SYSTEM,
            action=AuditAction.AGENT_DRAINED,
            model=Agent,
            ids=ids,
            repr_sql="name",
            condition=f"status = '{DRAINED.target}'",
            changes={"status": [DRAINING, DRAINED.target]},
        )
    return moved


def agents_resume_due(*, now: datetime | None = None) -> int:
    """Paused or draining agents whose pause timed out claim again (beat's sweep)."""
    now = now or timezone.now()
    ids = list(
        Agent.objects.filter(status__in=RESUME.sources, paused_until__lte=now)
        .values_list("pk", flat=True)
        .order_by()[:CHUNK]
    )
    if not ids:
        return 0
    with transaction.atomic():
        moved = Agent.objects.filter(pk__in=ids, paused_until__lte=now).transition(
            RESUME, paused_reason="", paused_until=None
        )
        agent_facts_changed(agent_ids=ids)
        audit_record_rows(
            actor=SYSTEM,
            action=AuditAction.AGENT_RESUME,
            model=Agent,
            ids=ids,
            repr_sql="name",
            condition=f"status = '{RESUME.target}' AND paused_until IS NULL",
            changes={"status": ["paused", RESUME.target], "reason": ["the pause timed out", None]},
        )
    return moved
