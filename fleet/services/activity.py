"""What agents say they are doing (a heartbeat's `activity`), and the provider incidents
folded from it: many agents of a customer rate-limited by (or failing at) one model
provider within minutes are one finding, not one each."""

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from django.conf import settings
from django.db.models import Count, Min, Q
from django.utils import timezone

from fleet.choices import PROVIDER_TROUBLE, AgentActivity, AnomalyKind
from fleet.models import Agent, Anomaly
from fleet.models.agents import heard_q
from fleet.services.anomalies import Finding, anomalies_record, anomalies_resolve
from fleet.services.audit import SYSTEM


@dataclass(frozen=True)
class ActivityReport:
    """A heartbeat's `activity`, `provider` and `detail` (None when it sent no activity)."""

    activity: str
    provider: str = ""
    detail: str = ""

    def as_fields(self) -> dict[str, str]:
        return {
            "activity": self.activity,
            "activity_provider": self.provider,
            "activity_detail": self.detail,
        }


# --- provider incidents ------------------------------------------------------------------


def provider_fingerprint(provider: str) -> str:
    return f"provider:{provider}"


def provider_incidents_sweep(*, now: datetime | None = None) -> dict[str, int]:
    """Fold agents blaming a model provider into one finding per (customer, provider):
    opened when PROVIDER_INCIDENT_AGENTS or more online agents report rate_limited or
    provider_error for it, its words updated each minute as agents join or leave, resolved
    once none does. Reads only the agents in trouble (a partial index) and the open
    incidents: set-based, a fixed number of statements whatever the fleet."""
    now = now or timezone.now()
    rows = (
        Agent.objects.holding_seat()
        .filter(heard_q(now), activity__in=PROVIDER_TROUBLE)
        .exclude(activity_provider="")
        .values("customer_id", "activity_provider")
        .annotate(
            agents=Count("pk"),
            limited=Count("pk", filter=Q(activity=AgentActivity.RATE_LIMITED)),
            since=Min("activity_since"),
        )
        .order_by()
    )
    troubled = {(r["customer_id"], provider_fingerprint(r["activity_provider"])) for r in rows}
    findings = [
        Finding(
            r["customer_id"],
            AnomalyKind.PROVIDER_INCIDENT,
            provider_fingerprint(r["activity_provider"]),
            _incident_words(r, now),
        )
        for r in rows
        if r["agents"] >= settings.PROVIDER_INCIDENT_AGENTS
    ]
    anomalies_record(findings, now=now, actor=SYSTEM)
    cleared = [
        pk
        for pk, customer_id, fingerprint in Anomaly.objects.filter(
            kind=AnomalyKind.PROVIDER_INCIDENT, resolved_at__isnull=True
        ).values_list("pk", "customer_id", "fingerprint")
        if (customer_id, fingerprint) not in troubled
    ]
    resolved = (
        anomalies_resolve(
            where=Q(pk__in=cleared),
            note="No agent reports trouble with this provider any more.",
            now=now,
            actor=SYSTEM,
        )
        if cleared
        else 0
    )
    return {"open": len(findings), "resolved": resolved}


def _incident_words(row: dict[str, Any], now: datetime) -> str:
    provider = row["activity_provider"].capitalize()
    limited, agents = row["limited"], row["agents"]
    since = (row["since"] or now).astimezone(UTC)
    if limited == agents:
        what = f"{provider} rate-limits {agents} agents"
    elif limited == 0:
        what = f"{provider} fails for {agents} agents"
    else:
        what = f"{provider} rate-limits {limited} and fails for {agents - limited} agents"
    return (
        f"{what} since {since:%H:%M} UTC. One provider incident, not one finding per agent: "
        "it resolves itself when they stop reporting it. Check the provider's status page "
        "and your quota before adding agents."
    )
