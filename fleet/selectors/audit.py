"""The audit trail as people read it: who acted (a person, an agent, an API key or the
Control Plane), what they did, and the machine's routine work kept apart from it."""

from django.db.models import (
    BigIntegerField,
    Case,
    Model,
    OuterRef,
    Q,
    QuerySet,
    Subquery,
    TextChoices,
    When,
)
from django.db.models.functions import Cast

from fleet.choices import AuditAction
from fleet.models import Anomaly, AuditEvent, Customer
from fleet.selectors.access import audit_list

# What agents do on their own, thousands of times a day: claims and completions, and the
# state their heartbeats bring (or their silence). The findings these raise (repeated
# failures, an agent offline) are events of their own and stay in view.
MACHINE_ACTIONS = frozenset(
    {
        AuditAction.JOB_CLAIM,
        AuditAction.JOB_SUCCEEDED,
        AuditAction.JOB_FAILED,
        AuditAction.JOB_REQUEUED,
        AuditAction.JOB_LEASE_EXPIRED,
        AuditAction.AGENT_HEARTBEAT_STATE,
        AuditAction.AGENT_OFFLINE,
    }
)


class ActorKind(TextChoices):
    """Who acted, as `fleet.services.audit.Actor` labels them: a signed-in user (the
    event keeps the user), an agent, an API key, or the Control Plane ("system", or a
    management command)."""

    USER = "user", "People"
    AGENT = "agent", "Agents"
    API_KEY = "api_key", "API keys"
    SYSTEM = "system", "Agentina itself"


# The labels Actor.for_agent and Actor.for_api_key write ("machine:" is a host that
# presents an activation token before it has an agent).
ACTOR_LABEL_PREFIXES: dict[str, tuple[str, ...]] = {
    ActorKind.AGENT: ("agent:", "machine:"),
    ActorKind.API_KEY: ("api-key:",),
}


def _label_starts(prefixes: tuple[str, ...]) -> Q:
    q = Q()
    for prefix in prefixes:
        q |= Q(actor_label__startswith=prefix)
    return q


def _actor_filter(kind: str) -> Q:
    if kind == ActorKind.USER:
        return Q(actor_user__isnull=False)
    nobody = Q(actor_user__isnull=True)
    if kind in ACTOR_LABEL_PREFIXES:
        return nobody & _label_starts(ACTOR_LABEL_PREFIXES[kind])
    every_prefix = tuple(p for prefixes in ACTOR_LABEL_PREFIXES.values() for p in prefixes)
    return nobody & ~_label_starts(every_prefix)


def actor_kind(event: AuditEvent) -> ActorKind:
    """The kind of the event's actor, by the same rule `audit_search` filters by."""
    if event.actor_user_id is not None:
        return ActorKind.USER
    for kind, prefixes in ACTOR_LABEL_PREFIXES.items():
        if event.actor_label.startswith(prefixes):
            return ActorKind(kind)
    return ActorKind.SYSTEM


def audit_search(
    customer: Customer | int, *, actor: str = "", action: str = "", machine: bool = False
) -> QuerySet[AuditEvent]:
    """The customer's events newest first, by actor kind and action; machine events only
    with `machine` or when `action` asks for one by name. Each carries `anomaly_message`
    for a finding it names (its fingerprint is no reading for people)."""
    events = audit_list(customer)
    if actor in ActorKind.values:
        events = events.filter(_actor_filter(actor))
    if action in AuditAction.values:
        events = events.filter(action=action)
    elif not machine:
        events = events.exclude(action__in=MACHINE_ACTIONS)
    # Only findings' ids are read as numbers: CASE runs the subquery for them alone.
    finding = Anomaly.objects.filter(
        customer=OuterRef("customer"), pk=Cast(OuterRef("target_id"), BigIntegerField())
    )
    return events.annotate(
        anomaly_message=Case(
            When(
                target_type=Anomaly._meta.label_lower,
                then=Subquery(finding.order_by().values("message")[:1]),
            )
        )
    )


def audit_trail(customer: Customer | int, target: Model) -> QuerySet[AuditEvent]:
    """What happened to one object of the customer, oldest first."""
    return (
        audit_list(customer)
        .filter(target_type=target._meta.label_lower, target_id=str(target.pk))
        .order_by("at", "id")
    )
