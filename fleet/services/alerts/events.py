"""Alert events: written by the service whose change caused them, in its transaction, then
fanned out to the customer's channels as one scheduled delivery each. Sending starts when
the transaction commits (a Celery task per delivery); what a lost message misses, the
delivery sweep sends (fleet/services/alerts/delivery.py)."""

import logging
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import Count
from django.utils import timezone

from fleet import policy
from fleet.choices import (
    AlertChannelKind,
    AlertDeliveryState,
    AlertEventType,
    AnomalyKind,
    AnomalySeverity,
)
from fleet.models import AlertChannel, AlertDelivery, AlertEvent

logger = logging.getLogger(__name__)

SEVERITY_RANK = {AnomalySeverity.INFO: 0, AnomalySeverity.WARNING: 1, AnomalySeverity.CRITICAL: 2}


@dataclass(frozen=True)
class EventRule:
    """How an event type reads and routes: its severity unless the emitter gives one, and
    what it does to a PagerDuty incident (its `incident` key in the data names which)."""

    severity: str
    pagerduty: str = "trigger"  # trigger, resolve, or "" (not sent to PagerDuty)


W, C, INFO = AnomalySeverity.WARNING, AnomalySeverity.CRITICAL, AnomalySeverity.INFO
EVENT_RULES: dict[str, EventRule] = {
    AlertEventType.AGENTS_OFFLINE: EventRule(W),
    AlertEventType.AGENTS_BACK_ONLINE: EventRule(INFO, "resolve"),
    AlertEventType.ONLINE_RATIO_LOW: EventRule(C),
    AlertEventType.ONLINE_RATIO_RECOVERED: EventRule(INFO, "resolve"),
    AlertEventType.ANOMALY_OPENED: EventRule(W),
    AlertEventType.ANOMALIES_DAILY_DIGEST: EventRule(INFO, ""),
    AlertEventType.ROLLOUT_PAUSED: EventRule(C),
    AlertEventType.ROLLOUT_ROLLED_BACK: EventRule(C),
    AlertEventType.ROLLOUT_COMPLETED: EventRule(INFO, "resolve"),
    AlertEventType.TOKEN_REUSED: EventRule(W),
    AlertEventType.LICENSE_NEAR_CAP: EventRule(W),
    AlertEventType.LICENSE_EXPIRING: EventRule(W),
    AlertEventType.ALERT_TEST: EventRule(INFO),
    AlertEventType.ALERTS_SUMMARY: EventRule(W, ""),
}
assert set(EVENT_RULES) == set(AlertEventType.values), "every event type needs its rule"

# Findings that have an event of their own (folded, or with more to say) are not also
# sent as anomaly.opened: one agent offline is part of agents.offline, not a page.
ANOMALY_KINDS_WITH_OWN_EVENT = frozenset(
    {
        AnomalyKind.AGENT_OFFLINE,
        AnomalyKind.TOKEN_REUSE,
        AnomalyKind.ROLLBACK,
        AnomalyKind.ROLLOUT_GATE,
        AnomalyKind.LOW_ONLINE_RATIO,
    }
)


@dataclass(frozen=True)
class Alert:
    """One event to emit. `fold` merges a repeat of its dedup key into the stored event's
    data (agents.offline over the chunks of one sweep); without it a repeat is dropped."""

    customer_id: int
    type: str
    dedup_key: str
    data: dict[str, Any] = field(default_factory=dict)
    severity: str | None = None
    fold: Callable[[dict[str, Any], dict[str, Any]], dict[str, Any]] | None = None


def channel_wants(channel: AlertChannel, event: AlertEvent) -> bool:
    """A channel's filters: its event names (none: all), its minimum severity (events that
    resolve an incident pass it, so whoever got the trigger gets the resolve), and
    PagerDuty takes only what opens or closes an incident."""
    rule = EVENT_RULES[event.type]
    if channel.events and event.type not in channel.events:
        return False
    if rule.pagerduty == "resolve":
        return channel.kind != "pagerduty" or "incident" in event.data
    if channel.kind == "pagerduty" and not rule.pagerduty:
        return False
    return (
        SEVERITY_RANK[AnomalySeverity(event.severity)]
        >= SEVERITY_RANK[AnomalySeverity(channel.min_severity)]
    )


def alert_emit(
    *,
    customer: int,
    type: str,
    dedup_key: str,
    data: dict[str, Any] | None = None,
    severity: str | None = None,
    now: datetime | None = None,
) -> AlertEvent | None:
    """Emit one event (None when its dedup key was emitted before). Call it inside the
    transaction of the change that caused it."""
    events = alerts_emit([Alert(customer, type, dedup_key, data or {}, severity)], now=now)
    return events[0] if events else None


@transaction.atomic
def alerts_emit(
    alerts: Sequence[Alert],
    *,
    now: datetime | None = None,
    only_channel: AlertChannel | None = None,
) -> list[AlertEvent]:
    """Store the events whose dedup key is new (fold or drop the others) and schedule a
    delivery to each enabled channel that wants them; `only_channel` sends to that one
    alone, past its filters and limit (a test, a summary). A channel over
    ALERT_CHANNEL_MAX_PER_MINUTE gets its delivery folded into a summary instead. A fixed
    number of statements for any number of alerts."""
    if not alerts:
        return []
    now = now or timezone.now()
    unique = {(a.customer_id, a.dedup_key[:200]): a for a in alerts}
    existing = {
        (row.customer_id, row.dedup_key): row
        for row in AlertEvent.objects.select_for_update().filter(
            customer_id__in={c for c, _ in unique}, dedup_key__in={k for _, k in unique}
        )
    }
    for key, row in existing.items():
        alert = unique[key]
        if alert.fold is not None:
            row.data = alert.fold(row.data, alert.data)
            row.save(update_fields=["data"])
    fresh = [
        AlertEvent(
            customer_id=a.customer_id,
            type=a.type,
            severity=a.severity or EVENT_RULES[a.type].severity,
            created_at=now,
            data=a.data,
            dedup_key=key[1],
        )
        for key, a in unique.items()
        if key not in existing
    ]
    try:
        with transaction.atomic():
            events = AlertEvent.objects.bulk_create(fresh)
    except IntegrityError:  # a concurrent emitter stored one first: theirs stands
        events = []
        for event in fresh:
            try:
                with transaction.atomic():
                    event.save(force_insert=True)
                events.append(event)
            except IntegrityError:
                continue
    _fan_out(events, now, only_channel)
    return events


def _fan_out(events: list[AlertEvent], now: datetime, only: AlertChannel | None) -> None:
    if not events:
        return
    if only is not None:
        pairs = [(event, only) for event in events]
    else:
        channels = list(
            AlertChannel.objects.filter(
                customer_id__in={e.customer_id for e in events}, disabled_at__isnull=True
            )
        )
        pairs = [
            (event, channel)
            for event in events
            for channel in channels
            if channel.customer_id == event.customer_id and channel_wants(channel, event)
        ]
    if not pairs:
        return
    sent = _recent_first_attempts({c.pk for _, c in pairs}, now) if only is None else Counter()
    limit = settings.ALERT_CHANNEL_MAX_PER_MINUTE
    rows = []
    for event, channel in pairs:
        sent[channel.pk] += 1
        # Never held back: a resolve (a folded one would leave its incident open), nor
        # anything for PagerDuty, which folds repeats by their dedup key itself and
        # takes no summary (it is no incident).
        exempt = (
            EVENT_RULES[event.type].pagerduty == "resolve"
            or channel.kind == AlertChannelKind.PAGERDUTY
        )
        held = only is None and sent[channel.pk] > limit and not exempt
        rows.append(
            AlertDelivery(
                customer_id=event.customer_id,
                event=event,
                channel=channel,
                state=AlertDeliveryState.FOLDED if held else AlertDeliveryState.SCHEDULED,
                created_at=now,
                next_attempt_at=now,
                retry_until=now + policy.ALERT_RETRY_FOR,
            )
        )
    created = AlertDelivery.objects.bulk_create(rows)
    scheduled = [d.pk for d in created if d.state == AlertDeliveryState.SCHEDULED]
    transaction.on_commit(lambda: alert_deliveries_send_soon(scheduled))


def _recent_first_attempts(channel_ids: set[int], now: datetime) -> Counter[int]:
    """Deliveries each channel was given within the storm window (summaries included,
    folded ones not)."""
    counts = (
        AlertDelivery.objects.filter(
            channel_id__in=channel_ids,
            attempt=1,
            created_at__gt=now - policy.ALERT_STORM_WINDOW,
        )
        .exclude(state=AlertDeliveryState.FOLDED)
        .values("channel_id")
        .annotate(n=Count("id"))
        .order_by()
    )
    return Counter({row["channel_id"]: row["n"] for row in counts})


# Sends held back while a multi-transaction change runs (the sweep's chunks), so an event
# folded over its chunks is sent once, complete.
_held: ContextVar[list[int] | None] = ContextVar("alert_sends_held", default=None)


@contextmanager
def alert_sends_held() -> Iterator[None]:
    held: list[int] = []
    token = _held.set(held)
    try:
        yield
    finally:
        _held.reset(token)
        alert_deliveries_send_soon(held)


def alert_deliveries_send_soon(delivery_ids: list[int]) -> None:
    """Queue a send task for each delivery; the broker away costs a delay, not a loss:
    the delivery sweep finds what was not sent."""
    if not delivery_ids:
        return
    held = _held.get()
    if held is not None:
        held.extend(delivery_ids)
        return
    from fleet.tasks import deliver_alert

    for pk in delivery_ids:
        try:
            deliver_alert.delay(pk)
        except Exception:  # the broker's errors vary by transport; the sweep covers them
            logger.warning("could not queue alert delivery %d; the sweep will send it", pk)
            return
