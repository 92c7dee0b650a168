from typing import Any

from django.contrib.auth.models import AnonymousUser, User
from django.db import models

from fleet.models import AuditEvent, Customer

Actor = User | AnonymousUser | None


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
    customer: Customer | None,
    changes: dict | None = None,
    actor_label: str | None = None,
    ip_address: str | None = None,
) -> AuditEvent:
    """Write one audit row. Services call it inside their transaction."""
    user = actor if actor is not None and actor.is_authenticated else None
    label = actor_label or (user.get_username() if user else "system")
    return AuditEvent.objects.create(
        actor_user=user,
        actor_label=label[:200],
        customer=customer,
        action=action,
        target_type=target._meta.label_lower,
        target_id=str(target.pk),
        target_repr=str(target)[:200],
        changes={k: v for k, v in (changes or {}).items()},
        ip_address=ip_address,
    )
