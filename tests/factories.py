"""Factories: model-bakery with the fields that need real values (versions, digests).

One plain function per model the tests create, taking the objects a row belongs to
first and any field as a keyword. They write rows directly, without audit events or
follow-up work: a test whose subject is a service calls that service instead."""

import itertools
from datetime import datetime, timedelta
from typing import Any

from django.contrib.auth import get_user_model
from django.utils import timezone
from model_bakery import baker

from fleet.choices import (
    AgentRole,
    AgentStatus,
    AnomalyKind,
    AuditAction,
    MemberRole,
    RollupResolution,
)
from fleet.models import (
    ActivationToken,
    Agent,
    AgentFactsChange,
    Anomaly,
    AuditEvent,
    Customer,
    CustomerApiKey,
    FleetRollup,
    FleetSnapshot,
    Host,
    Job,
    License,
    Membership,
    Release,
    Rollout,
    RolloutTarget,
    SweepState,
)
from fleet.secrets import SecretKind, secret_mint
from fleet.services.sweeps import STALE_SWEEP

_seq = itertools.count(1)


def customer(**kwargs: Any) -> Customer:
    n = next(_seq)
    kwargs.setdefault("name", f"Customer {n}")
    kwargs.setdefault("slug", f"customer-{n}")
    return baker.make(Customer, **kwargs)


def membership(customer: Customer, user: Any = None, **kwargs: Any) -> Membership:
    """`user` (a new one when not given) as a member of `customer`, a viewer unless
    `role` says otherwise."""
    if user is None:
        user = get_user_model().objects.create_user(f"member-{next(_seq)}")
    kwargs.setdefault("role", MemberRole.VIEWER)
    return baker.make(Membership, customer=customer, user=user, **kwargs)


def license(customer: Customer, **kwargs: Any) -> License:
    kwargs.setdefault("max_agents", 10)
    kwargs.setdefault("max_concurrent_tasks_per_agent", 2)
    kwargs.setdefault("valid_from", (timezone.now() - timedelta(days=1)).replace(microsecond=0))
    kwargs.setdefault("valid_until", None)
    kwargs.setdefault("is_current", True)
    return baker.make(License, customer=customer, **kwargs)


def host(customer: Customer, **kwargs: Any) -> Host:
    n = next(_seq)
    kwargs.setdefault("hostname", f"host-{n}")
    kwargs.setdefault("machine_id", f"machine-{n}")
    kwargs.setdefault("zone", "zone-a")
    return baker.make(Host, customer=customer, **kwargs)


def agent(customer: Customer, host: Host | None = None, **kwargs: Any) -> Agent:
    n = next(_seq)
    minted = secret_mint(SecretKind.AGENT_SECRET)
    kwargs.setdefault("name", f"agent-{n}")
    kwargs.setdefault("role", AgentRole.CODER)
    kwargs.setdefault("unit_name", f"agentina@{n}")
    kwargs.setdefault("state_dir", f"/var/lib/agentina/{n}")
    kwargs.setdefault("version", "1.0.0")
    kwargs.setdefault("status", AgentStatus.ONLINE)
    kwargs.setdefault("last_heartbeat_at", timezone.now())
    kwargs.setdefault("activation_token", None)
    if kwargs["status"] == AgentStatus.DECOMMISSIONED:
        kwargs.setdefault("decommissioned_at", timezone.now())
    return baker.make(
        Agent,
        customer=customer,
        host=host or globals()["host"](customer),
        secret_prefix=minted.display_prefix,
        secret_digest=minted.digest,
        **kwargs,
    )


def agent_row(customer: Customer, host: Host, **kwargs: Any) -> Agent:
    """An unsaved agent for bulk_create (large fleets in query-count tests)."""
    n = next(_seq)
    minted_digest = f"{n:064x}"
    return Agent(
        customer=customer,
        host=host,
        name=f"bulk-{n}",
        role=kwargs.pop("role", AgentRole.CODER),
        unit_name=f"agentina@{n}",
        state_dir=f"/srv/{n}",
        version=kwargs.pop("version", "1.0.0"),
        status=kwargs.pop("status", AgentStatus.ONLINE),
        secret_prefix="agtn_agt_bulk",
        secret_digest=minted_digest,
        **kwargs,
    )


def agent_facts_change(**kwargs: Any) -> AgentFactsChange:
    """A change record as another web process writes it (agent_id or customer_id)."""
    kwargs.setdefault("changed_at", timezone.now())
    return baker.make(AgentFactsChange, **kwargs)


def release(version: str, **kwargs: Any) -> Release:
    return baker.make(Release, version=version, **kwargs)


def token(customer: Customer, **kwargs: Any) -> ActivationToken:
    """An outstanding activation token row, valid for a week. Its secret is not kept:
    a test that redeems a token mints it with token_mint."""
    minted = secret_mint(SecretKind.ACTIVATION_TOKEN)
    kwargs.setdefault("display_prefix", minted.display_prefix)
    kwargs.setdefault("digest", minted.digest)
    kwargs.setdefault("expires_at", timezone.now() + timedelta(days=7))
    return baker.make(ActivationToken, customer=customer, **kwargs)


def api_key(customer: Customer, **kwargs: Any) -> CustomerApiKey:
    """An API key row. Its secret is not kept: a test that authenticates with a key mints
    it with api_key_mint."""
    minted = secret_mint(SecretKind.API_KEY)
    kwargs.setdefault("name", f"key-{next(_seq)}")
    kwargs.setdefault("display_prefix", minted.display_prefix)
    kwargs.setdefault("digest", minted.digest)
    return baker.make(CustomerApiKey, customer=customer, **kwargs)


def job(customer: Customer | int, **kwargs: Any) -> Job:
    """A job of `customer` (or its id), queued for a coder unless told otherwise. A
    running job needs its `agent`."""
    if isinstance(customer, Customer):
        kwargs["customer"] = customer
    else:
        kwargs["customer_id"] = customer
    kwargs.setdefault("role", AgentRole.CODER)
    return baker.make(Job, **kwargs)


def job_row(customer: Customer, **kwargs: Any) -> Job:
    """An unsaved job for bulk_create (a day of history in rollout gates)."""
    kwargs.setdefault("role", AgentRole.CODER)
    return Job(customer=customer, **kwargs)


def anomaly(customer: Customer, **kwargs: Any) -> Anomaly:
    """An open finding row, written directly (anomaly_open folds and audits)."""
    kwargs.setdefault("kind", AnomalyKind.AGENT_REPORTED)
    kwargs.setdefault("fingerprint", f"finding-{next(_seq)}")
    kwargs.setdefault("message", "Something happened.")
    return baker.make(Anomaly, customer=customer, **kwargs)


def rollout(customer: Customer, release: Release, **kwargs: Any) -> Rollout:
    """A rollout row in the state given (a draft unless told), without its plan:
    rollout_start plans and offers a real wave."""
    return baker.make(Rollout, customer=customer, release=release, **kwargs)


def rollout_target(rollout: Rollout, agent: Agent, **kwargs: Any) -> RolloutTarget:
    kwargs.setdefault("from_version", agent.version)
    return baker.make(RolloutTarget, rollout=rollout, agent=agent, **kwargs)


def snapshot(customer: Customer, taken_at: datetime | None = None, **kwargs: Any) -> FleetSnapshot:
    """The customer's numbers for one minute (this one unless `taken_at` says)."""
    taken_at = taken_at or timezone.now().replace(second=0, microsecond=0)
    return baker.make(FleetSnapshot, customer=customer, taken_at=taken_at, **kwargs)


def day_ago_hours(
    customer: Customer | int, now: datetime, days: range, jobs_completed: int, **kwargs: Any
) -> None:
    """For each of `days`, the hourly rollups of the two clock hours that the hour up to
    `now`'s time of day spans: a throughput baseline of `jobs_completed` on each day."""
    key = "customer" if isinstance(customer, Customer) else "customer_id"
    for day in days:
        later = (now - timedelta(days=day)).replace(minute=0, second=0, microsecond=0)
        for start in (later - timedelta(hours=1), later):
            baker.make(
                FleetRollup,
                **{key: customer},
                resolution=RollupResolution.HOUR,
                period_start=start,
                minutes=60,
                jobs_completed=jobs_completed,
                **kwargs,
            )


def sweep_state(name: str = STALE_SWEEP, **kwargs: Any) -> SweepState:
    """A sweep that last ran now (no gap, so no grace) unless `last_run_at` says."""
    kwargs.setdefault("last_run_at", timezone.now())
    return baker.make(SweepState, name=name, **kwargs)


def audit_event(customer: Customer | None, **kwargs: Any) -> AuditEvent:
    """An audit row as a service writes it (tests of the log's pages and exports)."""
    kwargs.setdefault("action", AuditAction.JOB_SUBMIT)
    kwargs.setdefault("actor_label", "system")
    kwargs.setdefault("target_type", "fleet.job")
    kwargs.setdefault("target_id", "1")
    kwargs.setdefault("target_repr", "job 1")
    return baker.make(AuditEvent, customer=customer, **kwargs)


def started_wave(customer: Customer, *, agents: int = 8) -> Rollout:
    """A licensed fleet of `agents` on 1.0.0 across two hosts in two zones, every role,
    and a wave to 1.1.0 started on it (its canary offered), through the real service."""
    from fleet.services.audit import SYSTEM
    from fleet.services.rollouts import rollout_start

    globals()["license"](customer)
    target = release("1.1.0")
    hosts = [host(customer, zone=zone) for zone in ("a", "b")]
    for i in range(agents):
        agent(customer, hosts[i % 2], role=AgentRole.values[i % 4])
    return rollout_start(customer=customer, release=target, actor=SYSTEM)
