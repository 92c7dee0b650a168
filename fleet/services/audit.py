from dataclasses import dataclass
from typing import Any

from django.contrib.auth.models import User
from django.db import models
from django.http import HttpRequest
from ninja.throttling import BaseThrottle

from fleet.models import AuditEvent, Customer


@dataclass(frozen=True)
class Actor:
    """Who acts and from where: a staff member or customer member, an agent, an API key,
    or the Control Plane itself (no user, label "system")."""

    user: User | None = None
    label: str = "system"
    ip_address: str | None = None

    @classmethod
    def from_request(cls, request: HttpRequest) -> "Actor":
        user = request.user if request.user.is_authenticated else None
        return cls(
            user=user,
            label=user.get_username() if user else "anonymous",
            ip_address=client_address(request),
        )


def client_address(request: HttpRequest) -> str | None:
    """REMOTE_ADDR, or the address our NUM_PROXIES trusted proxies saw (never the whole,
    spoofable X-Forwarded-For header)."""
    return BaseThrottle().get_ident(request) or None


SYSTEM = Actor()


def _jsonable(value: Any) -> Any:
    if value is None or isinstance(value, bool | int | float | str):
        return value if not isinstance(value, str) else str(value)
    if isinstance(value, models.Model):
        return value.pk
    return str(value)


def model_changes(before: models.Model, after: models.Model, fields: list[str]) -> dict:
    """{field: [old, new]} for the fields whose value differs."""
    changes = {}
    for name in fields:
        old, new = getattr(before, name), getattr(after, name)
        if old != new:
            changes[name] = [_jsonable(old), _jsonable(new)]
    return changes


def audit_record(
    *,
    actor: Actor,
    action: str,
    target: models.Model,
    customer: Customer | int | None,
    changes: dict | None = None,
) -> AuditEvent:
    """Write one audit row. Services call it inside their transaction."""
    return AuditEvent.objects.create(
        customer_id=customer.pk if isinstance(customer, Customer) else customer,
        actor_user=actor.user,
        actor_label=actor.label[:200],
        action=action,
        target_type=target._meta.label_lower,
        target_id=str(target.pk),
        target_repr=str(target)[:200],
        changes=changes or {},
        ip_address=actor.ip_address,
    )


@dataclass(frozen=True)
class AuditTarget:
    """An audited object known by its identity only (set-based paths have no instances)."""

    label: str  # e.g. "fleet.agent"
    pk: int
    repr: str
    customer_id: int | None


def audit_record_many(
    *, actor: Actor, action: str, targets: list[AuditTarget], changes: dict | None = None
) -> int:
    """One INSERT for the audit rows of a set-based change (a queryset.update())."""
    AuditEvent.objects.bulk_create(
        AuditEvent(
            customer_id=t.customer_id,
            actor_user=actor.user,
            actor_label=actor.label[:200],
            action=action,
            target_type=t.label,
            target_id=str(t.pk),
            target_repr=t.repr[:200],
            changes=changes or {},
            ip_address=actor.ip_address,
        )
        for t in targets
    )
    return len(targets)
