"""Anomalies (findings), scoped by customer, one by one and grouped into incidents."""

from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime

from django.db.models import F, QuerySet
from django.template.defaultfilters import pluralize

from fleet import policy
from fleet.choices import AnomalyKind, AnomalySeverity
from fleet.errors import NotFound
from fleet.models import Agent, Anomaly, Customer


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


@dataclass(frozen=True)
class Incident:
    """The open findings of one cause together: "11 agents offline since 14:02"."""

    cause: str
    kind: str
    kind_label: str
    severity: str
    headline: str
    detail: str  # the newest finding's own words
    findings: list[Anomaly]
    since: datetime
    last_seen: datetime

    @property
    def agents(self) -> list[Agent]:
        return [f.agent for f in self.findings if f.agent is not None]

    @property
    def ids(self) -> list[int]:
        return [f.pk for f in self.findings]


_SEVERITY_RANK = {s: i for i, s in enumerate(AnomalySeverity.values)}  # info < … < critical


def anomaly_incidents(customer: Customer | int) -> list[Incident]:
    """The customer's open findings grouped by cause (Anomaly.cause), worst first. An
    incident's severity is its worst finding's, raised by its impact: agents offline
    that pull the fleet below its online target make it critical. Two queries."""
    open_findings = list(anomaly_list(customer))
    if not open_findings:
        return []
    by_cause: dict[str, list[Anomaly]] = defaultdict(list)
    for finding in open_findings:
        by_cause[finding.cause].append(finding)
    incidents = []
    for cause, findings in by_cause.items():
        first, newest = findings[0], max(findings, key=lambda f: f.last_seen)
        since = min(f.first_seen for f in findings)
        severity = max((f.severity for f in findings), key=_SEVERITY_RANK.__getitem__)
        headline = first.get_kind_display()
        if first.kind == AnomalyKind.AGENT_OFFLINE:
            n = len(findings)
            headline = f"{n} agent{pluralize(n)} offline since {since:%H:%M} UTC"
            if _pulls_below_target(customer, n):
                severity = AnomalySeverity.CRITICAL
        elif len(findings) > 1:
            headline = f"{headline}: {len(findings)} agents"
        incidents.append(
            Incident(
                cause=cause,
                kind=first.kind,
                kind_label=first.get_kind_display(),
                severity=severity,
                headline=headline,
                detail=newest.message,
                findings=sorted(findings, key=lambda f: (f.agent.name if f.agent else "", f.pk)),
                since=since,
                last_seen=newest.last_seen,
            )
        )
    return sorted(incidents, key=lambda i: (-_SEVERITY_RANK[i.severity], -i.last_seen.timestamp()))


def _pulls_below_target(customer: Customer | int, offline: int) -> bool:
    active = Agent.objects.for_customer(customer).holding_seat().count()
    return bool(active) and (active - offline) / active < policy.ONLINE_RATIO_TARGET
