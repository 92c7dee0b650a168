"""Findings: opened by agents and by the Control Plane, folded by fingerprint, resolved by
people or by their condition clearing. Every path here is set-based: a sweep that finds
a thousand problems writes them with a fixed number of statements."""

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from django.db import connection, transaction
from django.db.models import Q
from django.utils import timezone

from fleet.choices import AnomalySeverity
from fleet.models import Anomaly, Customer
from fleet.services.audit import SYSTEM, Actor, AuditTarget, audit_record_many


@dataclass(frozen=True)
class Finding:
    customer_id: int
    kind: str
    fingerprint: str
    message: str
    severity: str = AnomalySeverity.WARNING
    agent_id: int | None = None
    job_id: int | None = None


# Only placeholders are formatted into this statement ({rows}); values go as parameters.
_UPSERT = """
INSERT INTO fleet_anomaly (customer_id, agent_id, job_id, kind, severity, fingerprint, message,
                           first_seen, last_seen, occurrences, resolution_note)
VALUES {rows}
ON CONFLICT (customer_id, fingerprint) WHERE resolved_at IS NULL
DO UPDATE SET occurrences = fleet_anomaly.occurrences + 1,
              last_seen = excluded.last_seen,
              message = excluded.message
RETURNING id, customer_id, fingerprint, occurrences
"""


def _db_time(value: datetime) -> object:
    return Anomaly._meta.get_field("last_seen").get_db_prep_value(value, connection)


@transaction.atomic
def anomalies_record(
    findings: Sequence[Finding], *, now: datetime | None = None, actor: Actor = SYSTEM
) -> list[int]:
    """Open each finding, or fold it into the open row with its fingerprint (the partial
    unique index decides, so concurrent callers never make two open rows). One statement
    for all findings, one more for the audit rows of those newly opened. Returns the ids
    of the anomaly rows, in the order of `findings`."""
    if not findings:
        return []
    unique = list({(f.customer_id, f.fingerprint): f for f in findings}.values())
    at = _db_time(now or timezone.now())
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
    rows = "(" + ", ".join(["%s"] * 11) + ")"
    with connection.cursor() as cursor:
        cursor.execute(_UPSERT.format(rows=", ".join([rows] * len(unique))), params)
        returned = cursor.fetchall()
    ids = {(customer_id, fingerprint): pk for pk, customer_id, fingerprint, _ in returned}
    opened = [
        AuditTarget("fleet.anomaly", pk, fingerprint, customer_id)
        for pk, customer_id, fingerprint, occurrences in returned
        if occurrences == 1
    ]
    if opened:
        audit_record_many(actor=actor, action="anomaly.open", targets=opened)
    return [ids[(f.customer_id, f.fingerprint[:200])] for f in findings]


def anomaly_open(
    *,
    customer: Customer | int,
    kind: str,
    fingerprint: str,
    message: str,
    severity: str = AnomalySeverity.WARNING,
    agent_id: int | None = None,
    job_id: int | None = None,
    actor: Actor = SYSTEM,
) -> Anomaly:
    """Open one finding (or fold a repeat into it) and return its row."""
    customer_id = customer if isinstance(customer, int) else customer.pk
    [pk] = anomalies_record(
        [Finding(customer_id, kind, fingerprint, message, severity, agent_id, job_id)],
        actor=actor,
    )
    return Anomaly.objects.get(pk=pk)


@transaction.atomic
def anomalies_resolve(
    *, where: Q, note: str, now: datetime | None = None, actor: Actor = SYSTEM
) -> int:
    """Close the open findings matching `where` (their condition cleared, or a person
    resolved them), with an audit row each. Three statements whatever the count."""
    found = list(
        Anomaly.objects.select_for_update()
        .filter(where, resolved_at__isnull=True)
        .values_list("id", "customer_id", "fingerprint")
    )
    if not found:
        return 0
    Anomaly.objects.filter(pk__in=[pk for pk, _, _ in found]).update(
        resolved_at=now or timezone.now(), resolution_note=note, resolved_by=actor.user
    )
    audit_record_many(
        actor=actor,
        action="anomaly.resolve",
        targets=[AuditTarget("fleet.anomaly", pk, fp, c) for pk, c, fp in found],
        changes={"note": [None, note]},
    )
    return len(found)


def anomaly_resolve_fingerprint(
    *, customer: Customer | int, fingerprint: str, note: str, actor: Actor = SYSTEM
) -> int:
    """Close the open finding with this fingerprint because its condition cleared."""
    customer_id = customer if isinstance(customer, int) else customer.pk
    return anomalies_resolve(
        where=Q(customer_id=customer_id, fingerprint=fingerprint), note=note, actor=actor
    )
