"""Planning a wave: who is in it, in which batches (spread across roles, zones and hosts),
and starting it with its canary offered. Only owners and staff steer waves."""

import math
from collections import Counter, deque
from dataclasses import dataclass
from datetime import timedelta
from decimal import Decimal
from typing import Any

from django.db import IntegrityError, transaction
from django.db.models import Q
from django.utils import timezone

from fleet.agent_cache import agent_facts_changed
from fleet.choices import (
    ACTIVE_ROLLOUT_STATES,
    AgentRole,
    AuditAction,
    MemberRole,
    RolloutState,
    RolloutTargetState,
)
from fleet.errors import InvalidInput, NotAllowed, RolloutRefused
from fleet.labels import labels_check
from fleet.models import Agent, Customer, Membership, Release, Rollout, RolloutTarget
from fleet.policy import WAVE
from fleet.selectors.agents import agent_follows_release, update_pin_rules, with_label
from fleet.services.audit import Actor, audit_record

ALL_AT_ONCE_REASON = (
    "Upgrading the whole fleet at once is refused: one bad release would stop every agent "
    "together. A wave upgrades one canary and soaks it, then batches of at most a part of "
    "the fleet, each watched before the next."
)


def require_operator(actor: Actor, customer_id: int) -> None:
    """Owners of the customer and staff steer waves; everyone else is refused."""
    user = actor.user
    if user is None:  # the Control Plane itself (beat)
        return
    if user.is_staff:
        return
    if Membership.objects.filter(
        user=user, customer_id=customer_id, role=MemberRole.OWNER
    ).exists():
        return
    raise NotAllowed("Only the customer's owners and Agentina staff steer upgrade waves.")


def _groups(agent: Agent) -> list[tuple[str, Any]]:
    return [("role", agent.role), ("zone", agent.host.zone), ("host", agent.host_id)]


def plan_batches(members: list[Agent], fleet: list[Agent], fraction: Decimal) -> list[list[Agent]]:
    """Split `members` into batches of ceil(fraction * members), never putting every agent
    of a role, a zone or a host (counted over the whole active fleet) in one batch, so the
    rest keep serving while it upgrades. Members are taken spread across zones and hosts."""
    if not members:
        return []
    size = max(1, math.ceil(Decimal(len(members)) * fraction))
    fleet_counts = Counter(key for agent in fleet for key in _groups(agent))
    # Spread: round-robin over zones, and within a zone over its hosts, so each batch
    # mixes them.
    by_zone: dict[str, dict[int, list[Agent]]] = {}
    for agent in sorted(members, key=lambda a: (a.host.zone, a.host_id, a.role, a.pk)):
        by_zone.setdefault(agent.host.zone, {}).setdefault(agent.host_id, []).append(agent)
    hosts_of = {zone: deque(hosts.values()) for zone, hosts in by_zone.items()}
    pool: list[Agent] = []
    while any(hosts_of.values()):
        for hosts in hosts_of.values():
            if hosts:
                queue = hosts.popleft()
                pool.append(queue.pop(0))
                if queue:
                    hosts.append(queue)
    batches: list[list[Agent]] = []
    while pool:
        batch: list[Agent] = []
        taken: Counter[tuple[str, Any]] = Counter()
        for agent in list(pool):
            if len(batch) == size:
                break
            keys = _groups(agent)
            if any(fleet_counts[k] >= 2 and taken[k] + 1 >= fleet_counts[k] for k in keys):
                continue
            batch.append(agent)
            taken.update(keys)
            pool.remove(agent)
        if not batch:  # only possible for groups of one, which nothing can spread
            batch.append(pool.pop(0))
        batches.append(batch)
    return batches


SCOPE_LISTS = ("role", "zone", "host")
SCOPE_LIST_MAX = 500


def rollout_scope_clean(scope: Any) -> dict[str, Any]:
    """A wave's scope as kept: {role: [...], zone: [...], host: [hostnames], labels:
    {key: value}}, only the parts given ({} is the whole fleet). An agent is in it when it
    matches one of each list given and has every label. Anything else is 422 naming
    `scope`."""
    if not scope:
        return {}

    def refuse(message: str) -> InvalidInput:
        return InvalidInput(f"Wave scope: {message}", field="scope")

    if not isinstance(scope, dict):
        raise refuse("an object of role, zone, host and labels.")
    unknown = set(scope) - {*SCOPE_LISTS, "labels"}
    if unknown:
        raise refuse(f"unknown part {sorted(map(str, unknown))[0][:40]!r}.")
    clean: dict[str, Any] = {}
    for key in SCOPE_LISTS:
        values = scope.get(key) or []
        if (
            not isinstance(values, list)
            or len(values) > SCOPE_LIST_MAX
            or not all(isinstance(v, str) and 0 < len(v) <= 255 and "\x00" not in v for v in values)
        ):
            raise refuse(f"{key} is a list of up to {SCOPE_LIST_MAX} names.")
        if key == "role" and not set(values) <= set(AgentRole.values):
            raise refuse(f"roles are {', '.join(AgentRole.values)}.")
        if values:
            clean[key] = sorted(set(values))
    try:
        labels = labels_check(scope.get("labels") or {})
    except ValueError as exc:
        raise refuse(str(exc)) from exc
    if labels:
        clean["labels"] = labels
    return clean


def _in_scope(agents: Any, scope: dict[str, Any]) -> Any:
    if scope.get("role"):
        agents = agents.filter(role__in=scope["role"])
    if scope.get("zone"):
        agents = agents.filter(host__zone__in=scope["zone"])
    if scope.get("host"):  # hostnames (older waves kept host ids)
        hosts = scope["host"]
        agents = agents.filter(
            Q(host__hostname__in=[h for h in hosts if isinstance(h, str)])
            | Q(host_id__in=[h for h in hosts if isinstance(h, int)])
        )
    for key, value in (scope.get("labels") or {}).items():  # every label (any database)
        agents = with_label(agents, "labels", f"{key}={value}")
    return agents


@dataclass(frozen=True)
class WavePlan:
    canary: Agent
    batches: list[list[Agent]]
    excluded: list[Agent]  # behind the release but offline now


def rollout_plan(
    *,
    customer: Customer,
    release: Release,
    actor: Actor,
    scope: dict[str, Any] | None = None,
    canary: Agent | None = None,
    batch_fraction: Decimal = WAVE.batch_fraction,
    all_at_once: bool = False,
) -> WavePlan:
    """Check a wave may start and plan it, writing nothing (forms call it to explain a
    refusal before anything is saved)."""
    require_operator(actor, customer.pk)
    scope = rollout_scope_clean(scope)
    if all_at_once or batch_fraction >= 1:
        raise RolloutRefused(ALL_AT_ONCE_REASON, field="batch_fraction")
    if batch_fraction <= 0:
        raise RolloutRefused("batch_fraction must be above 0.", field="batch_fraction")
    if release.yanked:
        raise RolloutRefused(f"Release {release.version} is yanked.", field="release")
    if Rollout.objects.filter(customer=customer, state__in=ACTIVE_ROLLOUT_STATES).exists():
        raise RolloutRefused(
            f"{customer} already has a rollout under way: finish, abort or wait for it."
        )
    target = release.version
    active = Agent.objects.for_customer(customer).holding_seat()
    fleet = list(active.select_related("host"))
    rules = update_pin_rules(Customer.objects.get(pk=customer.pk).update_pins)
    in_scope = [
        a
        for a in _in_scope(active, scope or {}).select_related("host")
        if agent_follows_release(a, release, rules)
    ]
    ahead = [a for a in in_scope if a.version > target]
    if ahead:
        names = ", ".join(f"{a.name} ({a.version})" for a in ahead[:5])
        raise RolloutRefused(
            f"{len(ahead)} agent(s) already run a newer version than {target}: {names}. "
            "A wave never downgrades.",
            field="release",
        )
    behind = [a for a in in_scope if a.version < target]
    now = timezone.now()
    online = [a for a in behind if a.heard_since(now)]
    if not online:
        raise RolloutRefused(f"No online agent is behind {target}: nothing to upgrade.")
    if canary is not None and canary not in online:
        raise RolloutRefused(
            f"{canary.name} cannot be the canary: it is not an online agent behind {target}.",
            field="canary_agent",
        )
    role_sizes = Counter(a.role for a in fleet)
    canary = canary or max(
        online, key=lambda a: (role_sizes[a.role], a.last_heartbeat_at or now, -a.pk)
    )
    return WavePlan(
        canary=canary,
        batches=plan_batches([a for a in online if a != canary], fleet, batch_fraction),
        excluded=[a for a in behind if a not in online],
    )


@transaction.atomic
def rollout_start(
    *,
    customer: Customer,
    release: Release,
    actor: Actor,
    reason: str = "",
    scope: dict[str, Any] | None = None,
    canary: Agent | None = None,
    batch_fraction: Decimal = WAVE.batch_fraction,
    canary_soak: timedelta = WAVE.canary_soak,
    batch_watch: timedelta = WAVE.batch_watch,
    throughput_drop_tolerance: Decimal = WAVE.throughput_drop_tolerance,
    online_ratio_floor: Decimal = WAVE.online_ratio_floor,
    acceptance_drop_tolerance: Decimal = WAVE.acceptance_drop_tolerance,
    cost_increase_tolerance: Decimal = WAVE.cost_increase_tolerance,
    all_at_once: bool = False,
) -> Rollout:
    """Freeze the wave's membership (active agents in scope behind the release; agents
    offline now are excluded, not failed), plan its batches and offer the canary."""
    scope = rollout_scope_clean(scope)
    plan = rollout_plan(
        customer=customer,
        release=release,
        actor=actor,
        scope=scope,
        canary=canary,
        batch_fraction=batch_fraction,
        all_at_once=all_at_once,
    )
    now = timezone.now()
    try:
        with transaction.atomic():
            rollout = Rollout.objects.create(
                customer=customer,
                release=release,
                state=RolloutState.CANARY,
                canary_soak=canary_soak,
                batch_fraction=batch_fraction,
                batch_watch=batch_watch,
                throughput_drop_tolerance=throughput_drop_tolerance,
                online_ratio_floor=online_ratio_floor,
                acceptance_drop_tolerance=acceptance_drop_tolerance,
                cost_increase_tolerance=cost_increase_tolerance,
                canary_agent=plan.canary,
                scope=scope or {},
                current_batch=0,
                batches_total=len(plan.batches),
                step_started_at=now,
                started_at=now,
                created_by=actor.user,
            )
    except IntegrityError as exc:  # another start won the race for the one active rollout
        raise RolloutRefused(
            f"{customer} already has a rollout under way: finish, abort or wait for it."
        ) from exc
    # Outside the customer's maintenance window the canary waits (beat offers it when
    # the window opens): no step starts outside it.
    open_now = Customer.objects.get(pk=customer.pk).in_maintenance_window(now)  # as saved
    RolloutTarget.objects.bulk_create(
        [
            RolloutTarget(
                rollout=rollout,
                agent=plan.canary,
                batch=0,
                from_version=plan.canary.version,
                state=RolloutTargetState.OFFERED if open_now else RolloutTargetState.PENDING,
                offered_at=now if open_now else None,
            )
        ]
        + [
            RolloutTarget(rollout=rollout, agent=agent, batch=number, from_version=agent.version)
            for number, batch in enumerate(plan.batches, start=1)
            for agent in batch
        ]
        + [
            RolloutTarget(
                rollout=rollout,
                agent=agent,
                from_version=agent.version,
                state=RolloutTargetState.EXCLUDED,
                detail="Offline when the wave began.",
            )
            for agent in plan.excluded
        ]
    )
    agent_facts_changed(customer_id=customer.pk)  # the canary's heartbeat carries the order
    audit_record(
        actor=actor,
        action=AuditAction.ROLLOUT_START,
        target=rollout,
        customer=customer.pk,
        changes={
            "release": [None, str(release.version)],
            "canary": [None, plan.canary.name],
            "batches": [None, [len(b) for b in plan.batches]],
            "excluded": [None, len(plan.excluded)],
            "scope": [None, scope or {}],
            "reason": [None, reason],
            **({} if open_now else {"waits_for_maintenance_window": [None, True]}),
        },
    )
    return rollout
