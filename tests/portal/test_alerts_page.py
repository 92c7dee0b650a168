"""The Alerts page: owners and admins manage channels and redeliver; viewers see all of
it with the controls disabled and are refused the writes."""

import pytest
from django.urls import reverse
from django.utils import timezone

from fleet.choices import AlertDeliveryState
from fleet.models import AlertChannel, AlertDelivery, AlertEvent
from fleet.services.alerts import alert_channel_create, alert_channel_test
from fleet.services.audit import SYSTEM

pytestmark = pytest.mark.django_db

URL = "/portal/alerts/"


def channels_with_deliveries(customer, n=3):
    for i in range(n):
        channel, _ = alert_channel_create(
            customer=customer, kind="webhook", url=f"https://h{i}.example.com/x", actor=SYSTEM
        )
        alert_channel_test(channel=channel, actor=SYSTEM)
    AlertDelivery.objects.update(state=AlertDeliveryState.FAILED, error="HTTP 500", status_code=500)


def test_an_owner_adds_a_webhook_and_sees_its_secret_once(owner, customer):
    response = owner.post(
        URL, {"kind": "webhook", "url": "https://ops.example.com/hook", "min_severity": "info"}
    )
    assert response.status_code == 200
    html = response.content.decode()
    channel = AlertChannel.objects.get()
    from fleet.services.alerts import webhook_secret

    assert webhook_secret(channel) in html and "shown once" in html
    assert webhook_secret(channel) not in owner.get(URL).content.decode()


def test_bad_input_is_shown_on_the_form(owner, customer, settings):
    settings.ALERT_ALLOW_PRIVATE_NETWORKS = False
    response = owner.post(
        URL, {"kind": "webhook", "url": "http://127.0.0.1/x", "min_severity": "info"}
    )
    assert response.status_code == 422
    assert "private, loopback or link-local" in response.content.decode()
    assert not AlertChannel.objects.exists()


def test_the_page_reads_a_fixed_number_of_queries(owner, customer, django_assert_num_queries):
    channels_with_deliveries(customer, 2)
    owner.get(URL)
    # session, user, memberships, channels, deliveries with their events and channels
    with django_assert_num_queries(5) as few:
        owner.get(URL)
    channels_with_deliveries(customer, 6)
    with django_assert_num_queries(len(few.captured_queries)):
        html = owner.get(URL).content.decode()
    assert html.count("Redeliver") == 8


def test_an_owner_tests_redelivers_and_removes(owner, customer):
    channels_with_deliveries(customer, 1)
    channel = AlertChannel.objects.get()
    failed = AlertDelivery.objects.get()
    assert owner.post(reverse("portal:alert_redeliver", args=[failed.pk])).status_code == 302
    assert AlertDelivery.objects.filter(attempt=2, state="scheduled").count() == 1
    owner.post(reverse("portal:alert_channel_action", args=[channel.pk, "test"]))
    assert AlertEvent.objects.filter(type="alert.test").count() == 2
    owner.post(reverse("portal:alert_channel_action", args=[channel.pk, "delete"]))
    assert not AlertChannel.objects.exists()


def test_a_disabled_channel_shows_its_notice_and_can_be_enabled(owner, customer):
    channels_with_deliveries(customer, 1)
    AlertChannel.objects.update(
        disabled_at=timezone.now(),
        disabled_reason="Every delivery failed for 24 hours; the last: HTTP 500",
    )
    html = owner.get(URL).content.decode()
    assert "was disabled" in html and "Every delivery failed for 24 hours" in html
    channel = AlertChannel.objects.get()
    owner.post(reverse("portal:alert_channel_action", args=[channel.pk, "enable"]))
    assert AlertChannel.objects.get().enabled


def test_a_viewer_sees_disabled_controls_and_is_refused_every_write(viewer, customer):
    channels_with_deliveries(customer, 1)
    channel, delivery = AlertChannel.objects.get(), AlertDelivery.objects.get()
    html = viewer.get(URL).content.decode()
    assert "ask an owner of" in html and "disabled" in html
    for url, data in (
        (URL, {"kind": "webhook", "url": "https://x.example.com/", "min_severity": "info"}),
        (reverse("portal:alert_channel_action", args=[channel.pk, "test"]), {}),
        (reverse("portal:alert_channel_action", args=[channel.pk, "delete"]), {}),
        (reverse("portal:alert_redeliver", args=[delivery.pk]), {}),
    ):
        assert viewer.post(url, data).status_code == 403, url
    assert AlertChannel.objects.count() == 1 and AlertDelivery.objects.count() == 1
    assert AlertEvent.objects.count() == 1


def test_another_customers_channel_and_delivery_are_404(owner, customer, other_customer):
    channels_with_deliveries(other_customer, 1)
    channel, delivery = AlertChannel.objects.get(), AlertDelivery.objects.get()
    assert (
        owner.post(reverse("portal:alert_channel_action", args=[channel.pk, "test"])).status_code
        == 404
    )
    assert owner.post(reverse("portal:alert_redeliver", args=[delivery.pk])).status_code == 404
    assert "h0.example.com" not in owner.get(URL).content.decode()
