from datetime import timedelta

import pytest
from django.contrib.auth.models import AnonymousUser
from django.utils import timezone

from fleet.errors import NotFound
from fleet.models import AuditEvent, CustomerApiKey, Membership
from fleet.secrets import SecretKind, secret_mint
from fleet.selectors import (
    api_key_for_secret,
    api_key_get,
    api_key_list,
    audit_list,
    membership_list,
)
from tests import factories

pytestmark = pytest.mark.django_db


def api_key(customer, name="ci", *, revoked=False):
    """A key and its plaintext (as api_key_mint would give it)."""
    minted = secret_mint(SecretKind.API_KEY)
    key = CustomerApiKey.objects.create(
        customer=customer,
        name=name,
        display_prefix=minted.display_prefix,
        digest=minted.digest,
        revoked_at=timezone.now() if revoked else None,
    )
    return key, minted.plaintext


def test_a_key_is_found_by_its_secret_with_its_customer_in_one_query(
    customer, django_assert_num_queries
):
    key, secret = api_key(customer)
    with django_assert_num_queries(1):
        found = api_key_for_secret(secret)
        assert found.customer.name == customer.name
    assert found == key


@pytest.mark.parametrize(
    "mangle",
    [
        lambda s: s[:-1],  # truncated
        lambda s: s[:-1] + ("A" if s[-1] != "A" else "B"),  # checksum no longer matches
        lambda s: s.replace("agtn_key_", "agtn_agt_", 1),  # an agent secret's shape
        lambda s: s + " ",
        lambda s: "",
    ],
)
def test_a_malformed_key_is_refused_without_a_query(customer, mangle, django_assert_num_queries):
    _, secret = api_key(customer)
    with django_assert_num_queries(0):
        assert api_key_for_secret(mangle(secret)) is None


def test_an_unknown_key_is_refused(customer):
    api_key(customer)
    assert api_key_for_secret(secret_mint(SecretKind.API_KEY).plaintext) is None


def test_a_revoked_key_is_refused(customer):
    _, secret = api_key(customer, revoked=True)
    assert api_key_for_secret(secret) is None


def test_keys_are_listed_and_found_only_for_their_customer(customer, other_customer):
    mine, _ = api_key(customer, "mine")
    revoked, _ = api_key(customer, "old", revoked=True)
    theirs, _ = api_key(other_customer, "theirs")

    assert set(api_key_list(customer)) == {mine, revoked}
    assert api_key_get(customer, mine.pk) == mine
    with pytest.raises(NotFound) as foreign:
        api_key_get(customer, theirs.pk)
    with pytest.raises(NotFound) as missing:
        api_key_get(customer, theirs.pk + 1000)
    assert foreign.value.as_body() == missing.value.as_body()


def test_a_user_sees_only_their_own_memberships(customer, other_customer, django_user_model):
    alice = django_user_model.objects.create_user("alice")
    bob = django_user_model.objects.create_user("bob")
    mine = Membership.objects.create(user=alice, customer=customer)
    Membership.objects.create(user=bob, customer=other_customer)

    assert list(membership_list(alice)) == [mine]
    assert list(membership_list(AnonymousUser())) == []


def test_the_audit_trail_is_the_customers_newest_first(customer, other_customer):
    def event(customer, action, minutes_ago):
        created = factories.audit_event(customer, action=action)
        AuditEvent.objects.filter(pk=created.pk).update(
            at=timezone.now() - timedelta(minutes=minutes_ago)
        )

    event(customer, "agent.decommission", 30)
    event(customer, "license.update", 5)
    event(other_customer, "api_key.mint", 1)
    event(None, "release.publish", 0)

    assert [e.action for e in audit_list(customer)] == ["license.update", "agent.decommission"]
