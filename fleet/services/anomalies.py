"""Findings: opened by agents and by the Control Plane, folded by fingerprint, resolved by
people or by their condition clearing. Every path here is set-based: a sweep that finds
a thousand problems writes them with a fixed number of statements."""

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from django.db import connection, transaction
from django.db.models import Exists, OuterRef, Q
from django.utils import timezone

from fleet.choices import AgentStatus, AlertEventType, AnomalyKind, AnomalySeverity, AuditAction
from fleet.models import Anomaly, Customer
from fleet.services.alerts.events import ANOMALY_KINDS_WITH_OWN_EVENT, Alert, alerts_emit
from fleet.services.audit import SYSTEM, Actor, audit_record_rows


@dataclass(frozen=True)
class Finding:
    customer_id: int
    kind: str
    fingerprint: str
    message: str
    severity: str = AnomalySeverity.WARNING
    agent_id: int | None = None
    job_id: int | None = None


def agent_offline_fingerprint(agent_id: int | str) -> str:
    return f"agent_offline:{agent_id}"


# The source is VALUES rows or a SELECT written in this module, yielding these columns.
_UPSERT = """
INSERT INTO fleet_anomaly (customer_id, agent_id, job_id, kind, severity, fingerprint, message,
                           first_seen, last_seen, occurrences, resolution_note)
{source}
ON CONFLICT (customer_id, fingerprint) WHERE resolved_at IS NULL
DO UPDATE SET occurrences = fleet_anomaly.occurrences + 1,
              last_seen = excluded.last_seen,
              message = excluded.message
RETURNING id, customer_id, fingerprint, occurrences, kind, severity, message, agent_id
"""


def db_time(value: datetime) -> Any:
    """A datetime as the database stores it, for raw SQL parameters."""
    return Anomaly._meta.get_field("last_seen").get_db_prep_value(value, connection)


def _upsert(source: str, params: list[Any], actor: Actor) -> list[tuple[int, int, str, int]]:
    """Open or fold rows; one more INSERT writes the audit rows of those newly opened,
    and one more their anomaly.opened events."""
    with connection.cursor() as cursor:
        cursor.execute(_UPSERT.format(source=source), params)
        returned = cursor.fetchall()
    opened = [row for row in returned if row[3] == 1]
    audit_record_rows(
        actor=actor,
        action=AuditAction.ANOMALY_OPEN,
        model=Anomaly,
        ids=[row[0] for row in opened],
        repr_sql="fingerprint",
    )
    alerts_emit(
        [
            Alert(
                customer_id,
                AlertEventType.ANOMALY_OPENED,
                f"anomaly.opened:{pk}",
                {
                    "anomaly_id": pk,
                    "kind": kind,
                    "severity": severity,
                    "message": message,
                    "fingerprint": fingerprint,
                    "agent_id": agent_id,
                    "incident": f"anomaly:{fingerprint}",
                    "portal_path": "/portal/anomalies/",
                },
                severity=severity,
            )
            for pk, customer_id, fingerprint, _, kind, severity, message, agent_id in opened
            if kind not in ANOMALY_KINDS_WITH_OWN_EVENT
        ]
    )
    return [row[:4] for row in returned]


@transaction.atomic
def anomalies_record(
    findings: Sequence[Finding], *, now: datetime | None = None, actor: Actor
) -> list[int]:
    """Open each finding, or fold it into the open row with its fingerprint (the partial
    unique index decides, so concurrent callers never make two open rows). Two statements
    for any number of findings. Returns the anomaly ids in the order of `findings`."""
    if not findings:
        return []
    unique = list({(f.customer_id, f.fingerprint[:200]): f for f in findings}.values())
    at = db_time(now or timezone.now())
    params: list[Any] = []
    for f in unique:
        params += [
            f.customer_id,
            f.agent_id,
            f.job_id,
            f.kind,
            f.severity,
            f.fingerprint[:200],
            f.message,
            at,
            at,
            1,
            "",
        ]
    row = "(" + ", ".join(["%s"] * 11) + ")"
    returned = _upsert("VALUES " + ", ".join([row] * len(unique)), params, actor)
    ids = {(customer_id, fingerprint): pk for pk, customer_id, fingerprint, _ in returned}
    return [ids[(f.customer_id, f.fingerprint[:200])] for f in findings]


_OFFLINE_FINDINGS = """
SELECT customer_id, id, NULL, %s, %s, %s || CAST(id AS TEXT),
       name || ' stopped sending heartbeats.', %s, %s, 1, ''
  FROM fleet_agent
 WHERE id IN ({ids}) AND status = %s AND offline_since = %s
"""


@transaction.atomic
def anomalies_record_agents_offline(agent_ids: list[int], *, now: datetime) -> int:
    """An "agent offline" finding for each of these agents the sweep just marked offline,
    written by one INSERT ... SELECT (plus one for audit rows), however many there are."""
    if not agent_ids:
        return 0
    at = db_time(now)
    source = _OFFLINE_FINDINGS.format(ids=", ".join(["%s"] * len(agent_ids)))
    params = [
        AnomalyKind.AGENT_OFFLINE,
        AnomalySeverity.WARNING,
        agent_offline_fingerprint(""),
        at,
        at,
        *agent_ids,
        AgentStatus.OFFLINE,
        at,
    ]
    return len(_upsert(source, params, SYSTEM))


def anomaly_open(
    *,
    customer: Customer | int,
    kind: str,
    fingerprint: str,
    message: str,
    severity: str = AnomalySeverity.WARNING,
    agent_id: int | None = None,
    job_id: int | None = None,
    actor: Actor,
) -> Anomaly:
    """Open one finding (or fold a repeat into it) and return its row."""
    customer_id = customer if isinstance(customer, int) else customer.pk
    [pk] = anomalies_record(
        [Finding(customer_id, kind, fingerprint, message, severity, agent_id, job_id)],
        actor=actor,
    )
    return Anomaly.objects.get(pk=pk)


RESOLVE_CHUNK = 5000


def anomalies_resolve(*, where: Q, note: str, now: datetime | None = None, actor: Actor) -> int:
    """Close the open findings matching `where` (their condition cleared, or a person
    resolved them), with an audit row each: three statements per 5,000 findings."""
    resolved = 0
    while True:
        with transaction.atomic():
            found = list(
                Anomaly.objects.select_for_update(skip_locked=True)
                .filter(where, resolved_at__isnull=True)
                .values_list("id", flat=True)
                .order_by()[:RESOLVE_CHUNK]
            )
            if not found:
                return resolved
            Anomaly.objects.filter(pk__in=found).update(
                resolved_at=now or timezone.now(), resolution_note=note, resolved_by=actor.user
            )
            audit_record_rows(
                actor=actor,
                action=AuditAction.ANOMALY_RESOLVE,
                model=Anomaly,
                ids=found,
                repr_sql="fingerprint",
                changes={"note": [None, note]},
            )
        resolved += len(found)
        if len(found) < RESOLVE_CHUNK:
            return resolved


def anomaly_resolve_fingerprint(
    *, customer: Customer | int, fingerprint: str, note: str, actor: Actor
) -> int:
    """Close the open finding with this fingerprint because its condition cleared."""
    customer_id = customer if isinstance(customer, int) else customer.pk
    return anomalies_resolve(
        where=Q(customer_id=customer_id, fingerprint=fingerprint), note=note, actor=actor
    )


@transaction.atomic
def anomalies_reopen(*, ids: list[int], note: str, actor: Actor) -> int:
    """Reopen resolved findings (a person judged them not fixed). One whose fingerprint
    already has an open row stays resolved: that open row is where it folds now."""
    candidates = list(
        Anomaly.objects.select_for_update()
        .filter(pk__in=ids, resolved_at__isnull=False)
        .exclude(
            Exists(
                Anomaly.objects.filter(
                    customer=OuterRef("customer"),
                    fingerprint=OuterRef("fingerprint"),
                    resolved_at__isnull=True,
                )
            )
        )
        .order_by("-resolved_at")
        .values_list("pk", "customer_id", "fingerprint")
    )
    newest = list({(c, fp): pk for pk, c, fp in reversed(candidates)}.values())
    if not newest:
        return 0
    Anomaly.objects.filter(pk__in=newest).update(
        resolved_at=None, resolved_by=None, resolution_note=""
    )
    audit_record_rows(
        actor=actor,
        action=AuditAction.ANOMALY_REOPEN,
        model=Anomaly,
        ids=newest,
        repr_sql="fingerprint",
        changes={"note": [None, note]},
    )
    return len(newest)
