"""Alert channels: where a customer's alerts go, checked before they are stored (a URL
that could reach our own network is refused), and the writes people make to them."""

import ipaddress
import secrets
import socket
from typing import Any
from urllib.parse import urlsplit

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.validators import EmailValidator, URLValidator
from django.db import IntegrityError, transaction
from django.utils import timezone
from django.utils.crypto import salted_hmac

from fleet import policy
from fleet.choices import (
    AlertChannelKind,
    AlertDeliveryState,
    AlertEventType,
    AnomalySeverity,
    AuditAction,
)
from fleet.errors import AlertDeliveryRefused, InvalidAlertChannel
from fleet.models import AlertChannel, AlertDelivery, AlertEvent, Customer
from fleet.services.alerts.events import Alert, alert_deliveries_send_soon, alerts_emit
from fleet.services.audit import Actor, audit_record

WEBHOOK_SECRET_PREFIX = "whsec_"  # noqa: S105 (a prefix, not a secret)
_URL_KINDS = (AlertChannelKind.WEBHOOK, AlertChannelKind.SLACK, AlertChannelKind.PAGERDUTY)


def webhook_secret(channel: AlertChannel) -> str:
    """The channel's signing secret: derived, never stored (the salt alone is useless
    without ALERT_SIGNING_KEY), so it can sign every delivery and a database copy cannot."""
    digest = salted_hmac(
        "agentina.alerts.webhook-secret",
        f"{channel.pk}:{channel.secret_salt}",
        secret=settings.ALERT_SIGNING_KEY,
        algorithm="sha256",
    ).hexdigest()
    return WEBHOOK_SECRET_PREFIX + digest


def _unsafe_address(address: str) -> bool:
    ip = ipaddress.ip_address(address.split("%")[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped:
        ip = ip.ipv4_mapped
    return not ip.is_global or ip.is_multicast


def alert_url_check(url: str, *, field: str = "url") -> None:
    """Refuse (422 naming the field) what is not an http(s) URL, and, unless
    ALERT_ALLOW_PRIVATE_NETWORKS, a host that resolves to a private, loopback, link-local
    or otherwise non-public address: alerts must not become a way into our network. The
    sender checks again before each delivery (DNS may change)."""
    try:
        URLValidator(schemes=["http", "https"])(url)
    except ValidationError as exc:
        raise InvalidAlertChannel(
            f"{field}: an http:// or https:// URL is needed.", field=field
        ) from exc
    if settings.ALERT_ALLOW_PRIVATE_NETWORKS:
        return
    parts = urlsplit(url)
    host = parts.hostname or ""
    try:
        infos = socket.getaddrinfo(host, parts.port or 443, proto=socket.IPPROTO_TCP)
    except (OSError, UnicodeError) as exc:
        raise InvalidAlertChannel(f"{field}: {host} does not resolve.", field=field) from exc
    if any(_unsafe_address(str(info[4][0])) for info in infos):
        raise InvalidAlertChannel(
            f"{field}: {host} resolves to a private, loopback or link-local address; "
            "alerts go to public addresses only (on-premises installs set "
            "ALERT_ALLOW_PRIVATE_NETWORKS=true).",
            field=field,
        )


def _checked(
    kind: str, url: str, email: str, routing_key: str, events: list[str], min_severity: str
) -> dict[str, Any]:
    if kind not in AlertChannelKind.values:
        raise InvalidAlertChannel(
            f"kind: one of {', '.join(AlertChannelKind.values)}.", field="kind"
        )
    unknown = sorted(set(events) - set(AlertEventType.values))
    if unknown:
        raise InvalidAlertChannel(
            f"events: unknown event type {unknown[0][:64]!r}.", field="events"
        )
    if len(events) > policy.ALERT_EVENT_TYPES_MAX:
        raise InvalidAlertChannel("events: too many event names.", field="events")
    if min_severity not in AnomalySeverity.values:
        raise InvalidAlertChannel("min_severity: info, warning or critical.", field="min_severity")
    if kind == AlertChannelKind.EMAIL:
        try:
            EmailValidator()(email)
        except ValidationError as exc:
            raise InvalidAlertChannel("email: an email address is needed.", field="email") from exc
        url = ""
    else:
        email = ""
        if kind == AlertChannelKind.PAGERDUTY:
            url = url or settings.PAGERDUTY_EVENTS_URL
            if not routing_key:
                raise InvalidAlertChannel(
                    "routing_key: PagerDuty's integration key is needed.", field="routing_key"
                )
        alert_url_check(url)
    return {
        "kind": kind,
        "url": url,
        "email": email,
        "routing_key": routing_key if kind == AlertChannelKind.PAGERDUTY else "",
        "events": sorted(set(events)),
        "min_severity": min_severity,
    }


@transaction.atomic
def alert_channel_create(
    *,
    customer: Customer,
    kind: str,
    url: str = "",
    email: str = "",
    routing_key: str = "",
    events: list[str] | None = None,
    min_severity: str = AnomalySeverity.INFO,
    name: str = "",
    actor: Actor,
) -> tuple[AlertChannel, str | None]:
    """A new channel; for a webhook, its signing secret is returned (shown once)."""
    fields = _checked(kind, url, email, routing_key, events or [], min_severity)
    channel = AlertChannel.objects.create(
        customer=customer,
        name=name,
        created_by=actor.user,
        secret_salt=secrets.token_hex(16) if kind == AlertChannelKind.WEBHOOK else "",
        **fields,
    )
    secret = None
    if kind == AlertChannelKind.WEBHOOK:
        secret = webhook_secret(channel)
        channel.secret_prefix = secret[: len(WEBHOOK_SECRET_PREFIX) + 6]
        channel.save(update_fields=["secret_prefix"])
    audit_record(
        actor=actor,
        action=AuditAction.ALERT_CHANNEL_CREATE,
        target=channel,
        customer=customer.pk,
        changes={"kind": [None, kind], "events": [None, fields["events"]]},
    )
    return channel, secret


@transaction.atomic
def alert_channel_delete(*, channel: AlertChannel, actor: Actor) -> None:
    """Remove a channel and its delivery log (the audit log keeps that it existed)."""
    audit_record(
        actor=actor,
        action=AuditAction.ALERT_CHANNEL_DELETE,
        target=channel,
        customer=channel.customer_id,
    )
    channel.delete()


@transaction.atomic
def alert_channel_test(*, channel: AlertChannel, actor: Actor) -> AlertEvent:
    """Send an alert.test event to this channel now (disabled or not: a test is how an
    owner learns it works again)."""
    now = timezone.now()
    [event] = alerts_emit(
        [
            Alert(
                channel.customer_id,
                AlertEventType.ALERT_TEST,
                f"alert.test:{secrets.token_hex(8)}",
                {"message": f"A test from {actor.label}: this channel works.", "by": actor.label},
            )
        ],
        now=now,
        only_channel=channel,
    )
    audit_record(
        actor=actor,
        action=AuditAction.ALERT_CHANNEL_TEST,
        target=channel,
        customer=channel.customer_id,
    )
    return event


@transaction.atomic
def alert_channel_enable(*, channel: AlertChannel, actor: Actor) -> bool:
    """Turn a channel disabled by its failures back on."""
    if not AlertChannel.objects.filter(pk=channel.pk, disabled_at__isnull=False).update(
        disabled_at=None, disabled_reason="", failing_since=None
    ):
        return False
    audit_record(
        actor=actor,
        action=AuditAction.ALERT_CHANNEL_ENABLE,
        target=channel,
        customer=channel.customer_id,
    )
    return True


@transaction.atomic
def alert_delivery_redeliver(*, delivery: AlertDelivery, actor: Actor) -> AlertDelivery:
    """A new attempt, now, of an event its channel has not received. Refused when it was
    delivered or an attempt is already scheduled or under way (a database constraint
    decides a click racing a retry), so the receiver still gets it once."""
    pair = AlertDelivery.objects.filter(event_id=delivery.event_id, channel_id=delivery.channel_id)
    if pair.filter(state=AlertDeliveryState.SUCCEEDED).exists():
        raise AlertDeliveryRefused("This event was already delivered to this channel.")
    last = pair.order_by("-attempt").values_list("attempt", flat=True).first() or 0
    now = timezone.now()
    try:
        with transaction.atomic():
            again = AlertDelivery.objects.create(
                customer_id=delivery.customer_id,
                event_id=delivery.event_id,
                channel_id=delivery.channel_id,
                attempt=last + 1,
                created_at=now,
                next_attempt_at=now,
                retry_until=now + policy.ALERT_RETRY_FOR,
            )
    except IntegrityError as exc:
        raise AlertDeliveryRefused(
            "An attempt is already scheduled or under way for this event and channel."
        ) from exc
    audit_record(
        actor=actor,
        action=AuditAction.ALERT_REDELIVER,
        target=again,
        customer=delivery.customer_id,
    )
    transaction.on_commit(lambda: alert_deliveries_send_soon([again.pk]))
    return again
