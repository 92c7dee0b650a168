from datetime import timedelta

import pytest
from django.utils import timezone

from fleet.choices import TokenStatus
from fleet.errors import NotFound
from fleet.selectors import token_get, token_list
from tests import factories

pytestmark = pytest.mark.django_db


def test_a_token_of_the_customer_is_found(customer):
    mine = factories.token(customer)
    assert token_get(customer, mine.pk) == mine


def test_another_customers_token_is_as_missing_as_a_deleted_one(customer, other_customer):
    theirs = factories.token(other_customer)
    with pytest.raises(NotFound) as foreign:
        token_get(customer, theirs.pk)
    with pytest.raises(NotFound) as missing:
        token_get(customer, theirs.pk + 1000)
    assert foreign.value.as_body() == missing.value.as_body()


def test_tokens_are_listed_by_their_effective_status(customer, other_customer):
    live = factories.token(customer)
    overdue = factories.token(
        customer, expires_at=timezone.now() + timedelta(minutes=-1)
    )  # the daily expiry has not run
    expired = factories.token(
        customer, status=TokenStatus.EXPIRED, expires_at=timezone.now() + timedelta(days=-2)
    )
    redeemed = factories.token(customer, status=TokenStatus.REDEEMED)
    factories.token(other_customer)
    factories.token(
        other_customer, status=TokenStatus.EXPIRED, expires_at=timezone.now() + timedelta(days=-2)
    )

    assert set(token_list(customer, TokenStatus.OUTSTANDING)) == {live}
    assert set(token_list(customer, TokenStatus.EXPIRED)) == {overdue, expired}
    assert set(token_list(customer, TokenStatus.REDEEMED)) == {redeemed}
    assert set(token_list(customer)) == {live, overdue, expired, redeemed}
