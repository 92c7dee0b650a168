"""Outstanding activation tokens (2 per seat) and active API keys (20 a customer) are
capped, through every door: the service, the API, the portal and the command line. Past
the cap: a stable code and a reason that says what to do."""

import threading

import pytest
from django.core.management import CommandError, call_command
from django.db import connection
from django.urls import reverse
from django.utils import timezone

from fleet import policy
from fleet.choices import TokenStatus
from fleet.errors import ApiKeyLimitReached, TokenLimitReached
from fleet.models import ActivationToken, CustomerApiKey
from fleet.services.api_keys import api_key_mint, api_key_revoke
from fleet.services.audit import SYSTEM
from fleet.services.tokens import token_revoke, tokens_mint_for_seats
from tests import factories
from tests.portal.conftest import member_client

pytestmark = pytest.mark.django_db


@pytest.fixture
def owner(customer, django_user_model):
    return member_client(customer, django_user_model, "owner", "olga")


@pytest.fixture
def two_seats(customer):
    factories.license(customer, max_agents=2)
    return customer


def test_outstanding_tokens_stop_at_twice_the_seats(two_seats):
    assert policy.OUTSTANDING_TOKENS_PER_SEAT == 2
    first = tokens_mint_for_seats(customer=two_seats, count=2, actor=SYSTEM)
    tokens_mint_for_seats(customer=two_seats, count=2, actor=SYSTEM)
    with pytest.raises(TokenLimitReached) as refused:
        tokens_mint_for_seats(customer=two_seats, count=1, actor=SYSTEM)
    assert refused.value.code == "token_limit_reached"
    assert refused.value.status == 409
    assert refused.value.extra == {"outstanding_tokens": 4, "outstanding_tokens_max": 4}
    assert "at most 4 may be outstanding" in refused.value.detail
    assert ActivationToken.objects.count() == 4
    # A revoked, expired or redeemed token is no longer outstanding.
    token_revoke(token=first[0][0], actor=SYSTEM)
    ActivationToken.objects.filter(pk=first[1][0].pk).update(expires_at=timezone.now())
    assert len(tokens_mint_for_seats(customer=two_seats, count=2, actor=SYSTEM)) == 2


def test_the_api_says_409_token_limit_reached(two_seats, client):
    _, key = api_key_mint(customer=two_seats, name="ci", actor=SYSTEM)
    headers = {"HTTP_AUTHORIZATION": f"Bearer {key}"}
    for _ in range(2):
        ok = client.post("/api/v1/tokens", {"count": 2}, content_type="application/json", **headers)
        assert ok.status_code == 201
    refused = client.post(
        "/api/v1/tokens", {"count": 1}, content_type="application/json", **headers
    )
    assert refused.status_code == 409
    body = refused.json()
    assert body["code"] == "token_limit_reached"
    assert (body["outstanding_tokens"], body["outstanding_tokens_max"]) == (4, 4)
    assert "Revoke unused tokens" in body["detail"]


def test_the_portal_says_why_next_to_the_field(two_seats, owner):
    tokens_mint_for_seats(customer=two_seats, count=2, actor=SYSTEM)
    tokens_mint_for_seats(customer=two_seats, count=2, actor=SYSTEM)
    response = owner.post(reverse("portal:tokens"), {"count": 1, "expires_in_days": 7})
    assert response.status_code == 422
    assert b"at most 4 may be outstanding at once" in response.content
    assert ActivationToken.objects.filter(status=TokenStatus.OUTSTANDING).count() == 4


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_concurrent_mints_cannot_pass_the_cap_together(customer):
    factories.license(customer, max_agents=2)
    barrier = threading.Barrier(4)
    outcomes: list[str] = []

    def mint() -> None:
        try:
            barrier.wait()
            tokens_mint_for_seats(customer=customer, count=2, actor=SYSTEM)
            outcomes.append("minted")
        except TokenLimitReached:
            outcomes.append("refused")
        finally:
            connection.close()

    threads = [threading.Thread(target=mint) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(outcomes) == ["minted", "minted", "refused", "refused"]
    assert ActivationToken.objects.count() == 4


def test_active_api_keys_stop_at_twenty(customer):
    keys = [api_key_mint(customer=customer, name=f"k{i}", actor=SYSTEM)[0] for i in range(20)]
    with pytest.raises(ApiKeyLimitReached) as refused:
        api_key_mint(customer=customer, name="one more", actor=SYSTEM)
    assert (refused.value.code, refused.value.status) == ("api_key_limit_reached", 409)
    assert refused.value.extra == {"active_keys": 20, "active_keys_max": 20}
    other = factories.customer()
    api_key_mint(customer=other, name="theirs", actor=SYSTEM)  # per customer
    api_key_revoke(key=keys[0], actor=SYSTEM)
    api_key_mint(customer=customer, name="one more", actor=SYSTEM)
    assert CustomerApiKey.objects.filter(customer=customer, revoked_at__isnull=True).count() == 20
    # An expired key is no longer active: it frees its place too.
    CustomerApiKey.objects.filter(pk=keys[1].pk).update(expires_at=timezone.now())
    api_key_mint(customer=customer, name="a replacement", actor=SYSTEM)


def test_the_portal_and_the_command_say_so(customer, owner):
    for i in range(20):
        api_key_mint(customer=customer, name=f"k{i}", actor=SYSTEM)
    response = owner.post(reverse("portal:api_keys"), {"name": "one more", "scopes": ["read"]})
    assert response.status_code == 422
    assert b"already has 20 active API keys" in response.content
    with pytest.raises(CommandError, match="already has 20 active API keys"):
        call_command("issue_api_key", customer.slug, "--name", "demo")
    assert CustomerApiKey.objects.count() == 20


def test_the_simulator_revokes_its_previous_key_each_run(customer, monkeypatch):
    """`make run` runs the simulator each time: its keys must not pile up to the cap."""
    from fleet.management.commands import simulate_fleet

    class Stopped(Exception):
        pass

    def stop(*args, **kwargs):
        raise Stopped

    monkeypatch.setattr(simulate_fleet, "Fleet", stop)
    for _ in range(25):
        with pytest.raises(Stopped):
            call_command("simulate_fleet", "--customer", customer.slug)
    active = CustomerApiKey.objects.filter(customer=customer, revoked_at__isnull=True)
    assert active.count() == 1
    assert CustomerApiKey.objects.filter(customer=customer).count() == 25
