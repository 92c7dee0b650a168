"""Alerts about conditions rather than changes, raised by beat: the online ratio under its
target for minutes (and its recovery), licenses nearly full or about to expire, and the
day's unresolved findings. Each event's dedup key names its occasion, so a second run,
or a second beat, emits nothing new."""

from collections import defaultdict
from datetime import UTC, datetime, time, timedelta

from django.db import transaction
from django.db.models import Count, OuterRef, Subquery
from django.utils import timezone

from fleet import policy
from fleet.choices import AlertEventType, AnomalySeverity
from fleet.models import Agent, AlertEvent, Anomaly, Customer, FleetSnapshot, License
from fleet.services.alerts.events import Alert, alerts_emit

RATIO_TYPES = (AlertEventType.ONLINE_RATIO_LOW, AlertEventType.ONLINE_RATIO_RECOVERED)


@transaction.atomic
def alerts_online_ratio_watch(*, now: datetime | None = None) -> list[AlertEvent]:
    """fleet.online_ratio_low when every snapshot of the last ALERT_ONLINE_RATIO_MINUTES
    is under ONLINE_RATIO_TARGET (at least that many of them), and
    fleet.online_ratio_recovered at the first snapshot back above it. Three statements."""
    now = now or timezone.now()
    minutes = policy.ALERT_ONLINE_RATIO_MINUTES
    since = now.replace(second=0, microsecond=0) - timedelta(minutes=minutes - 1)
    recent: dict[int, list[tuple[datetime, float]]] = defaultdict(list)
    for customer_id, taken_at, ratio in (
        FleetSnapshot.objects.filter(taken_at__gte=since, online_ratio__isnull=False)
        .order_by("taken_at")
        .values_list("customer_id", "taken_at", "online_ratio")
    ):
        recent[customer_id].append((taken_at, float(ratio or 0)))
    latest = (
        AlertEvent.objects.filter(customer_id=OuterRef("pk"), type__in=RATIO_TYPES)
        .order_by("-created_at", "-id")
        .values("type")[:1]
    )
    open_low = set(
        Customer.objects.filter(pk__in=recent)
        .annotate(last=Subquery(latest))
        .filter(last=AlertEventType.ONLINE_RATIO_LOW)
        .values_list("pk", flat=True)
    )
    target = policy.ONLINE_RATIO_TARGET
    alerts = []
    for customer_id, rows in recent.items():
        ratio = rows[-1][1]
        incident = f"online_ratio:{customer_id}"
        if customer_id in open_low and ratio >= target:
            alerts.append(
                Alert(
                    customer_id,
                    AlertEventType.ONLINE_RATIO_RECOVERED,
                    f"fleet.online_ratio_recovered:{rows[-1][0].isoformat()}",
                    {"online_ratio": ratio, "target": target, "incident": incident},
                )
            )
        elif (
            customer_id not in open_low
            and len(rows) >= minutes
            and max(r for _, r in rows) < target
        ):
            alerts.append(
                Alert(
                    customer_id,
                    AlertEventType.ONLINE_RATIO_LOW,
                    f"fleet.online_ratio_low:{rows[0][0].isoformat()}",
                    {
                        "online_ratio": ratio,
                        "target": target,
                        "minutes": minutes,
                        "since": rows[0][0].isoformat(),
                        "incident": incident,
                        "portal_path": "/portal/",
                    },
                )
            )
    return alerts_emit(alerts, now=now)


@transaction.atomic
def alerts_license_watch(*, now: datetime | None = None) -> list[AlertEvent]:
    """license.expiring 14 and 3 days before a current license ends, and license.near_cap
    for a license 90% full (also raised at activation; the dedup key makes it once per
    license and cap)."""
    now = now or timezone.now()
    alerts = []
    horizon = max(policy.ALERT_LICENSE_EXPIRY_DAYS)
    for license in License.objects.filter(
        is_current=True, valid_until__gt=now, valid_until__lte=now + timedelta(days=horizon)
    ):
        assert license.valid_until is not None
        left = license.valid_until - now
        days = min(d for d in policy.ALERT_LICENSE_EXPIRY_DAYS if left <= timedelta(days=d))
        alerts.append(
            Alert(
                license.customer_id,
                AlertEventType.LICENSE_EXPIRING,
                f"license.expiring:{license.pk}:{days}",
                {
                    "days": days,
                    "valid_until": license.valid_until.isoformat(),
                    "plan": license.plan,
                },
                severity=AnomalySeverity.CRITICAL if days <= 3 else AnomalySeverity.WARNING,
            )
        )
    active = dict(
        Agent.objects.holding_seat()
        .values("customer_id")
        .annotate(n=Count("pk"))
        .values_list("customer_id", "n")
        .order_by()
    )
    for license in License.objects.filter(is_current=True, customer_id__in=active):
        alert = license_near_cap_alert(license, active[license.customer_id])
        if alert is not None:
            alerts.append(alert)
    return alerts_emit(alerts, now=now)


def license_near_cap_alert(license: License, seats_used: int) -> Alert | None:
    """license.near_cap when seats_used is at least ALERT_NEAR_CAP of max_agents."""
    if seats_used < policy.ALERT_NEAR_CAP * license.max_agents:
        return None
    return Alert(
        license.customer_id,
        AlertEventType.LICENSE_NEAR_CAP,
        f"license.near_cap:{license.pk}:{license.max_agents}",
        {
            "seats_used": seats_used,
            "max_agents": license.max_agents,
            "free": max(0, license.max_agents - seats_used),
            "portal_path": "/portal/tokens/",
        },
    )


@transaction.atomic
def alerts_daily_digest(*, now: datetime | None = None) -> list[AlertEvent]:
    """anomalies.daily_digest for every customer with unresolved findings at the end of
    the day. Customers have no time zone of their own yet: the day is UTC's."""
    now = now or timezone.now()
    day = now.date()
    counts: dict[int, dict[str, int]] = defaultdict(dict)
    for customer_id, severity, n in (
        Anomaly.objects.filter(resolved_at__isnull=True)
        .values("customer_id", "severity")
        .annotate(n=Count("pk"))
        .values_list("customer_id", "severity", "n")
        .order_by()
    ):
        counts[customer_id][severity] = n
    end_of_day = datetime.combine(day, time(23, 59, 59), tzinfo=UTC)
    return alerts_emit(
        [
            Alert(
                customer_id,
                AlertEventType.ANOMALIES_DAILY_DIGEST,
                f"anomalies.daily_digest:{day.isoformat()}",
                {
                    "date": day.isoformat(),
                    "unresolved": sum(by_severity.values()),
                    "by_severity": by_severity,
                    "as_of": end_of_day.isoformat(),
                    "time_zone": "UTC",
                    "portal_path": "/portal/anomalies/",
                },
            )
            for customer_id, by_severity in counts.items()
        ],
        now=now,
    )
