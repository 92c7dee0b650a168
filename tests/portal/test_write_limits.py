"""Portal writes are rate-limited per user (PORTAL_WRITE_RATE), counted in the cache as the
API's limits are: past it, a clear 429 and nothing done."""

import pytest
from django.urls import reverse

from fleet.models import ActivationToken
from tests import factories

pytestmark = pytest.mark.django_db


@pytest.fixture
def limited(settings, customer):
    settings.PORTAL_WRITE_RATE = "3/min"
    factories.license(customer, max_agents=50)


def mint(client, **headers):
    return client.post(reverse("portal:tokens"), {"count": 1, "expires_in_days": 7}, **headers)


def test_writes_past_the_rate_are_refused_with_a_clear_429(owner, limited):
    for _ in range(3):
        assert mint(owner).status_code == 200
    refused = mint(owner)
    assert refused.status_code == 429
    assert 1 <= int(refused["Retry-After"]) <= 60
    assert b"You made more than 3 changes a minute" in refused.content
    assert b"was not carried out" in refused.content
    assert ActivationToken.objects.count() == 3  # nothing was done
    # Reading goes on, and so does signing out.
    assert owner.get(reverse("portal:tokens")).status_code == 200
    assert owner.post(reverse("portal:logout")).status_code == 302


def test_the_limit_is_per_user(owner, limited, customer, django_user_model):
    from tests.portal.conftest import member_client

    other = member_client(customer, django_user_model, "admin", "otto")
    for _ in range(4):
        mint(owner)
    assert mint(other).status_code == 200


def test_an_htmx_write_past_the_rate_swaps_the_message_into_the_page(owner, limited):
    for _ in range(3):
        mint(owner, HTTP_HX_REQUEST="true")
    refused = mint(owner, HTTP_HX_REQUEST="true")
    assert refused.status_code == 429
    assert refused["HX-Retarget"] == "main.page"
    assert b"<html" not in refused.content
    assert b"Slow down" in refused.content


def test_the_window_passes(owner, limited):
    import time_machine
    from django.utils import timezone

    with time_machine.travel(timezone.now(), tick=False) as clock:
        for _ in range(4):
            mint(owner)
        clock.shift(61)
        assert mint(owner).status_code == 200
