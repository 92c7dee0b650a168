"""The API keys page: mint with scopes and an expiry (members grant at most what their
role may do), and see each key's scopes, expiry and last use (time and address)."""

from datetime import timedelta

import pytest
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from fleet.choices import MemberRole
from fleet.models import CustomerApiKey
from fleet.services.api_keys import api_key_mint
from fleet.services.audit import SYSTEM
from tests import factories
from tests.portal.conftest import member_client

pytestmark = pytest.mark.django_db
KEYS = reverse("portal:api_keys")


@pytest.fixture
def admin(customer, django_user_model):
    return member_client(customer, django_user_model, MemberRole.ADMIN, "adam")


def test_an_owner_mints_a_key_with_scopes_and_an_expiry(owner, customer):
    response = owner.post(
        KEYS, {"name": "deploys", "scopes": ["read", "rollouts"], "expires_in_days": 30}
    )
    assert response.status_code == 200
    key = CustomerApiKey.objects.get()
    assert key.scopes == ["read", "rollouts"]
    assert timedelta(days=29) < key.expires_at - timezone.now() <= timedelta(days=30)
    html = response.content.decode()
    assert "It is shown once" in html and "agtn_key_" in html
    assert "Scopes: read, rollouts; expires" in html


def test_no_scope_is_refused_and_nothing_is_minted(owner):
    response = owner.post(KEYS, {"name": "nothing"})
    assert response.status_code == 422
    assert "This field is required" in response.content.decode()
    assert not CustomerApiKey.objects.exists()


def test_an_admin_cannot_grant_what_only_owners_do(admin):
    page = admin.get(KEYS).content.decode()
    assert 'value="jobs"' in page and 'value="rollouts"' not in page
    assert 'value="settings"' not in page
    refused = admin.post(KEYS, {"name": "sneaky", "scopes": ["read", "rollouts"]})
    assert refused.status_code == 422
    assert not CustomerApiKey.objects.exists()
    assert admin.post(KEYS, {"name": "ci", "scopes": ["read", "jobs"]}).status_code == 200
    assert CustomerApiKey.objects.get().scopes == ["read", "jobs"]


def test_the_list_shows_scopes_expiry_and_the_last_use(owner, customer):
    factories.license(customer, max_agents=5)
    _, secret = api_key_mint(
        customer=customer,
        name="ci",
        actor=SYSTEM,
        scopes=["read", "jobs"],
        expires_at=timezone.now() + timedelta(days=10),
    )
    api_key_mint(customer=customer, name="old", actor=SYSTEM)
    lapsed = factories.api_key(customer, name="lapsed", expires_at=timezone.now() - timedelta(1))
    Client().get("/api/v1/agents", HTTP_AUTHORIZATION=f"Bearer {secret}", REMOTE_ADDR="203.0.113.5")
    html = owner.get(KEYS).content.decode()
    row = html[html.index("<td>ci</td>") :]
    row = row[: row.index("</tr>")]
    assert "<code>read</code> <code>jobs</code>" in row
    assert (timezone.now() + timedelta(days=10)).strftime("%Y-%m-%d") in row
    assert "from 203.0.113.5" in row
    assert 'pill online">active' in row
    old = html[html.index("<td>old</td>") :]
    assert "<code>settings</code>" in old[: old.index("</tr>")]  # every scope
    expired = html[html.index(f"<td>{lapsed.name}</td>") :]
    assert 'pill expired">expired' in expired[: expired.index("</tr>")]
