"""What each kind of channel receives for an event: the signed webhook body, a Slack
message, a PagerDuty Events API v2 event, an email. Pure functions of the event."""

import hashlib
import hmac
import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from django.conf import settings
from django.template.loader import render_to_string

from fleet.choices import AlertEventType, AnomalySeverity
from fleet.models import AlertEvent
from fleet.services.alerts.events import EVENT_RULES

SIGNATURE_HEADER = "Agentina-Signature"


def webhook_body(event: AlertEvent) -> bytes:
    """The JSON a webhook receives; `id` is the same on every retry, to dedupe on."""
    return json.dumps(
        {
            "id": event.public_id,
            "type": event.type,
            "created_at": event.created_at.isoformat(),
            "customer": event.customer.slug,
            "severity": event.severity,
            "data": event.data,
        },
        separators=(",", ":"),
        sort_keys=True,
    ).encode()


def webhook_signature(secret: str, body: bytes, timestamp: int) -> str:
    """Stripe's scheme: `t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>.<raw body>")>`."""
    signed = f"{timestamp}.".encode() + body
    digest = hmac.new(secret.encode(), signed, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={digest}"


def _names(names: list[str], count: int) -> str:
    shown = ", ".join(names[:5])
    return shown + (f" and {count - 5} more" if count > 5 else "")


def _since(value: str) -> str:
    return datetime.fromisoformat(value).strftime("%H:%M UTC")


def event_summary(event: AlertEvent) -> str:
    """One line a person reads, in a Slack message, a PagerDuty incident, a subject."""
    d = event.data
    match event.type:
        case AlertEventType.AGENTS_OFFLINE:
            count = d.get("count", 0)
            agents = _names(d.get("agents", []), count)
            plural = "s" if count != 1 else ""
            return f"{count} agent{plural} offline since {_since(d['since'])}: {agents}"
        case AlertEventType.AGENTS_BACK_ONLINE:
            still = d.get("still_offline", 0)
            return f"{d.get('agent')} is back online ({still} still offline)"
        case AlertEventType.ONLINE_RATIO_LOW:
            return (
                f"Only {d.get('online_ratio', 0):.0%} of the fleet online for "
                f"{d.get('minutes')} minutes (target {d.get('target', 0):.0%})"
            )
        case AlertEventType.ONLINE_RATIO_RECOVERED:
            return f"The fleet is back to {d.get('online_ratio', 0):.0%} online"
        case AlertEventType.ANOMALY_OPENED:
            return f"{d.get('severity', '').capitalize()} finding: {d.get('message')}"
        case AlertEventType.ANOMALIES_DAILY_DIGEST:
            return f"{d.get('unresolved')} unresolved finding(s) at the end of {d.get('date')}"
        case AlertEventType.ROLLOUT_PAUSED:
            return f"Upgrade wave to {d.get('release')} paused: {d.get('reason')}"
        case AlertEventType.ROLLOUT_ROLLED_BACK:
            return f"{d.get('agent')} rolled back from {d.get('to_version')} ({d.get('outcome')})"
        case AlertEventType.ROLLOUT_COMPLETED:
            return f"Upgrade wave to {d.get('release')} completed"
        case AlertEventType.TOKEN_REUSED:
            return f"Token {d.get('token')}… presented again by {d.get('hostname')}"
        case AlertEventType.LICENSE_NEAR_CAP:
            return f"{d.get('seats_used')} of {d.get('max_agents')} license seats in use"
        case AlertEventType.LICENSE_EXPIRING:
            return f"The license expires in {d.get('days')} days ({d.get('valid_until')})"
        case AlertEventType.ALERTS_SUMMARY:
            return (
                f"{d.get('held_back')} more alert(s) in the last minute, held back by this "
                "channel's per-minute limit: see the portal's Alerts page"
            )
        case _:
            return str(d.get("message") or event.get_type_display())


def portal_link(event: AlertEvent) -> str:
    return settings.PORTAL_URL.rstrip("/") + str(event.data.get("portal_path") or "/portal/alerts/")


def _slack_text(text: str) -> str:
    """Text as Slack shows it literally: a hostname a machine chose must not become a
    link ("<https://evil|Open in Agentina>") in the customer's channel."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def slack_body(event: AlertEvent) -> bytes:
    """An incoming-webhook message: the line, its severity and a link back to the portal."""
    text = (
        f"*{event.get_type_display()}* ({event.severity}) — "
        f"{_slack_text(event_summary(event))}\n"
        f"<{portal_link(event)}|Open in Agentina> · {_slack_text(event.customer.name)}"
    )
    return json.dumps({"text": text, "unfurl_links": False}).encode()


_PD_SEVERITY = {
    AnomalySeverity.INFO: "info",
    AnomalySeverity.WARNING: "warning",
    AnomalySeverity.CRITICAL: "critical",
}


def pagerduty_body(event: AlertEvent, routing_key: str) -> bytes:
    """An Events API v2 event: trigger or resolve the incident the event names (its
    `incident` data, or the event itself), so the incident closes when the cause clears."""
    action = EVENT_RULES[event.type].pagerduty
    incident = event.data.get("incident") or event.dedup_key
    body: dict[str, Any] = {
        "routing_key": routing_key,
        "event_action": action,
        "dedup_key": f"agentina:{event.customer.slug}:{incident}"[:255],
    }
    if action == "trigger":
        body["payload"] = {
            "summary": f"{event.customer.name}: {event_summary(event)}"[:1024],
            "source": f"agentina/{event.customer.slug}",
            "severity": _PD_SEVERITY[AnomalySeverity(event.severity)],
            "timestamp": event.created_at.isoformat(),
            "component": event.type,
            "custom_details": event.data,
        }
        body["links"] = [{"href": portal_link(event), "text": "Open in Agentina"}]
    return json.dumps(body).encode()


@dataclass(frozen=True)
class Email:
    subject: str
    text: str
    html: str


def email_message(event: AlertEvent) -> Email:
    context: dict[str, Any] = {
        "event": event,
        "summary": event_summary(event),
        "link": portal_link(event),
        "data": json.dumps(event.data, indent=2, sort_keys=True),
    }
    return Email(
        subject=f"[Agentina · {event.customer.name}] {event_summary(event)}"[:200],
        text=render_to_string("alerts/email.txt", context),
        html=render_to_string("alerts/email.html", context),
    )
