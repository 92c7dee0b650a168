"""What the web edges read from a request: who acts, and from which address (never a
spoofable header beyond the proxies the settings trust)."""

import pytest
from django.contrib.auth.models import AnonymousUser
from django.test import RequestFactory

from fleet.http import client_address, request_actor
from fleet.services.audit import Actor

pytestmark = pytest.mark.django_db


def test_the_request_actor_is_the_signed_in_user_at_the_client_address(django_user_model):
    user = django_user_model.objects.create_user("ada")
    request = RequestFactory().post("/", REMOTE_ADDR="198.51.100.4")
    request.user = user
    assert request_actor(request) == Actor(user=user, label="ada", ip_address="198.51.100.4")
    request.user = AnonymousUser()
    assert request_actor(request) == Actor(label="anonymous", ip_address="198.51.100.4")


@pytest.mark.parametrize(
    ("proxies", "forwarded", "address"),
    [
        (0, "1.2.3.4", "198.51.100.4"),  # no trusted proxy: the header is anyone's
        (1, "1.2.3.4, 5.6.7.8", "5.6.7.8"),  # the proxy's own entry
        (1, "not-an-ip", "198.51.100.4"),
        (1, "", "198.51.100.4"),
    ],
)
def test_the_client_address_trusts_only_the_configured_proxies(
    settings, proxies, forwarded, address
):
    settings.NINJA_NUM_PROXIES = proxies
    extra = {"HTTP_X_FORWARDED_FOR": forwarded} if forwarded else {}
    request = RequestFactory().get("/", REMOTE_ADDR="198.51.100.4", **extra)
    assert client_address(request) == address
