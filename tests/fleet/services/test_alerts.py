"""Alerts: events with their causes, channels' filters, delivery against real receivers
(pytest-httpserver, aiosmtpd), retries, storms, auto-disable and the SSRF guard."""

import json
import re
import threading
import time
from datetime import timedelta
from pathlib import Path

import pytest
from django.conf import settings as django_settings
from django.core import mail
from django.utils import timezone
from werkzeug import Response

from fleet.choices import AlertDeliveryState, AlertEventType, AnomalySeverity, MemberRole
from fleet.errors import AlertDeliveryRefused, InvalidAlertChannel
from fleet.models import AlertChannel, AlertDelivery, AlertEvent
from fleet.services.alerts import (
    alert_channel_create,
    alert_channel_test,
    alert_deliveries_sweep,
    alert_delivery_redeliver,
    alert_delivery_send,
    alert_emit,
    alert_summaries_send,
    webhook_secret,
)
from fleet.services.audit import SYSTEM
from fleet.services.customers import membership_set

pytestmark = pytest.mark.django_db

S = AlertDeliveryState


def readme_verify():
    """The README's ten-line verification, run as written."""
    readme = (Path(django_settings.BASE_DIR) / "README.md").read_text()
    code = re.search(r"```python\n(import hashlib.*?)```", readme, re.S)
    assert code, "the README shows how to verify a webhook"
    scope: dict = {}
    exec(code.group(1), scope)  # noqa: S102 (our own README)
    return scope["verify"]


def webhook(customer, httpserver, **kwargs):
    channel, secret = alert_channel_create(
        customer=customer, kind="webhook", url=httpserver.url_for("/hook"), actor=SYSTEM, **kwargs
    )
    return channel, secret


def emit(customer, key="k1", type=AlertEventType.ANOMALY_OPENED, severity=None, **data):
    return alert_emit(
        customer=customer.pk,
        type=type,
        dedup_key=key,
        data=data or {"message": "m"},
        severity=severity,
    )


def deliveries(**filters):
    return list(AlertDelivery.objects.filter(**filters).order_by("pk"))


def send_all(now=None):
    """Send every scheduled attempt that is due by `now` (default: whenever it is due)."""
    results = []
    for d in AlertDelivery.objects.filter(state=S.SCHEDULED).order_by("pk"):
        results.append(alert_delivery_send(d.pk, now=now or max(d.next_attempt_at, timezone.now())))
    return results


def test_a_webhook_is_signed_stripe_style_and_verifies(customer, httpserver):
    channel, secret = webhook(customer, httpserver)
    assert secret and secret.startswith("whsec_") and secret == webhook_secret(channel)
    assert secret not in json.dumps(list(AlertChannel.objects.values()), default=str)  # derived
    httpserver.expect_request("/hook", method="POST").respond_with_data("ok")
    event = emit(customer, message="disk full")
    assert send_all() == ["delivered (200)"]
    request, _ = httpserver.log[0]
    body = request.get_data()
    header = request.headers["Agentina-Signature"]
    assert re.fullmatch(r"t=\d+,v1=[0-9a-f]{64}", header)
    payload = json.loads(body)
    assert payload["id"] == event.public_id and payload["type"] == "anomaly.opened"
    assert payload["customer"] == customer.slug and payload["data"] == {"message": "disk full"}
    assert {"created_at"} <= set(payload)
    verify = readme_verify()
    assert verify(secret, header, body)
    assert not verify("whsec_wrong", header, body)
    assert not verify(secret, header, body + b" ")
    t = int(header.split(",")[0][2:])
    assert not verify(secret, header, body, now=t + 301)  # the 5-minute replay window
    d = deliveries()[0]
    assert (d.state, d.status_code, d.attempt) == (S.SUCCEEDED, 200, 1)
    assert d.latency_ms is not None and d.delivered_at


def test_500_twice_then_200_is_one_successful_delivery_with_the_same_id(customer, httpserver):
    webhook(customer, httpserver)
    for status in (500, 500, 200):
        httpserver.expect_ordered_request("/hook").respond_with_data("", status=status)
    emit(customer)
    later = timezone.now() + timedelta(days=1)
    for _ in range(5):
        send_all(now=later)
    states = [(d.attempt, d.state, d.status_code) for d in deliveries()]
    assert states == [(1, S.RETRYING, 500), (2, S.RETRYING, 500), (3, S.SUCCEEDED, 200)]
    ids = {json.loads(r.get_data())["id"] for r, _ in httpserver.log}
    assert len(httpserver.log) == 3 and len(ids) == 1
    assert AlertChannel.objects.get().failing_since is None  # a success ends the failing run


def test_backoff_grows_with_jitter_and_honours_retry_after(customer, httpserver):
    webhook(customer, httpserver)
    httpserver.expect_ordered_request("/hook").respond_with_data("", status=503)
    httpserver.expect_ordered_request("/hook").respond_with_data(
        "", status=429, headers={"Retry-After": "120"}
    )
    emit(customer)
    send_all()
    first_retry = deliveries()[1]
    wait = (first_retry.next_attempt_at - first_retry.created_at).total_seconds()
    assert 5 <= wait <= 10  # the first backoff: 10 s, jittered in its upper half
    send_all(now=first_retry.next_attempt_at)
    second_retry = deliveries()[2]
    wait = (second_retry.next_attempt_at - second_retry.created_at).total_seconds()
    assert 119 <= wait <= 121  # what the receiver asked


@pytest.mark.parametrize("header", ["1.5", "soon", "Wed, 21 Oct 2015 07:28:00 -0000", ""])
def test_a_malformed_or_odd_retry_after_is_a_plain_retry_never_a_stuck_delivery(
    customer, httpserver, header
):
    """A receiver's Retry-After that is no integer ("1.5", text, a date without a zone)
    once raised after the attempt was claimed: the row stayed `sending` and was sent
    again every two minutes forever, past the 24-hour limit."""
    webhook(customer, httpserver)
    httpserver.expect_ordered_request("/hook").respond_with_data(
        "", status=503, headers={"Retry-After": header}
    )
    emit(customer)
    send_all()
    first, retry = deliveries()
    assert (first.state, retry.state) == (S.RETRYING, S.SCHEDULED)
    wait = (retry.next_attempt_at - retry.created_at).total_seconds()
    assert 0 <= wait <= 10


def test_a_sender_stopped_past_the_retry_deadline_fails_for_good(customer, httpserver):
    webhook(customer, httpserver)
    emit(customer)
    later = timezone.now() + timedelta(hours=25)
    AlertDelivery.objects.update(state=S.SENDING, lease_until=later - timedelta(hours=1))
    alert_deliveries_sweep(now=later)
    assert [d.state for d in deliveries()] == [S.FAILED]
    assert httpserver.log == []


def test_a_4xx_is_final_and_a_redirect_is_not_followed(customer, httpserver):
    webhook(customer, httpserver)
    httpserver.expect_ordered_request("/hook").respond_with_data("", status=410)
    httpserver.expect_ordered_request("/hook").respond_with_data(
        "", status=302, headers={"Location": httpserver.url_for("/elsewhere")}
    )
    emit(customer, "a")
    emit(customer, "b")
    send_all()
    assert [(d.state, d.status_code) for d in deliveries()] == [(S.FAILED, 410), (S.FAILED, 302)]
    assert "redirects are not followed" in deliveries()[1].error
    assert [r.path for r, _ in httpserver.log] == ["/hook", "/hook"]


def test_retries_stop_after_24_hours(customer, httpserver):
    webhook(customer, httpserver)
    httpserver.expect_request("/hook").respond_with_data("", status=500)
    emit(customer)
    AlertDelivery.objects.update(retry_until=timezone.now())
    send_all()
    assert [d.state for d in deliveries()] == [S.FAILED]


def test_a_hanging_receiver_hits_the_timeout_and_is_retried(customer, httpserver, settings):
    settings.ALERT_TIMEOUT_SECONDS = 0.5
    release = threading.Event()

    def hang(request):
        release.wait(5)
        return Response("late")

    httpserver.expect_request("/hook").respond_with_handler(hang)
    webhook(customer, httpserver)
    emit(customer)
    started = time.monotonic()
    send_all()
    elapsed = time.monotonic() - started
    release.set()
    first, retry = deliveries()
    assert elapsed < 2
    assert first.state == S.RETRYING and "timed out after 0.5 s" in first.error
    assert retry.state == S.SCHEDULED


def test_a_sent_attempt_is_not_sent_again_and_a_redelivery_waits_its_turn(customer, httpserver):
    webhook(customer, httpserver)
    httpserver.expect_request("/hook").respond_with_data("", status=500)
    emit(customer)
    [first] = deliveries()
    assert alert_delivery_send(first.pk) != alert_delivery_send(first.pk)  # the second: taken
    assert len(httpserver.log) == 1
    retry = deliveries()[1]
    with pytest.raises(AlertDeliveryRefused):  # an attempt is already scheduled
        alert_delivery_redeliver(delivery=first, actor=SYSTEM)
    httpserver.clear()
    httpserver.expect_request("/hook").respond_with_data("ok")
    alert_delivery_send(retry.pk, now=retry.next_attempt_at)
    with pytest.raises(AlertDeliveryRefused):  # delivered: never twice
        alert_delivery_redeliver(delivery=first, actor=SYSTEM)


def test_a_redelivery_of_a_failed_event_is_sent_once_more(customer, httpserver):
    webhook(customer, httpserver)
    httpserver.expect_ordered_request("/hook").respond_with_data("", status=400)
    httpserver.expect_ordered_request("/hook").respond_with_data("ok")
    emit(customer)
    send_all()
    again = alert_delivery_redeliver(delivery=deliveries()[0], actor=SYSTEM)
    assert again.attempt == 2
    send_all()
    assert [d.state for d in deliveries()] == [S.FAILED, S.SUCCEEDED]


def test_a_stopped_sender_frees_its_attempt_and_the_sweep_sends_it(customer, httpserver):
    webhook(customer, httpserver)
    httpserver.expect_request("/hook").respond_with_data("ok")
    emit(customer)
    AlertDelivery.objects.update(state=S.SENDING, lease_until=timezone.now() - timedelta(seconds=1))
    sweep = alert_deliveries_sweep()
    assert (sweep.reclaimed, sweep.queued) == (1, 1)  # queued: sent at once (tasks eager)
    assert [d.state for d in deliveries()] == [S.SUCCEEDED]
    assert alert_deliveries_sweep().queued == 0


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_two_concurrent_deliverers_deliver_once(customer, httpserver, monkeypatch):
    from django.db import connection

    from fleet.services.alerts import events

    monkeypatch.setattr(events, "alert_deliveries_send_soon", lambda ids: None)  # threads send
    webhook(customer, httpserver)
    httpserver.expect_request("/hook").respond_with_handler(
        lambda r: (time.sleep(0.2), Response("ok"))[1]
    )
    emit(customer)
    [pk] = AlertDelivery.objects.values_list("pk", flat=True)
    barrier = threading.Barrier(4)
    results = []

    def deliver():
        try:
            barrier.wait()
            results.append(alert_delivery_send(pk))
        finally:
            connection.close()

    threads = [threading.Thread(target=deliver) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(r.startswith("delivered") for r in results) == [False, False, False, True]
    assert len(httpserver.log) == 1
    assert AlertDelivery.objects.filter(state=S.SUCCEEDED).count() == 1


def test_the_database_refuses_a_second_success_for_one_event_and_channel(customer, httpserver):
    from django.db import IntegrityError, transaction

    channel, _ = webhook(customer, httpserver)
    event = emit(customer)
    now = timezone.now()
    AlertDelivery.objects.update(state=S.SUCCEEDED)
    with pytest.raises(IntegrityError), transaction.atomic():
        AlertDelivery.objects.create(
            customer=customer,
            event=event,
            channel=channel,
            attempt=2,
            state=S.SUCCEEDED,
            retry_until=now,
        )


def test_events_fold_by_dedup_key_and_channels_filter(customer, httpserver):
    only_paused, _ = alert_channel_create(
        customer=customer,
        kind="slack",
        url=httpserver.url_for("/slack"),
        events=["rollout.paused"],
        actor=SYSTEM,
    )
    critical, _ = alert_channel_create(
        customer=customer,
        kind="webhook",
        url=httpserver.url_for("/crit"),
        min_severity=AnomalySeverity.CRITICAL,
        actor=SYSTEM,
    )
    assert emit(customer, "same", severity="warning") is not None
    assert emit(customer, "same", severity="warning") is None  # folded: one event
    emit(customer, "bad", severity="critical")
    emit(customer, "paused", type=AlertEventType.ROLLOUT_PAUSED, reason="r")
    emit(customer, "back", type=AlertEventType.AGENTS_BACK_ONLINE, agent="a")  # a resolve
    got = {(d.channel_id, d.event.dedup_key) for d in AlertDelivery.objects.select_related("event")}
    assert got == {
        (only_paused.pk, "paused"),
        (critical.pk, "bad"),
        (critical.pk, "paused"),
        (critical.pk, "back"),  # what closes an incident passes every severity filter
    }
    assert AlertEvent.objects.count() == 4


def test_a_storm_is_capped_per_channel_then_summarised_once(customer, httpserver, settings):
    settings.ALERT_CHANNEL_MAX_PER_MINUTE = 3
    webhook(customer, httpserver)
    for i in range(7):
        emit(customer, f"k{i}")
    assert [d.state for d in deliveries()] == [S.SCHEDULED] * 3 + [S.FOLDED] * 4
    assert alert_summaries_send(now=timezone.now()) == 0  # the minute is not over
    later = timezone.now() + timedelta(seconds=61)
    assert alert_summaries_send(now=later) == 1
    assert alert_summaries_send(now=later) == 0
    summary = AlertEvent.objects.get(type=AlertEventType.ALERTS_SUMMARY)
    assert summary.data["held_back"] == 4 and summary.data["types"] == {"anomaly.opened": 4}
    assert AlertDelivery.objects.filter(event=summary, state=S.SCHEDULED).count() == 1


def test_resolves_and_pagerduty_are_never_held_back_so_no_summary_reaches_pagerduty(
    customer, httpserver, settings
):
    """PagerDuty folds repeats by dedup key itself, and a summary (no incident) once went
    to it with an empty event_action, a 400 that counted towards disabling the channel;
    a held-back resolve would have left its incident open for good."""
    settings.ALERT_CHANNEL_MAX_PER_MINUTE = 1
    alert_channel_create(
        customer=customer,
        kind="pagerduty",
        url=httpserver.url_for("/pd"),
        routing_key="R0123",
        actor=SYSTEM,
    )
    webhook(customer, httpserver)
    for i in range(3):
        emit(customer, f"p{i}", type=AlertEventType.ROLLOUT_PAUSED)
    emit(customer, "done", type=AlertEventType.ROLLOUT_COMPLETED, incident="p0")
    pagerduty = deliveries(channel__kind="pagerduty")
    assert [d.state for d in pagerduty] == [S.SCHEDULED] * 4
    hook = deliveries(channel__kind="webhook")
    assert [d.state for d in hook] == [S.SCHEDULED, S.FOLDED, S.FOLDED, S.SCHEDULED]
    assert alert_summaries_send(now=timezone.now() + timedelta(seconds=61)) == 1
    summary = AlertEvent.objects.get(type=AlertEventType.ALERTS_SUMMARY)
    assert AlertDelivery.objects.get(event=summary).channel.kind == "webhook"


def test_a_channel_failing_for_24_hours_is_disabled_and_its_owners_told(
    customer, httpserver, django_user_model, django_capture_on_commit_callbacks
):
    owner = django_user_model.objects.create_user("olga", email="olga@example.com")
    membership_set(customer=customer, user=owner, role=MemberRole.OWNER, actor=SYSTEM)
    channel, _ = webhook(customer, httpserver)
    httpserver.expect_request("/hook").respond_with_data("", status=500)
    emit(customer, "first")
    send_all()
    channel.refresh_from_db()
    assert channel.failing_since is not None and channel.disabled_at is None
    AlertChannel.objects.update(failing_since=timezone.now() - timedelta(hours=24, seconds=1))
    emit(customer, "second")
    second = AlertDelivery.objects.filter(event__dedup_key="second").get()
    with django_capture_on_commit_callbacks(execute=True):
        alert_delivery_send(second.pk)
    channel.refresh_from_db()
    assert channel.disabled_at is not None and "HTTP 500" in channel.disabled_reason
    assert [m.to for m in mail.outbox] == [["olga@example.com"]]
    assert "disabled" in mail.outbox[0].subject
    assert emit(customer, "third") is not None
    assert not AlertDelivery.objects.filter(event__dedup_key="third").exists()  # none to it


def test_the_ssrf_guard_refuses_private_loopback_link_local_and_non_http(customer, settings):
    settings.ALERT_ALLOW_PRIVATE_NETWORKS = False
    for url in (
        "http://127.0.0.1:8080/hook",
        "http://localhost/hook",
        "http://10.1.2.3/hook",
        "http://169.254.169.254/latest/meta-data",
        "http://[::1]/hook",
        "http://[::ffff:192.168.0.1]/hook",
        "file:///etc/passwd",
        "gopher://example.com/",
        "not a url",
    ):
        with pytest.raises(InvalidAlertChannel) as refused:
            alert_channel_create(customer=customer, kind="webhook", url=url, actor=SYSTEM)
        assert refused.value.field == "url", url
    assert not AlertChannel.objects.exists()


def test_the_sender_checks_the_guard_again_before_each_delivery(customer, httpserver, settings):
    webhook(customer, httpserver)  # made while private networks were allowed
    emit(customer)
    settings.ALERT_ALLOW_PRIVATE_NETWORKS = False
    send_all()
    [d] = deliveries()
    assert d.state == S.FAILED and "private, loopback or link-local" in d.error
    assert httpserver.log == []


def test_file_urls_are_refused_even_where_private_networks_are_allowed(customer):
    with pytest.raises(InvalidAlertChannel):
        alert_channel_create(customer=customer, kind="slack", url="file:///x", actor=SYSTEM)


def test_slack_gets_a_message_with_a_link_back_to_the_portal(customer, httpserver, settings):
    settings.PORTAL_URL = "https://fleet.example.com"
    alert_channel_create(
        customer=customer, kind="slack", url=httpserver.url_for("/s"), actor=SYSTEM
    )
    httpserver.expect_request("/s").respond_with_data("ok")
    alert_emit(
        customer=customer.pk,
        type=AlertEventType.ROLLOUT_PAUSED,
        dedup_key="p",
        data={
            "release": "1.2.0",
            "reason": "canary rolled back",
            "portal_path": "/portal/upgrades/4/",
        },
    )
    send_all()
    text = json.loads(httpserver.log[0][0].get_data())["text"]
    assert "Upgrade wave to 1.2.0 paused: canary rolled back" in text
    assert "<https://fleet.example.com/portal/upgrades/4/|Open in Agentina>" in text


def test_slack_shows_a_machines_words_as_text_never_as_a_link(customer, httpserver):
    alert_channel_create(
        customer=customer, kind="slack", url=httpserver.url_for("/s"), actor=SYSTEM
    )
    httpserver.expect_request("/s").respond_with_data("ok")
    alert_emit(
        customer=customer.pk,
        type=AlertEventType.ROLLOUT_PAUSED,
        dedup_key="p",
        data={"release": "1.2.0", "reason": "<https://evil.example|Open in Agentina> & more"},
    )
    send_all()
    text = json.loads(httpserver.log[0][0].get_data())["text"]
    assert "&lt;https://evil.example|Open in Agentina&gt; &amp; more" in text
    assert "<https://evil.example" not in text


def test_pagerduty_triggers_and_resolves_one_incident(customer, httpserver):
    alert_channel_create(
        customer=customer,
        kind="pagerduty",
        url=httpserver.url_for("/pd"),
        routing_key="R" * 32,
        actor=SYSTEM,
    )
    httpserver.expect_request("/pd").respond_with_data("{}", status=202)
    alert_emit(
        customer=customer.pk,
        type=AlertEventType.AGENTS_OFFLINE,
        dedup_key="off",
        data={
            "count": 2,
            "agents": ["a", "b"],
            "since": timezone.now().isoformat(),
            "incident": "agents_offline",
        },
    )
    alert_emit(  # one still offline: nothing to resolve yet, nothing sent to PagerDuty
        customer=customer.pk,
        type=AlertEventType.AGENTS_BACK_ONLINE,
        dedup_key="b1",
        data={"agent": "a", "still_offline": 1},
    )
    alert_emit(
        customer=customer.pk,
        type=AlertEventType.AGENTS_BACK_ONLINE,
        dedup_key="b2",
        data={"agent": "b", "still_offline": 0, "incident": "agents_offline"},
    )
    alert_emit(customer=customer.pk, type=AlertEventType.ANOMALIES_DAILY_DIGEST, dedup_key="d")
    send_all()
    bodies = [json.loads(r.get_data()) for r, _ in httpserver.log]
    assert [b["event_action"] for b in bodies] == ["trigger", "resolve"]
    assert (
        bodies[0]["dedup_key"]
        == bodies[1]["dedup_key"]
        == f"agentina:{customer.slug}:agents_offline"
    )
    assert bodies[0]["routing_key"] == "R" * 32
    assert bodies[0]["payload"]["severity"] == "warning"
    assert "2 agents offline since" in bodies[0]["payload"]["summary"]


def test_email_goes_through_a_real_smtp_server_with_plain_and_html_parts(customer, settings):
    from email import message_from_bytes

    from aiosmtpd.controller import Controller

    from tests.runtime import free_port

    received = []

    class Handler:
        async def handle_DATA(self, server, session, envelope):
            received.append(envelope)
            return "250 OK"

    port = free_port()
    controller = Controller(Handler(), hostname="127.0.0.1", port=port)
    controller.start()
    try:
        settings.EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
        settings.EMAIL_HOST, settings.EMAIL_PORT = "127.0.0.1", port
        channel, secret = alert_channel_create(
            customer=customer, kind="email", email="ops@example.com", actor=SYSTEM
        )
        assert secret is None
        alert_channel_test(channel=channel, actor=SYSTEM)
        send_all()
    finally:
        controller.stop()
    [envelope] = received
    assert envelope.rcpt_tos == ["ops@example.com"]
    message = message_from_bytes(envelope.content)
    plain = next(p for p in message.walk() if p.get_content_type() == "text/plain")
    assert "this channel works" in plain.get_payload(decode=True).decode()
    types = [part.get_content_type() for part in message.walk()]
    assert "text/plain" in types and "text/html" in types
    assert deliveries()[0].state == S.SUCCEEDED


def test_an_unreachable_smtp_server_is_retried(customer, settings):
    from tests.runtime import free_port

    settings.EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
    settings.EMAIL_HOST, settings.EMAIL_PORT = "127.0.0.1", free_port()
    channel, _ = alert_channel_create(
        customer=customer, kind="email", email="o@example.com", actor=SYSTEM
    )
    alert_channel_test(channel=channel, actor=SYSTEM)
    send_all()
    assert [d.state for d in deliveries()] == [S.RETRYING, S.SCHEDULED]


def test_a_test_reaches_a_disabled_channel_only(customer, httpserver):
    channel, _ = webhook(customer, httpserver)
    other, _ = alert_channel_create(
        customer=customer, kind="webhook", url=httpserver.url_for("/other"), actor=SYSTEM
    )
    AlertChannel.objects.filter(pk=channel.pk).update(disabled_at=timezone.now())
    channel.refresh_from_db()
    httpserver.expect_request("/hook").respond_with_data("ok")
    event = alert_channel_test(channel=channel, actor=SYSTEM)
    assert event.type == "alert.test"
    send_all()
    assert [(d.channel_id, d.state) for d in deliveries()] == [(channel.pk, S.SUCCEEDED)]
    assert other.deliveries.count() == 0
