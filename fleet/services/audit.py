import json
from dataclasses import dataclass
from typing import Any

from django.contrib.auth.models import User
from django.db import connection, models
from django.utils import timezone

from fleet.choices import AuditAction
from fleet.models import Agent, AuditEvent, Customer, CustomerApiKey


@dataclass(frozen=True)
class Actor:
    """Who acts and from where: a staff member or customer member, an agent, an API key,
    or the Control Plane itself (no user, label "system")."""

    user: User | None = None
    label: str = "system"
    ip_address: str | None = None

    @classmethod
    def for_agent(cls, agent: Agent, ip_address: str | None = None) -> "Actor":
        return cls(label=f"agent:{agent.name}"[:200], ip_address=ip_address)

    @classmethod
    def for_api_key(cls, key: CustomerApiKey, ip_address: str | None = None) -> "Actor":
        return cls(label=f"api-key:{key.name}"[:200], ip_address=ip_address)


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
    action: AuditAction,
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


# The audit table's columns, in the one order every INSERT ... SELECT of audit rows uses
# (this module's, and the claim's in fleet/services/jobs.py).
AUDIT_INSERT = """INSERT INTO fleet_auditevent (at, actor_user_id, actor_label, customer_id, action,
                              target_type, target_id, target_repr, changes, ip_address)"""
_INSERT_SELECT = (
    AUDIT_INSERT
    + """
SELECT %s, %s, %s, customer_id, %s, %s, CAST(id AS TEXT), SUBSTR({repr_sql}, 1, 200), {changes},
       %s
  FROM {table}
 WHERE id IN ({ids}) AND {condition}
"""
)


def audit_record_rows(
    *,
    actor: Actor,
    action: AuditAction,
    model: type[models.Model],
    ids: list[int],
    repr_sql: str,
    condition: str = "1 = 1",
    condition_params: list[Any] | None = None,
    changes: dict | None = None,
) -> int:
    """One INSERT ... SELECT for the audit rows of a set-based change: a row for each of
    `ids` (of `model`, having a customer_id column) that still meets `condition`.
    `repr_sql` and `condition` are SQL written in this code base, never user input."""
    if not ids:
        return 0
    json_sql = "CAST(%s AS jsonb)" if connection.vendor == "postgresql" else "%s"
    sql = _INSERT_SELECT.format(
        repr_sql=repr_sql,
        changes=json_sql,
        table=model._meta.db_table,
        ids=", ".join(["%s"] * len(ids)),
        condition=condition,
    )
    at = AuditEvent._meta.get_field("at").get_db_prep_value(timezone.now(), connection)
    params = [
        at,
        actor.user.pk if actor.user else None,
        actor.label[:200],
        action,
        model._meta.label_lower,
        json.dumps(changes or {}),
        actor.ip_address,
        *ids,
        *(condition_params or []),
    ]
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        return cursor.rowcount
