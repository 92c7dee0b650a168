"""Settings: every member reads the customer's fleet policies; owners alone change them,
refused server-side for everyone else; bad values show the error and save nothing."""

import re

import pytest
from django.urls import reverse

from fleet.choices import AuditAction, MemberRole
from fleet.models import AuditEvent, Customer
from tests.portal.conftest import member_client

pytestmark = pytest.mark.django_db
URL = reverse("portal:settings")


def test_an_owner_turns_cleanup_on_and_sets_the_runtime(owner, customer):
    response = owner.post(URL, {"stale_cleanup_days": "14", "job_max_runtime_minutes": "90"})
    assert response.status_code == 302
    customer.refresh_from_db()
    assert (customer.stale_cleanup_days, customer.job_max_runtime_seconds) == (14, 5400)
    assert customer.stale_cleanup_since is not None  # acts a day later, listed first
    event = AuditEvent.objects.get(action=AuditAction.CUSTOMER_UPDATE)
    assert event.changes["stale_cleanup_days"] == [None, 14]
    page = owner.get(URL).content.decode()
    assert 'value="14"' in page and 'value="90"' in page

    owner.post(URL, {"stale_cleanup_days": "", "job_max_runtime_minutes": ""})
    customer.refresh_from_db()
    assert (customer.stale_cleanup_days, customer.job_max_runtime_seconds) == (None, None)


@pytest.mark.parametrize("role", [MemberRole.VIEWER, MemberRole.ADMIN])
def test_only_owners_change_settings(customer, django_user_model, role):
    member = member_client(customer, django_user_model, role, "mia")
    page = member.get(URL)
    assert page.status_code == 200 and "Owners change these" in page.content.decode()
    refused = member.post(URL, {"stale_cleanup_days": "1"})
    assert refused.status_code == 403
    assert Customer.objects.get(pk=customer.pk).stale_cleanup_days is None


@pytest.mark.parametrize(
    "data",
    [
        {"stale_cleanup_days": "0"},
        {"stale_cleanup_days": "366"},
        {"stale_cleanup_days": "ten"},
        {"job_max_runtime_minutes": str(8 * 24 * 60)},
        {"stale_cleanup_days": "5\x00"},
    ],
)
def test_bad_values_are_shown_and_nothing_is_saved(owner, customer, data):
    response = owner.post(URL, data)
    assert response.status_code == 422
    assert 'class="error"' in response.content.decode()
    assert Customer.objects.get(pk=customer.pk).stale_cleanup_days is None
    assert not AuditEvent.objects.filter(action=AuditAction.CUSTOMER_UPDATE).exists()


def test_each_customer_sees_and_changes_its_own(owner, customer, other_customer, django_user_model):
    theirs = member_client(other_customer, django_user_model, MemberRole.OWNER, "otto")
    theirs.post(URL, {"stale_cleanup_days": "3"})
    assert Customer.objects.get(pk=customer.pk).stale_cleanup_days is None
    assert Customer.objects.get(pk=other_customer.pk).stale_cleanup_days == 3
    page = owner.get(URL).content.decode()
    assert not re.search(r'name="stale_cleanup_days"[^>]*value="3"', page)
