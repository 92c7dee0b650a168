"""Activation tokens: minting (one per intended agent, within the license's free seats),
the secret shown once, revoking, and the daily expiry."""

from datetime import timedelta

import pytest
from django.utils import timezone
from pydantic import ValidationError

from fleet import policy
from fleet.api.schemas import TokensMintIn
from fleet.choices import AgentStatus, TokenStatus
from fleet.errors import LicenseExpired, LicenseMissing, LicenseSuspended, SeatLimitReached
from fleet.models import ActivationToken, AuditEvent
from fleet.secrets import SecretKind, secret_digest, secret_is_well_formed
from fleet.services.audit import SYSTEM, Actor
from fleet.services.tokens import (
    token_expire_overdue,
    token_mint,
    token_revoke,
    tokens_mint_for_seats,
)
from portal.forms import MintTokensForm
from tests import factories

pytestmark = pytest.mark.django_db


@pytest.fixture
def licensed(customer):
    factories.license(customer, max_agents=3)
    return customer


def about(expected, actual, slack=timedelta(seconds=30)):
    return abs(actual - expected) < slack


# --- minting ------------------------------------------------------------------------------


def test_the_secret_is_returned_once_and_only_its_digest_is_stored(licensed):
    token, secret = token_mint(customer=licensed, actor=SYSTEM)
    assert secret_is_well_formed(secret, SecretKind.ACTIVATION_TOKEN)
    assert token.digest == secret_digest(secret)
    assert secret.startswith(token.display_prefix) and len(token.display_prefix) < len(secret)
    stored = ActivationToken.objects.filter(pk=token.pk).values().get()
    assert secret not in str(stored)
    assert secret not in str(list(AuditEvent.objects.values()))
    _, another = token_mint(customer=licensed, actor=SYSTEM)
    assert another != secret


def test_mint_keeps_role_note_expiry_and_who_minted(licensed, django_user_model):
    user = django_user_model.objects.create_user("olga")
    actor = Actor(user=user, label="olga", ip_address="10.1.2.3")
    token, _ = token_mint(
        customer=licensed,
        role="tester",
        note="for build-9",
        expires_in=timedelta(hours=2),
        actor=actor,
    )
    token.refresh_from_db()
    assert (token.role, token.note, token.status) == ("tester", "for build-9", "outstanding")
    assert about(timezone.now() + timedelta(hours=2), token.expires_at)
    assert token.created_by == user
    event = AuditEvent.objects.get(action="token.mint")
    assert (event.customer_id, event.target_id) == (licensed.pk, str(token.pk))
    assert (event.actor_user, event.actor_label, event.ip_address) == (user, "olga", "10.1.2.3")
    assert event.changes == {
        "role": [None, "tester"],
        "expires_at": [None, token.expires_at.isoformat()],
    }


def test_a_token_minted_without_an_expiry_lasts_the_default(licensed):
    token, _ = token_mint(customer=licensed, actor=SYSTEM)
    assert about(timezone.now() + policy.TOKEN_LIFETIME, token.expires_at)
    assert token.role == ""  # any role may redeem it


def test_minting_for_seats_makes_count_tokens_each_with_its_own_secret(licensed):
    minted = tokens_mint_for_seats(
        customer=licensed, count=3, role="coder", note="batch", actor=SYSTEM
    )
    assert len(minted) == 3
    assert len({secret for _, secret in minted}) == 3
    assert {(t.role, t.note) for t, _ in minted} == {("coder", "batch")}
    assert ActivationToken.objects.filter(customer=licensed).count() == 3
    assert AuditEvent.objects.filter(action="token.mint").count() == 3


def test_asking_for_more_tokens_than_free_seats_mints_none(licensed):
    factories.agent(licensed)
    factories.agent(licensed, status=AgentStatus.OFFLINE)  # offline still holds its seat
    with pytest.raises(SeatLimitReached) as refused:
        tokens_mint_for_seats(customer=licensed, count=2, actor=SYSTEM)
    assert (refused.value.extra["free"], refused.value.extra["used"]) == (1, 2)
    assert refused.value.extra["max_agents"] == 3
    assert "1 of 3 seats are free; 2 token(s) asked for" in refused.value.detail
    assert not ActivationToken.objects.exists()
    assert not AuditEvent.objects.exists()
    assert (
        len(tokens_mint_for_seats(customer=licensed, count=1, actor=SYSTEM)) == 1
    )  # exactly the free seat


def test_outstanding_tokens_reserve_no_seat_and_decommissioned_agents_free_theirs(licensed):
    tokens_mint_for_seats(customer=licensed, count=3, actor=SYSTEM)
    tokens_mint_for_seats(
        customer=licensed, count=2, actor=SYSTEM
    )  # the first three reserve nothing (up to twice the seats may be outstanding)
    agents = [factories.agent(licensed) for _ in range(3)]
    with pytest.raises(SeatLimitReached):
        tokens_mint_for_seats(customer=licensed, count=1, actor=SYSTEM)
    agents[0].status, agents[0].decommissioned_at = AgentStatus.DECOMMISSIONED, timezone.now()
    agents[0].save()
    assert len(tokens_mint_for_seats(customer=licensed, count=1, actor=SYSTEM)) == 1


def test_another_customers_agents_take_none_of_our_seats(licensed):
    other = factories.customer()
    factories.license(other, max_agents=5)
    for _ in range(4):
        factories.agent(other)
    minted = tokens_mint_for_seats(customer=licensed, count=3, actor=SYSTEM)
    assert {token.customer_id for token, _ in minted} == {licensed.pk}
    assert set(AuditEvent.objects.values_list("customer_id", flat=True)) == {licensed.pk}
    assert not ActivationToken.objects.filter(customer=other).exists()


@pytest.mark.parametrize(
    ("license_fields", "error"),
    [
        (None, LicenseMissing),
        ({"suspended": True}, LicenseSuspended),
        (
            {
                "valid_from": timezone.now() - timedelta(days=30),
                "valid_until": timezone.now() - timedelta(days=1),
            },
            LicenseExpired,
        ),
        ({"valid_from": timezone.now() + timedelta(days=1)}, LicenseExpired),
    ],
)
def test_a_license_that_admits_no_agent_mints_no_token(customer, license_fields, error):
    if license_fields is not None:
        factories.license(customer, **license_fields)
    with pytest.raises(error):
        tokens_mint_for_seats(customer=customer, count=1, actor=SYSTEM)
    assert not ActivationToken.objects.exists()


MAX_COUNT = policy.TOKENS_PER_MINT_MAX
MAX_DAYS = policy.TOKEN_LIFETIME_MAX.days


@pytest.mark.parametrize(
    ("count", "days", "role", "valid"),
    [
        (1, 1, "", True),
        (MAX_COUNT, MAX_DAYS, "indexer", True),
        (0, 7, "", False),
        (MAX_COUNT + 1, 7, "", False),
        (1, 0, "", False),
        (1, MAX_DAYS + 1, "", False),
        (1, 7, "pilot", False),
    ],
)
def test_the_api_and_the_portal_hold_counts_roles_and_expiries_to_the_policy(
    count, days, role, valid
):
    """The service mints what it is asked; the two ways in hold the bounds."""
    form = MintTokensForm({"count": count, "expires_in_days": days, "role": role})
    assert form.is_valid() is valid, form.errors
    api_fields = {"count": count, "expires_in_hours": days * 24, "role": role or None}
    if valid:
        TokensMintIn(**api_fields)
    else:
        with pytest.raises(ValidationError):
            TokensMintIn(**api_fields)


# --- revoking -----------------------------------------------------------------------------


def test_revoke_an_outstanding_token_once(licensed):
    token, _ = token_mint(customer=licensed, actor=SYSTEM)
    actor = Actor(label="api-key:ci", ip_address="10.0.0.9")
    assert token_revoke(token=token, actor=actor) is True
    token.refresh_from_db()
    assert token.status == TokenStatus.REVOKED
    revoked_at = token.revoked_at
    assert about(timezone.now(), revoked_at)
    assert token_revoke(token=token, actor=actor) is False  # twice: one effect
    token.refresh_from_db()
    assert (token.status, token.revoked_at) == (TokenStatus.REVOKED, revoked_at)
    [event] = AuditEvent.objects.filter(action="token.revoke")
    assert (event.actor_label, event.ip_address) == ("api-key:ci", "10.0.0.9")
    assert event.changes == {"status": ["outstanding", "revoked"]}


@pytest.mark.parametrize("status", [TokenStatus.REDEEMED, TokenStatus.EXPIRED])
def test_revoking_a_redeemed_or_expired_token_is_refused_and_changes_nothing(licensed, status):
    token = factories.token(licensed, status=status)
    if status == TokenStatus.REDEEMED:
        factories.agent(licensed, activation_token=token)
    assert token_revoke(token=token, actor=SYSTEM) is False
    token.refresh_from_db()
    assert (token.status, token.revoked_at) == (status, None)
    assert not AuditEvent.objects.exists()


def test_revoking_a_stale_copy_of_a_token_redeemed_meanwhile_is_refused(licensed):
    token, _ = token_mint(customer=licensed, actor=SYSTEM)
    stale = ActivationToken.objects.get(pk=token.pk)  # read while still outstanding
    ActivationToken.objects.filter(pk=token.pk).update(
        status=TokenStatus.REDEEMED, redeemed_at=timezone.now()
    )
    assert token_revoke(token=stale, actor=SYSTEM) is False
    assert ActivationToken.objects.get(pk=token.pk).status == TokenStatus.REDEEMED


def test_revoking_one_token_leaves_the_others_and_other_customers_alone(licensed):
    other = factories.customer()
    factories.license(other)
    mine, _ = token_mint(customer=licensed, actor=SYSTEM)
    sibling, _ = token_mint(customer=licensed, actor=SYSTEM)
    theirs, _ = token_mint(customer=other, actor=SYSTEM)
    token_revoke(token=mine, actor=SYSTEM)
    statuses = dict(ActivationToken.objects.values_list("pk", "status"))
    assert statuses == {mine.pk: "revoked", sibling.pk: "outstanding", theirs.pk: "outstanding"}
    assert AuditEvent.objects.get(action="token.revoke").customer_id == licensed.pk


# --- expiry -------------------------------------------------------------------------------


def test_expiry_works_through_every_chunk(licensed, monkeypatch):
    monkeypatch.setattr("fleet.services.tokens.EXPIRE_CHUNK", 2)
    overdue = [
        token_mint(customer=licensed, expires_in=timedelta(seconds=-1), actor=SYSTEM)[0]
        for _ in range(5)
    ]
    live, _ = token_mint(customer=licensed, actor=SYSTEM)
    assert token_expire_overdue() == 5
    assert token_expire_overdue() == 0
    statuses = dict(ActivationToken.objects.values_list("pk", "status"))
    assert statuses == {**{t.pk: "expired" for t in overdue}, live.pk: "outstanding"}
    expired = AuditEvent.objects.filter(action="token.expire")
    assert sorted(expired.values_list("target_id", flat=True)) == sorted(str(t.pk) for t in overdue)
    assert {e.actor_label for e in expired} == {"system"}
