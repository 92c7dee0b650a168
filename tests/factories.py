"""Factories: model-bakery with the fields that need real values (versions, digests)."""

import itertools
from datetime import timedelta
from typing import Any

from django.utils import timezone
from model_bakery import baker

from fleet.choices import AgentRole, AgentStatus
from fleet.models import Agent, Customer, Host, License, Release
from fleet.secrets import SecretKind, secret_mint

_seq = itertools.count(1)


def customer(**kwargs: Any) -> Customer:
    n = next(_seq)
    kwargs.setdefault("name", f"Customer {n}")
    kwargs.setdefault("slug", f"customer-{n}")
    return baker.make(Customer, **kwargs)


def license(customer: Customer, **kwargs: Any) -> License:
    kwargs.setdefault("max_agents", 10)
    kwargs.setdefault("max_concurrent_tasks_per_agent", 2)
    kwargs.setdefault("valid_from", (timezone.now() - timedelta(days=1)).replace(microsecond=0))
    kwargs.setdefault("valid_until", None)
    return baker.make(License, customer=customer, is_current=True, **kwargs)


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


def release(version: str, **kwargs: Any) -> Release:
    return baker.make(Release, version=version, **kwargs)


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
