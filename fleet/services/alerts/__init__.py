"""Alerts: events emitted with their causes (events.py), channels and what people do to
them (channels.py), what each kind of channel receives (messages.py), delivery with
retries, storm folding and auto-disable (delivery.py), and beat's watches (watch.py)."""

from fleet.services.alerts.channels import (
    alert_channel_create,
    alert_channel_delete,
    alert_channel_enable,
    alert_channel_test,
    alert_delivery_redeliver,
    alert_url_check,
    webhook_secret,
)
from fleet.services.alerts.delivery import (
    alert_deliveries_sweep,
    alert_delivery_send,
    alert_summaries_send,
)
from fleet.services.alerts.events import (
    Alert,
    alert_emit,
    alert_sends_held,
    alerts_emit,
)
from fleet.services.alerts.watch import (
    alerts_daily_digest,
    alerts_license_watch,
    alerts_online_ratio_watch,
    license_near_cap_alert,
)

__all__ = [
    "Alert",
    "alert_channel_create",
    "alert_channel_delete",
    "alert_channel_enable",
    "alert_channel_test",
    "alert_deliveries_sweep",
    "alert_delivery_redeliver",
    "alert_delivery_send",
    "alert_emit",
    "alert_sends_held",
    "alert_summaries_send",
    "alert_url_check",
    "alerts_daily_digest",
    "alerts_emit",
    "alerts_license_watch",
    "alerts_online_ratio_watch",
    "license_near_cap_alert",
    "webhook_secret",
]
