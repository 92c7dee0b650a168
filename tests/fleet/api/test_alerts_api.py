"""The customer API's alert channels: create (secret once), list, remove, test; tenancy,
auth and bad input."""

import pytest
from django.test import Client

from fleet.models import AlertChannel, AlertDelivery, AlertEvent
from fleet.services.alerts import alert_channel_create, webhook_secret
from fleet.services.audit import SYSTEM
from tests import factories
from tests.fleet.api.conftest import ApiClient

pytestmark = pytest.mark.django_db

HOOK = {"kind": "webhook", "url": "https://hooks.example.com/agentina"}


def test_a_webhook_channel_is_created_with_its_secret_shown_once(key_api, licensed):
    response = key_api.post(
        "/alerts/channels", {**HOOK, "events": ["agents.offline"], "min_severity": "warning"}
    )
    assert response.status_code == 201, response.content
    body = response.json()
    channel = AlertChannel.objects.get(pk=body["id"])
    assert body["secret"] == webhook_secret(channel)
    assert (body["events"], body["min_severity"], body["enabled"]) == (
        ["agents.offline"],
        "warning",
        True,
    )
    listed = key_api.get("/alerts/channels").json()
    assert listed["count"] == 1 and "secret" not in listed["items"][0]
    assert listed["items"][0]["secret_prefix"] == body["secret"][:12]


def test_the_list_reads_a_fixed_number_of_queries(key_api, licensed, django_assert_num_queries):
    for n in range(5):
        alert_channel_create(
            customer=licensed, kind="email", email=f"o{n}@example.com", actor=SYSTEM
        )
    key_api.get("/alerts/channels")  # the key is known from here on
    with django_assert_num_queries(3):  # key lookup, count, page
        assert key_api.get("/alerts/channels").json()["count"] == 5


def test_remove_and_test_a_channel(key_api, licensed):
    created = key_api.post("/alerts/channels", HOOK).json()
    sent = key_api.post(f"/alerts/channels/{created['id']}/test")
    assert sent.status_code == 202
    event = AlertEvent.objects.get()
    assert sent.json() == {"event_id": event.public_id, "type": "alert.test"}
    assert AlertDelivery.objects.get().channel_id == created["id"]
    assert key_api.delete(f"/alerts/channels/{created['id']}").status_code == 204
    assert not AlertChannel.objects.exists()
    assert key_api.delete(f"/alerts/channels/{created['id']}").status_code == 404


def test_another_customers_channel_is_404_on_every_route(key_api, licensed, other_customer):
    theirs, _ = alert_channel_create(
        customer=other_customer, kind="email", email="x@example.com", actor=SYSTEM
    )
    missing = key_api.delete("/alerts/channels/999999")
    for response in (
        key_api.delete(f"/alerts/channels/{theirs.pk}"),
        key_api.post(f"/alerts/channels/{theirs.pk}/test"),
    ):
        assert response.status_code == 404
        assert response.json() == missing.json()
    assert key_api.get("/alerts/channels").json()["count"] == 0
    assert AlertChannel.objects.filter(pk=theirs.pk).exists()
    assert not AlertEvent.objects.exists()


def test_without_a_key_every_route_is_401(anon, licensed):
    channel, _ = alert_channel_create(
        customer=licensed, kind="email", email="x@example.com", actor=SYSTEM
    )
    for response in (
        anon.post("/alerts/channels", HOOK),
        anon.get("/alerts/channels"),
        anon.delete(f"/alerts/channels/{channel.pk}"),
        anon.post(f"/alerts/channels/{channel.pk}/test"),
    ):
        assert response.status_code == 401


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({**HOOK, "url": "not a url"}, "url"),
        ({**HOOK, "url": "file:///etc/passwd"}, "url"),
        ({**HOOK, "url": "ftp://example.com/x"}, "url"),
        ({**HOOK, "events": ["agents.offline"] * 10_000}, "events"),  # ~170 KB of names
        ({**HOOK, "events": ["agents.exploded"]}, "events.0"),
        ({**HOOK, "min_severity": "apocalyptic"}, "min_severity"),
        ({"kind": "carrier-pigeon", "url": HOOK["url"]}, "kind"),
        ({"kind": "email", "email": "not-an-address"}, "email"),
        ({"kind": "pagerduty"}, "routing_key"),
        ({**HOOK, "colour": "red"}, "colour"),
    ],
)
def test_bad_input_is_422_naming_the_field(key_api, licensed, body, field):
    response = key_api.post("/alerts/channels", body)
    assert response.status_code == 422, response.content
    fields = [e["field"] for e in response.json()["errors"]]
    assert field in fields, fields
    assert not AlertChannel.objects.exists()


def test_a_url_into_our_own_network_is_422_in_production(key_api, licensed, settings):
    settings.ALERT_ALLOW_PRIVATE_NETWORKS = False
    response = key_api.post("/alerts/channels", {**HOOK, "url": "http://169.254.169.254/latest"})
    assert response.status_code == 422
    assert response.json()["errors"][0]["field"] == "url"
    assert "link-local" in response.json()["detail"]


def test_another_customers_key_sees_none_of_ours(licensed, other_customer):
    from fleet.services.api_keys import api_key_mint

    alert_channel_create(customer=licensed, kind="email", email="x@example.com", actor=SYSTEM)
    factories.license(other_customer)
    _, secret = api_key_mint(customer=other_customer, name="theirs", actor=SYSTEM)
    assert ApiClient(Client(), secret).get("/alerts/channels").json()["count"] == 0
