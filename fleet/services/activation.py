"""Activation: a single-use token becomes an agent and its secret, once; a lost answer is
recovered only by the caller that sent the request (its install key proves it)."""

from dataclasses import dataclass, field
from datetime import datetime

from django.db import IntegrityError, transaction
from django.db.models import F
from django.utils import timezone

from fleet import policy
from fleet.choices import (
    AgentStatus,
    AlertEventType,
    AnomalyKind,
    AnomalySeverity,
    AuditAction,
    TokenStatus,
)
from fleet.errors import (
    LicenseMissing,
    RoleMismatch,
    SeatLimitReached,
    TokenAlreadyRedeemed,
    TokenExpired,
    TokenRevoked,
    TokenUnknown,
    UnitInUse,
)
from fleet.models import ActivationToken, Agent, Host, License
from fleet.models.agents import (
    SEAT_HOLDING,
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
from fleet.services.agents import agent_secret_replace
from fleet.services.alerts import alert_emit, alerts_emit, license_near_cap_alert
from fleet.services.anomalies import (
    anomaly_open,
)
from fleet.services.audit import Actor, audit_record
from fleet.services.licenses import license_require_admitting
from fleet.versions import SemVer


@dataclass(frozen=True)
class Activation:
    agent: Agent
    secret: str  # shown once, in the activation response
    license: License
    created: bool  # False: the first caller retried (its install key proves it)


@dataclass(frozen=True)
class MachineIdentity:
    machine_id: str
    hostname: str
    zone: str
    unit_name: str
    state_dir: str
    memory_mb: int | None = None
    labels: dict[str, str] = field(default_factory=dict)  # what the agent reports


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
                and now - row.redeemed_at <= policy.ACTIVATION_RETRY_WINDOW
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
    alert_emit(
        customer=row.customer_id,
        type=AlertEventType.TOKEN_REUSED,
        # One event per token and machine: a machine retrying in a loop is one alert.
        dedup_key=f"token.reused:{row.pk}:{machine.machine_id}"[:200],
        data={
            "token": row.display_prefix,
            "token_id": row.pk,
            "hostname": machine.hostname,
            "machine_id": machine.machine_id,
            "ip_address": ip,
            "claimed_by_host": claimed_by,
            "claimed_at": claimed_at.isoformat(),
            "portal_path": "/portal/tokens/",
        },
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
                ephemeral=row.ephemeral,
                # Reported labels, then the token's (its minter's word wins on a key).
                labels={**machine.labels, **row.labels},
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
    near_cap = license_near_cap_alert(license, active + 1)
    if near_cap is not None:
        alerts_emit([near_cap], now=now)
    return Activation(agent=agent, secret=minted.plaintext, license=license, created=True)


def _reactivate(agent: Agent, *, ip_address: str | None) -> Activation:
    """The first caller retried (its answer was lost; its install key proves it): its agent
    back, with a fresh secret."""
    license = license_current(agent.customer_id)
    if license is None:
        raise LicenseMissing("This customer has no license. Contact Agentina sales.")
    secret = agent_secret_replace(agent=agent)
    audit_record(
        actor=Actor.for_agent(agent, ip_address),
        action=AuditAction.AGENT_REACTIVATE,
        target=agent,
        customer=agent.customer_id,
        changes={"secret_prefix": ["(rotated)", agent.secret_prefix]},
    )
    return Activation(agent=agent, secret=secret, license=license, created=False)
