"""Activation tokens, scoped by customer, by their effective status."""

from django.db.models import QuerySet
from django.utils import timezone

from fleet.choices import TokenStatus
from fleet.errors import NotFound
from fleet.models import ActivationToken, Customer


def token_get(customer: Customer | int, token_id: int) -> ActivationToken:
    token = ActivationToken.objects.filter(customer=customer, pk=token_id).first()
    if token is None:
        raise NotFound("No such activation token.")
    return token


def token_list(customer: Customer | int, status: str | None = None) -> QuerySet[ActivationToken]:
    """Tokens by their effective status: an outstanding token past its expiry is expired,
    whether or not the daily expiry has run yet."""
    tokens = ActivationToken.objects.filter(customer=customer).select_related(
        "agent", "agent__host"
    )
    now = timezone.now()
    if status == TokenStatus.OUTSTANDING:
        return tokens.usable(now)
    if status == TokenStatus.EXPIRED:
        return tokens.expired(now)
    return tokens.filter(status=status) if status else tokens
