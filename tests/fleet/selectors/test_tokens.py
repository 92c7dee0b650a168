from datetime import timedelta

import pytest
from django.utils import timezone

from fleet.choices import TokenStatus
from fleet.errors import NotFound
from fleet.models import ActivationToken
from fleet.secrets import SecretKind, secret_mint
from fleet.selectors import token_get, token_list

pytestmark = pytest.mark.django_db


def token(customer, *, status=TokenStatus.OUTSTANDING, expires_in=timedelta(days=1)):
    minted = secret_mint(SecretKind.ACTIVATION_TOKEN)
    return ActivationToken.objects.create(
        customer=customer,
        display_prefix=minted.display_prefix,
        digest=minted.digest,
        status=status,
        expires_at=timezone.now() + expires_in,
    )


def test_a_token_of_the_customer_is_found(customer):
    mine = token(customer)
    assert token_get(customer, mine.pk) == mine


def test_another_customers_token_is_as_missing_as_a_deleted_one(customer, other_customer):
    theirs = token(other_customer)
    with pytest.raises(NotFound) as foreign:
        token_get(customer, theirs.pk)
    with pytest.raises(NotFound) as missing:
        token_get(customer, theirs.pk + 1000)
    assert foreign.value.as_body() == missing.value.as_body()


def test_tokens_are_listed_by_their_effective_status(customer, other_customer):
    live = token(customer)
    overdue = token(customer, expires_in=timedelta(minutes=-1))  # the daily expiry has not run
    expired = token(customer, status=TokenStatus.EXPIRED, expires_in=timedelta(days=-2))
    redeemed = token(customer, status=TokenStatus.REDEEMED)
    token(other_customer)
    token(other_customer, status=TokenStatus.EXPIRED, expires_in=timedelta(days=-2))

    assert set(token_list(customer, TokenStatus.OUTSTANDING)) == {live}
    assert set(token_list(customer, TokenStatus.EXPIRED)) == {overdue, expired}
    assert set(token_list(customer, TokenStatus.REDEEMED)) == {redeemed}
    assert set(token_list(customer)) == {live, overdue, expired, redeemed}
