"""Agents: activation with a single-use token, heartbeats, upgrade reports, retirement."""

from dataclasses import dataclass
from datetime import datetime, timedelta

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import F, Q
from django.utils import timezone

from fleet.agent_cache import agent_facts_changed
from fleet.choices import (
    AgentStatus,
    AnomalyKind,
    AnomalySeverity,
    AuditAction,
    JobStatus,
    TokenStatus,
    UpgradeOutcome,
)
from fleet.errors import (
    AgentGone,
    LicenseMissing,
    RoleMismatch,
    SeatLimitReached,
    TokenAlreadyRedeemed,
    TokenExpired,
    TokenRevoked,
    TokenUnknown,
    UnitInUse,
)
from fleet.models import ActivationToken, Agent, Host, Job, License
from fleet.models.agents import (
    COME_BACK,
    DECOMMISSION,
    FINISH_UPGRADE,
    SEAT_HOLDING,
    START_UPGRADE,
    agent_status_after,
)
from fleet.models.tokens import REDEEM
from fleet.secrets import (
    SecretKind,
    secret_digest,
    secret_is_well_formed,
    secret_matches,
    secret_mint,
)
from fleet.selectors import customer_active_agent_count, license_current
from fleet.services.anomalies import (
    agent_offline_fingerprint,
    anomalies_resolve,
    anomaly_open,
    anomaly_resolve_fingerprint,
)
from fleet.services.audit import SYSTEM, Actor, audit_record
from fleet.services.jobs import jobs_requeue
from fleet.services.licenses import license_require_admitting
from fleet.services.presence import presence_buffer
from fleet.services.rollouts import rollout_record_result, rollout_targets_drop
from fleet.versions import SemVer

# A lost activation answer can be recovered by the caller that sent it (its install key
# proves it) this long after the first redemption; later, a redeemed token is no
# credential at all.
RETRY_WINDOW = timedelta(minutes=15)


UPGRADE_ACTIONS = {
    UpgradeOutcome.SUCCEEDED: AuditAction.AGENT_UPGRADE_SUCCEEDED,
    UpgradeOutcome.SMOKE_CHECK_FAILED: AuditAction.AGENT_UPGRADE_SMOKE_CHECK_FAILED,
    UpgradeOutcome.START_FAILED: AuditAction.AGENT_UPGRADE_START_FAILED,
}


@dataclass(frozen=True)
class Activation:
    agent: Agent
    secret: str  # shown once, in the activation response
    license: License
    created: bool  # False: the same machine and unit retried and got its agent back


@dataclass(frozen=True)
class MachineIdentity:
    machine_id: str
    hostname: str
    zone: str
    unit_name: str
    state_dir: str
    memory_mb: int | None = None


def agent_activate(
    *,
    token: str,
    machine: MachineIdentity,
    role: str,
    version: SemVer,
    name: str = "",
    install_key: str = "",
    ip_address: str | None = None,
) -> Activation:
    """Redeem a single-use token: the first machine wins, a retry by the same caller
    (proved by its install key) gets its agent back with a new secret, every other
    attempt is refused and recorded. Any refusal leaves the token as it was."""
    if not secret_is_well_formed(token, SecretKind.ACTIVATION_TOKEN):
        raise TokenUnknown("That activation token does not exist. Check it was copied whole.")
    refusal: TokenAlreadyRedeemed | None = None
    with transaction.atomic():
        row = (
            ActivationToken.objects.select_for_update().filter(digest=secret_digest(token)).first()
        )
        if row is None:
            raise TokenUnknown("That activation token does not exist. Check it was copied whole.")
        now = timezone.now()
        if row.status == TokenStatus.REDEEMED:
            # Locked, so a decommission either went first (and is seen) or waits.
            holder = (
                Agent.objects.select_for_update(of=("self",))
                .select_related("host")
                .filter(activation_token=row)
                .first()
            )
            if (
                holder is not None
                and holder.status in SEAT_HOLDING
                and _proves_first_caller(holder, machine, install_key)
                and row.redeemed_at is not None
                and now - row.redeemed_at <= RETRY_WINDOW
            ):
                return _reactivate(holder, ip_address=ip_address)
            refusal = _refuse_second_redemption(row, holder, machine, ip_address)
        elif row.status == TokenStatus.REVOKED:
            raise TokenRevoked("This activation token was revoked. Mint a new one.")
        elif row.effective_status == TokenStatus.EXPIRED:
            raise TokenExpired(
                f"This activation token expired at {row.expires_at:%Y-%m-%d %H:%M} UTC. "
                "Mint a new one.",
                expired_at=row.expires_at.isoformat(),
            )
        else:
            return _register(row, machine, role, version, name, now, ip_address, install_key)
    assert refusal is not None
    raise refusal


def _proves_first_caller(holder: Agent, machine: MachineIdentity, install_key: str) -> bool:
    """Whether a retry comes from the caller whose answer was lost: the same machine and
    unit, and the install key only that caller had (it never left the host but in the
    first request; the server kept its digest). Everything else in the request (machine
    id, hostname, unit) may be known to whoever holds a leaked token."""
    return (
        bool(install_key)
        and bool(holder.install_key_digest)
        and secret_matches(install_key, holder.install_key_digest)
        and holder.host.machine_id == machine.machine_id
        and holder.unit_name == machine.unit_name
    )


def _refuse_second_redemption(
    row: ActivationToken, holder: Agent | None, machine: MachineIdentity, ip: str | None
) -> TokenAlreadyRedeemed:
    """Record the refused attempt (it commits) and say who holds the token."""
    ActivationToken.objects.filter(pk=row.pk).update(refused_attempts=F("refused_attempts") + 1)
    claimed_by = holder.host.hostname if holder else "an agent since retired"
    claimed_at = row.redeemed_at or row.created_at
    anomaly_open(
        customer=row.customer_id,
        kind=AnomalyKind.TOKEN_REUSE,
        fingerprint=f"token_reuse:{row.pk}",
        severity=AnomalySeverity.WARNING,
        agent_id=holder.pk if holder else None,
        message=(
            f"Activation token {row.display_prefix}… was presented again by "
            f"{machine.hostname} ({machine.machine_id}) after {claimed_by} claimed it. "
            "Tokens are single-use: mint one per agent."
        ),
        actor=Actor(label=f"machine:{machine.hostname}", ip_address=ip),
    )
    audit_record(
        actor=Actor(label=f"machine:{machine.hostname}"[:200], ip_address=ip),
        action=AuditAction.TOKEN_REDEMPTION_REFUSED,
        target=row,
        customer=row.customer_id,
        changes={"machine_id": [None, machine.machine_id], "hostname": [None, machine.hostname]},
    )
    return TokenAlreadyRedeemed(
        f"This token was already claimed by host {claimed_by} at "
        f"{claimed_at:%Y-%m-%d %H:%M:%S} UTC. Tokens are single-use: mint one per agent.",
        redeemed_at=claimed_at.isoformat(),
        redeemed_by_host=claimed_by,
    )


def _usable_license(customer_id: int, now: datetime) -> License:
    """The customer's current license, row-locked so seat counting is serialized."""
    license = (
        License.objects.select_for_update().filter(customer_id=customer_id, is_current=True).first()
    )
    return license_require_admitting(license, now=now)


def _register(
    row: ActivationToken,
    machine: MachineIdentity,
    role: str,
    version: SemVer,
    name: str,
    now: datetime,
    ip: str | None,
    install_key: str,
) -> Activation:
    license = _usable_license(row.customer_id, now)
    active = customer_active_agent_count(row.customer_id)
    if active >= license.max_agents:
        raise SeatLimitReached(
            f"All {license.max_agents} seats of the license are taken. Decommission an agent "
            "or raise the license's max_agents; this token stays valid until then.",
            max_agents=license.max_agents,
            active_agents=active,
        )
    if row.role and row.role != role:
        raise RoleMismatch(
            f"This token was minted for a {row.role} agent, not a {role}.", field="role"
        )
    # A second agent on a known host updates only what it reported.
    reported = {"hostname": machine.hostname, "last_seen_at": now}
    if machine.zone:
        reported["zone"] = machine.zone
    if machine.memory_mb is not None:
        reported["memory_mb"] = machine.memory_mb
    host, _ = Host.objects.update_or_create(
        customer_id=row.customer_id, machine_id=machine.machine_id, defaults=reported
    )
    minted = secret_mint(SecretKind.AGENT_SECRET)
    try:
        with transaction.atomic():
            agent = Agent.objects.create(
                customer_id=row.customer_id,
                host=host,
                activation_token=row,
                name=(name or f"{machine.unit_name}@{machine.hostname}")[:128],
                role=role,
                unit_name=machine.unit_name,
                state_dir=machine.state_dir,
                version=version,
                status=AgentStatus.ONLINE,
                secret_prefix=minted.display_prefix,
                secret_digest=minted.digest,
                install_key_digest=secret_digest(install_key) if install_key else "",
                last_heartbeat_at=now,
            )
    except IntegrityError as exc:
        raise UnitInUse(
            f"Host {machine.hostname} already runs an agent with unit {machine.unit_name} or "
            f"state dir {machine.state_dir}. Give each agent on a host its own.",
            field="unit_name",
        ) from exc
    ActivationToken.objects.filter(pk=row.pk).transition(REDEEM, redeemed_at=now)
    audit_record(
        actor=Actor.for_agent(agent, ip),
        action=AuditAction.AGENT_ACTIVATE,
        target=agent,
        customer=row.customer_id,
        changes={"token": [row.display_prefix, None], "host": [None, host.hostname]},
    )
    return Activation(agent=agent, secret=minted.plaintext, license=license, created=True)


def _reactivate(agent: Agent, *, ip_address: str | None) -> Activation:
    """The same machine and unit retried (its first answer was lost): a fresh secret."""
    license = license_current(agent.customer_id)
    if license is None:
        raise LicenseMissing("This customer has no license. Contact Agentina sales.")
    secret = _set_new_secret(agent)
    audit_record(
        actor=Actor.for_agent(agent, ip_address),
        action=AuditAction.AGENT_REACTIVATE,
        target=agent,
        customer=agent.customer_id,
        changes={"secret_prefix": ["(rotated)", agent.secret_prefix]},
    )
    return Activation(agent=agent, secret=secret, license=license, created=False)


def _set_new_secret(agent: Agent) -> str:
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
    secret = _set_new_secret(agent)
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
) -> datetime:
    """Record that the agent is alive, by the server's clock.

    A steady heartbeat (same version and status, leases not yet due, no new clock skew)
    goes to the presence buffer and touches no database. Otherwise it is one UPDATE:
    job leases are extended once half a lease has passed, and state changes (back
    online, a new version, told to upgrade, clock skew appearing) write their extra rows
    at once and make every web process re-read the agent."""
    now = timezone.now()
    offset = round((sent_at - now).total_seconds()) if sent_at else None
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
    if steady and presence_buffer(agent_id=agent.pk, at=now, load=load, offset=offset):
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
    # The agent may have been decommissioned since this process authenticated it (its
    # cached copy is up to AGENT_CACHE_POLL_SECONDS old): then nothing is written.
    if not Agent.objects.filter(pk=agent.pk).holding_seat().update(**updates):
        raise AgentGone()
    if renew:
        Job.objects.filter(
            agent_id=agent.pk, status=JobStatus.RUNNING, pk__in=running_job_ids
        ).update(lease_expires_at=now + settings.JOB_LEASE)
    if changed or renew:  # every process re-reads it (leases_renewed_at included)
        agent_facts_changed(agent_ids=[agent.pk])
    if came_back or version != agent.version:
        _record_state_change(agent, version, came_back, ip_address)
    if skew_appeared:
        anomaly_open(
            customer=agent.customer_id,
            kind=AnomalyKind.CLOCK_SKEW,
            fingerprint=f"clock_skew:{agent.pk}",
            severity=AnomalySeverity.INFO,
            agent_id=agent.pk,
            message=f"{agent.name}'s clock is {offset:+d} s off the server's. The Control "
            "Plane uses its own time; fix NTP on the host so logs line up.",
        )
    agent.last_heartbeat_at = now
    return now


def _is_skewed(offset: int | None) -> bool:
    limit = settings.AGENT_CLOCK_SKEW_TOLERANCE.total_seconds()
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
        )
    if version != agent.version:
        changes["version"] = [str(agent.version), str(version)]
    audit_record(
        actor=Actor.for_agent(agent, ip_address),
        action=AuditAction.AGENT_HEARTBEAT_STATE,
        target=agent,
        customer=agent.customer_id,
        changes=changes,
    )


@transaction.atomic
def agent_record_upgrade_result(
    *,
    agent: Agent,
    outcome: str,
    from_version: SemVer,
    to_version: SemVer,
    detail: str = "",
    ip_address: str | None = None,
) -> None:
    """An agent reports how applying a version went. A rollback opens a critical finding,
    and if a rollout asked for the version, moves it on (a rollback pauses it)."""
    succeeded = outcome == UpgradeOutcome.SUCCEEDED
    # First the agent's row (locked until commit, so a decommission waits or went first).
    if not Agent.objects.filter(pk=agent.pk).transition(
        FINISH_UPGRADE, version=to_version if succeeded else from_version
    ):
        raise AgentGone()
    rollout_record_result(agent=agent, outcome=outcome, to_version=to_version, detail=detail)
    agent_facts_changed(agent_ids=[agent.pk])
    if not succeeded:
        anomaly_open(
            customer=agent.customer_id,
            kind=AnomalyKind.ROLLBACK,
            fingerprint=f"rollback:{agent.pk}:{to_version}",
            severity=AnomalySeverity.CRITICAL,
            agent_id=agent.pk,
            message=f"{agent.name} could not move {from_version} → {to_version} ({outcome}) "
            f"and rolled back. {detail}".strip(),
        )
    audit_record(
        actor=Actor.for_agent(agent, ip_address),
        action=UPGRADE_ACTIONS[UpgradeOutcome(outcome)],
        target=agent,
        customer=agent.customer_id,
        changes={"version": [str(from_version), str(to_version)], "detail": [None, detail]},
    )


@transaction.atomic
def agent_decommission(*, agent: Agent, actor: Actor = SYSTEM) -> bool:
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
