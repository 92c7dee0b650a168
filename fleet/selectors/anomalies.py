"""Anomalies, scoped by customer."""

from django.db.models import F, QuerySet

from fleet.errors import NotFound
from fleet.models import Anomaly, Customer


def anomaly_list(customer: Customer | int, state: str = "open") -> QuerySet[Anomaly]:
    anomalies = Anomaly.objects.filter(customer=customer).select_related("agent", "resolved_by")
    if state == "resolved":
        return anomalies.filter(resolved_at__isnull=False).order_by("-resolved_at")
    if state == "all":
        return anomalies.order_by(F("resolved_at").desc(nulls_first=True), "-last_seen")
    return anomalies.filter(resolved_at__isnull=True).order_by("-last_seen")


def anomaly_get(customer: Customer | int, anomaly_id: int) -> Anomaly:
    anomaly = Anomaly.objects.filter(customer=customer, pk=anomaly_id).first()
    if anomaly is None:
        raise NotFound("No such anomaly.")
    return anomaly
