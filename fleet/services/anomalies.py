from django.db import IntegrityError, transaction
from django.db.models import F
from django.utils import timezone

from fleet.choices import AnomalySeverity
from fleet.models import Agent, Anomaly, Customer, Job
from fleet.services.audit import SYSTEM, Actor, audit_record


def anomaly_open(
    *,
    customer: Customer | int,
    kind: str,
    fingerprint: str,
    message: str,
    severity: str = AnomalySeverity.WARNING,
    agent: Agent | None = None,
    job: Job | None = None,
    actor: Actor = SYSTEM,
) -> Anomaly:
    """Open a finding, or fold a repeat into the open one with the same fingerprint.

    Safe under concurrency: the partial unique index admits one open row per fingerprint,
    and the loser of an insert race folds into the winner's row."""
    customer_id = customer if isinstance(customer, int) else customer.pk
    now = timezone.now()
    with transaction.atomic():
        folded = Anomaly.objects.filter(
            customer_id=customer_id, fingerprint=fingerprint, resolved_at__isnull=True
        ).update(occurrences=F("occurrences") + 1, last_seen=now, message=message)
        if folded:
            return Anomaly.objects.get(
                customer_id=customer_id, fingerprint=fingerprint, resolved_at__isnull=True
            )
        try:
            with transaction.atomic():
                anomaly = Anomaly.objects.create(
                    customer_id=customer_id,
                    kind=kind,
                    fingerprint=fingerprint[:200],
                    message=message,
                    severity=severity,
                    agent=agent,
                    job=job,
                    first_seen=now,
                    last_seen=now,
                )
        except IntegrityError:
            return anomaly_open(
                customer=customer_id,
                kind=kind,
                fingerprint=fingerprint,
                message=message,
                severity=severity,
                agent=agent,
                job=job,
                actor=actor,
            )
        audit_record(
            actor=actor,
            action="anomaly.open",
            target=anomaly,
            customer=customer_id,
            changes={"kind": [None, kind], "fingerprint": [None, fingerprint]},
        )
        return anomaly


def anomaly_resolve_fingerprint(
    *, customer: Customer | int, fingerprint: str, note: str, actor: Actor = SYSTEM
) -> int:
    """Close the open finding with this fingerprint because its condition cleared."""
    customer_id = customer if isinstance(customer, int) else customer.pk
    with transaction.atomic():
        anomaly = (
            Anomaly.objects.select_for_update()
            .filter(customer_id=customer_id, fingerprint=fingerprint, resolved_at__isnull=True)
            .first()
        )
        if anomaly is None:
            return 0
        anomaly.resolved_at = timezone.now()
        anomaly.resolution_note = note
        anomaly.resolved_by = actor.user
        anomaly.save(update_fields=["resolved_at", "resolution_note", "resolved_by"])
        audit_record(
            actor=actor,
            action="anomaly.resolve",
            target=anomaly,
            customer=customer_id,
            changes={"note": [None, note]},
        )
        return 1
