"""Findings: agents report them (their secret), customer automation lists, resolves and
reopens them (an API key). One router for the one path both use, each operation with
its own authentication."""

from django.db.models import Q, QuerySet
from django.http import HttpRequest
from ninja import Query, Router
from ninja.pagination import paginate

from fleet.api.auth import agent_auth, authed_agent, authed_key, key_alerts, key_read
from fleet.api.customers import api_key_actor
from fleet.api.pagination import KeysetPagination
from fleet.api.schemas import (
    AnomalyDetailOut,
    AnomalyFilters,
    AnomalyIn,
    AnomalyNoteIn,
    AnomalyOut,
    errors,
)
from fleet.api.throttles import ApiKeyThrottle
from fleet.choices import AnomalyKind
from fleet.errors import AnomalyOpenElsewhere
from fleet.http import client_address
from fleet.models import Anomaly
from fleet.selectors import anomaly_get, anomaly_list
from fleet.services.anomalies import anomalies_reopen, anomalies_resolve, anomaly_open
from fleet.services.audit import Actor

router = Router()


@router.post(
    "/anomalies",
    auth=agent_auth,
    tags=["agents"],
    response={200: AnomalyOut, **errors(401, 413, 422)},
    summary="Report a finding; repeats of a fingerprint fold into one row",
)
def report_anomaly(request: HttpRequest, body: AnomalyIn) -> AnomalyOut:
    agent = authed_agent(request)
    anomaly = anomaly_open(
        customer=agent.customer_id,
        kind=AnomalyKind.AGENT_REPORTED,
        fingerprint=f"agent:{agent.pk}:{body.fingerprint or body.message[:120]}",
        message=body.message,
        severity=body.severity,
        agent_id=agent.pk,
        job_id=agent.jobs.filter(pk=body.job_id).values_list("pk", flat=True).first()
        if body.job_id
        else None,
        actor=Actor.for_agent(agent, client_address(request)),
    )
    return AnomalyOut.from_orm(anomaly)


@router.get(
    "/anomalies",
    auth=key_read,
    throttle=[ApiKeyThrottle()],
    tags=["customer automation"],
    response={200: list[AnomalyDetailOut], **errors(401, 403, 422, 429)},
    summary="The customer's findings: unresolved, resolved or all, newest first",
)
@paginate(KeysetPagination)
def list_anomalies(request: HttpRequest, filters: Query[AnomalyFilters]) -> QuerySet[Anomaly]:
    """One row per finding (the Anomalies page groups the unresolved ones by cause: the
    `cause` field is what they share)."""
    return anomaly_list(authed_key(request).customer_id, filters.state)


@router.post(
    "/anomalies/{anomaly_id}/resolve",
    auth=key_alerts,
    throttle=[ApiKeyThrottle()],
    tags=["customer automation"],
    response={200: AnomalyDetailOut, **errors(401, 403, 404, 413, 422, 429)},
    summary="Resolve a finding with a note (idempotent)",
)
def resolve_anomaly(request: HttpRequest, anomaly_id: int, body: AnomalyNoteIn) -> Anomaly:
    """A finding resolved already stays as it was, its first note kept. The same cause
    seen again later opens a new finding."""
    customer_id = authed_key(request).customer_id
    anomaly = anomaly_get(customer_id, anomaly_id)
    anomalies_resolve(
        where=Q(customer_id=customer_id, pk=anomaly.pk),
        note=body.note,
        actor=api_key_actor(request),
    )
    return anomaly_get(customer_id, anomaly.pk)


@router.post(
    "/anomalies/{anomaly_id}/reopen",
    auth=key_alerts,
    throttle=[ApiKeyThrottle()],
    tags=["customer automation"],
    response={200: AnomalyDetailOut, **errors(401, 403, 404, 409, 413, 422, 429)},
    summary="Reopen a resolved finding with a note: it is not fixed (idempotent)",
)
def reopen_anomaly(request: HttpRequest, anomaly_id: int, body: AnomalyNoteIn) -> Anomaly:
    """An open finding is answered as it is. 409 `anomaly_open_elsewhere` when a newer
    finding with the same fingerprint is open: that is the one to follow."""
    customer_id = authed_key(request).customer_id
    anomaly = anomaly_get(customer_id, anomaly_id)
    if anomaly.resolved_at is not None:
        anomalies_reopen(ids=[anomaly.pk], note=body.note, actor=api_key_actor(request))
        anomaly = anomaly_get(customer_id, anomaly.pk)
        if anomaly.resolved_at is not None:
            raise AnomalyOpenElsewhere(
                "A newer finding with this fingerprint is open: this one stays resolved."
            )
    return anomaly
