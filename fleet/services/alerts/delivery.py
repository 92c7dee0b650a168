"""Delivering alerts: one attempt at a time per (event, channel), claimed by a conditional
UPDATE so two senders never send one attempt; failures retried with backoff for 24 h;
a channel failing for 24 h disabled, with a notice and an email to its owners."""

import email.utils
import logging
import random
import smtplib
import time
from collections import Counter, defaultdict
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import httpx
from django.conf import settings
from django.core.mail import EmailMultiAlternatives, send_mail
from django.db import transaction
from django.template.loader import render_to_string
from django.utils import timezone

from fleet import policy
from fleet.choices import (
    AlertChannelKind,
    AlertDeliveryState,
    AlertEventType,
    AuditAction,
    MemberRole,
)
from fleet.errors import InvalidAlertChannel
from fleet.models import AlertChannel, AlertDelivery, Membership
from fleet.services.alerts.channels import alert_url_check, webhook_secret
from fleet.services.alerts.events import Alert, alert_deliveries_send_soon, alerts_emit
from fleet.services.alerts.messages import (
    SIGNATURE_HEADER,
    email_message,
    pagerduty_body,
    slack_body,
    webhook_body,
    webhook_signature,
)
from fleet.services.audit import SYSTEM, audit_record

logger = logging.getLogger(__name__)

S = AlertDeliveryState


@dataclass(frozen=True)
class Outcome:
    ok: bool
    status_code: int | None = None
    error: str = ""
    retry: bool = False  # a passing failure (network, 429, 5xx): try again later
    retry_after: float | None = None  # seconds, as the receiver asked


def _retry_after(value: str | None) -> float | None:
    """Retry-After in seconds or as an HTTP date; None for anything else (a receiver's
    malformed header must never break the delivery that read it)."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        parsed = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if parsed.tzinfo is None:  # "-0000": a time in UTC of unknown origin
        parsed = parsed.replace(tzinfo=UTC)
    return max(0.0, (parsed - timezone.now()).total_seconds())


def _post(url: str, body: bytes, headers: dict[str, str]) -> Outcome:
    """POST with a short timeout and no redirects (a 3xx is a failure: point the channel
    at the final URL), after checking again where the URL resolves."""
    try:
        alert_url_check(url)
    except InvalidAlertChannel as exc:
        return Outcome(ok=False, error=exc.detail)
    try:
        with httpx.Client(
            timeout=settings.ALERT_TIMEOUT_SECONDS, follow_redirects=False, trust_env=False
        ) as client:
            response = client.post(
                url,
                content=body,
                headers={
                    "Content-Type": "application/json",
                    "User-Agent": "Agentina-Alerts/1",
                    **headers,
                },
            )
    except httpx.TimeoutException as exc:
        return Outcome(
            ok=False,
            error=f"timed out after {settings.ALERT_TIMEOUT_SECONDS:g} s ({type(exc).__name__})",
            retry=True,
        )
    except httpx.HTTPError as exc:
        return Outcome(ok=False, error=f"{type(exc).__name__}: {exc}"[:500], retry=True)
    code = response.status_code
    if 200 <= code < 300:
        return Outcome(ok=True, status_code=code)
    passing = code == 429 or code >= 500
    return Outcome(
        ok=False,
        status_code=code,
        error=f"HTTP {code}" + (" (redirects are not followed)" if 300 <= code < 400 else ""),
        retry=passing,
        retry_after=_retry_after(response.headers.get("Retry-After")) if passing else None,
    )


def _send_email(channel: AlertChannel, delivery: AlertDelivery) -> Outcome:
    message = email_message(delivery.event)
    mail = EmailMultiAlternatives(message.subject, message.text, to=[channel.email])
    mail.attach_alternative(message.html, "text/html")
    try:
        mail.send()
    except smtplib.SMTPRecipientsRefused as exc:
        return Outcome(ok=False, error=f"recipient refused: {exc}"[:500])
    except (smtplib.SMTPException, OSError) as exc:
        return Outcome(ok=False, error=f"{type(exc).__name__}: {exc}"[:500], retry=True)
    return Outcome(ok=True)


def alert_send(channel: AlertChannel, delivery: AlertDelivery, *, now: datetime) -> Outcome:
    """One attempt over the channel's kind."""
    event = delivery.event
    if channel.kind == AlertChannelKind.EMAIL:
        return _send_email(channel, delivery)
    if channel.kind == AlertChannelKind.SLACK:
        return _post(channel.url, slack_body(event), {})
    if channel.kind == AlertChannelKind.PAGERDUTY:
        return _post(channel.url, pagerduty_body(event, channel.routing_key), {})
    body = webhook_body(event)
    signature = webhook_signature(webhook_secret(channel), body, int(now.timestamp()))
    return _post(
        channel.url,
        body,
        {
            SIGNATURE_HEADER: signature,
            "Agentina-Event": event.type,
            "Agentina-Event-Id": event.public_id,
        },
    )


def _backoff(attempt: int, retry_after: float | None) -> timedelta:
    """Exponential from ALERT_BACKOFF_FIRST with full jitter in its upper half, or what
    the receiver asked (Retry-After), both capped at ALERT_BACKOFF_MAX."""
    cap = policy.ALERT_BACKOFF_MAX.total_seconds()
    if retry_after is not None:
        return timedelta(seconds=min(cap, retry_after))
    base = min(cap, policy.ALERT_BACKOFF_FIRST.total_seconds() * 2 ** (attempt - 1))
    return timedelta(seconds=random.uniform(base / 2, base))


def alert_delivery_send(delivery_id: int, *, now: datetime | None = None) -> str:
    """Send one scheduled attempt, once: it is claimed by a conditional UPDATE (a second
    sender, a redelivered task or the sweep finds it taken and does nothing), and an
    event its channel already received is not sent again. Returns what happened."""
    now = now or timezone.now()
    if not AlertDelivery.objects.filter(
        pk=delivery_id, state=S.SCHEDULED, next_attempt_at__lte=now
    ).update(state=S.SENDING, lease_until=now + policy.ALERT_SENDER_LEASE, attempted_at=now):
        return "not due, or another sender has it"
    delivery = AlertDelivery.objects.select_related("event__customer", "channel").get(
        pk=delivery_id
    )
    channel = delivery.channel
    done = AlertDelivery.objects.filter(
        event_id=delivery.event_id, channel_id=channel.pk, state=S.SUCCEEDED
    ).exists()
    if done or (not channel.enabled and delivery.event.type != AlertEventType.ALERT_TEST):
        why = "already delivered by another attempt" if done else "the channel is disabled"
        _finish(delivery, state=S.FAILED, error=why)
        return why
    started = time.monotonic()
    outcome = alert_send(channel, delivery, now=now)
    latency = round((time.monotonic() - started) * 1000)
    finished = timezone.now()
    with transaction.atomic():
        if outcome.ok:
            _finish(delivery, state=S.SUCCEEDED, outcome=outcome, latency=latency, at=finished)
            AlertChannel.objects.filter(pk=channel.pk).update(failing_since=None)
            return f"delivered ({outcome.status_code or 'sent'})"
        again = outcome.retry and finished < delivery.retry_until
        _finish(
            delivery,
            state=S.RETRYING if again else S.FAILED,
            outcome=outcome,
            latency=latency,
            at=finished,
        )
        if again:
            AlertDelivery.objects.create(
                customer_id=delivery.customer_id,
                event_id=delivery.event_id,
                channel_id=channel.pk,
                attempt=delivery.attempt + 1,
                created_at=finished,
                next_attempt_at=finished + _backoff(delivery.attempt, outcome.retry_after),
                retry_until=delivery.retry_until,
            )
        _note_failure(channel, outcome.error, finished)
    return f"failed ({outcome.error}); " + ("retry scheduled" if again else "final")


def _finish(
    delivery: AlertDelivery,
    *,
    state: str,
    error: str = "",
    outcome: Outcome | None = None,
    latency: int | None = None,
    at: datetime | None = None,
) -> None:
    AlertDelivery.objects.filter(pk=delivery.pk, state=S.SENDING).update(
        state=state,
        lease_until=None,
        status_code=outcome.status_code if outcome else None,
        error=(outcome.error if outcome else error)[:500],
        latency_ms=latency,
        delivered_at=at if state == S.SUCCEEDED else None,
    )


def _note_failure(channel: AlertChannel, error: str, now: datetime) -> None:
    """Start (or continue) the channel's run of failures; after ALERT_DISABLE_AFTER of it,
    disable the channel and tell its owners."""
    AlertChannel.objects.filter(pk=channel.pk, failing_since__isnull=True).update(failing_since=now)
    reason = f"Every delivery failed for 24 hours; the last: {error}"[:500]
    if not AlertChannel.objects.filter(
        pk=channel.pk,
        disabled_at__isnull=True,
        failing_since__lte=now - policy.ALERT_DISABLE_AFTER,
    ).update(disabled_at=now, disabled_reason=reason):
        return
    channel.disabled_at, channel.disabled_reason = now, reason
    audit_record(
        actor=SYSTEM,
        action=AuditAction.ALERT_CHANNEL_DISABLE,
        target=channel,
        customer=channel.customer_id,
        changes={"reason": [None, reason]},
    )
    owners = list(
        Membership.objects.filter(customer_id=channel.customer_id, role=MemberRole.OWNER)
        .exclude(user__email="")
        .values_list("user__email", flat=True)
    )
    if owners:
        channel_copy = AlertChannel.objects.select_related("customer").get(pk=channel.pk)
        body = render_to_string(
            "alerts/channel_disabled.txt",
            {"channel": channel_copy, "link": settings.PORTAL_URL.rstrip("/") + "/portal/alerts/"},
        )
        transaction.on_commit(
            lambda: send_mail(
                f"[Agentina] Alert channel disabled: {channel_copy}"[:200],
                body,
                None,
                owners,
                fail_silently=True,
            )
        )


@dataclass(frozen=True)
class DeliverySweep:
    queued: int
    reclaimed: int
    summaries: int


def alert_deliveries_sweep(*, now: datetime | None = None, limit: int = 500) -> DeliverySweep:
    """Beat's part: attempts whose sender stopped (a killed worker) are scheduled again,
    due attempts are queued (a retry's time came, or its first send's message was lost;
    a copy queued twice is refused by the claim), and each channel's held-back alerts of
    a finished minute become one summary."""
    now = now or timezone.now()
    stopped = AlertDelivery.objects.filter(state=S.SENDING, lease_until__lt=now)
    # A sender that stopped past the retry deadline (or kept failing before it could
    # record why) ends the attempt for good instead of sending it again forever.
    stopped.filter(retry_until__lte=now).update(
        state=S.FAILED,
        lease_until=None,
        error="the sender stopped before it finished, past the retry deadline",
    )
    reclaimed = stopped.update(
        state=S.SCHEDULED,
        lease_until=None,
        next_attempt_at=now,
        error="the sender stopped before it finished; sent again",
    )
    due = list(
        AlertDelivery.objects.filter(state=S.SCHEDULED, next_attempt_at__lte=now)
        .order_by("next_attempt_at")
        .values_list("pk", flat=True)[:limit]
    )
    alert_deliveries_send_soon(due)
    return DeliverySweep(len(due), reclaimed, alert_summaries_send(now=now))


@transaction.atomic
def alert_summaries_send(*, now: datetime) -> int:
    """One alerts.summary event per channel whose held-back deliveries' first minute
    ended: how many were held back, of which types; they stay in the log. Locked, so two
    sweeps never summarise one delivery twice."""
    held: dict[int, list[tuple[int, datetime, str]]] = defaultdict(list)
    for pk, channel_id, created_at, event_type in (
        AlertDelivery.objects.select_for_update(skip_locked=True, of=("self",))
        .filter(state=S.FOLDED, summarised_in__isnull=True)
        .order_by("created_at")
        .values_list("pk", "channel_id", "created_at", "event__type")
    ):
        held[channel_id].append((pk, created_at, event_type))
    due = {c: rows for c, rows in held.items() if rows[0][1] <= now - policy.ALERT_STORM_WINDOW}
    for channel in AlertChannel.objects.filter(pk__in=due):
        rows = due[channel.pk]
        first, last = rows[0][1], rows[-1][1]
        [event] = alerts_emit(
            [
                Alert(
                    channel.customer_id,
                    AlertEventType.ALERTS_SUMMARY,
                    f"alerts.summary:{channel.pk}:{first.isoformat()}",
                    {
                        "channel": str(channel),
                        "held_back": len(rows),
                        "types": dict(Counter(t for _, _, t in rows)),
                        "from": first.isoformat(),
                        "until": last.isoformat(),
                        "limit_per_minute": settings.ALERT_CHANNEL_MAX_PER_MINUTE,
                    },
                )
            ],
            now=now,
            only_channel=channel,
        )
        AlertDelivery.objects.filter(pk__in=[pk for pk, _, _ in rows]).update(summarised_in=event)
    return len(due)
