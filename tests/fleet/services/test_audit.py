"""The audit log: who did what to which object, when and from where, one row per change,
whether a service writes one row or a set-based change writes many at once."""

import pytest
from django.utils import timezone

from fleet.choices import TokenStatus
from fleet.models import ActivationToken, AuditEvent
from fleet.services.audit import (
    SYSTEM,
    Actor,
    audit_record,
    audit_record_rows,
    model_changes,
)
from tests import factories

pytestmark = pytest.mark.django_db


def test_a_row_names_the_actor_the_address_the_target_and_the_changes(customer, django_user_model):
    user = django_user_model.objects.create_user("olga")
    token = factories.token(customer)
    before = timezone.now()
    event = audit_record(
        actor=Actor(user=user, label="olga", ip_address="203.0.113.9"),
        action="token.revoke",
        target=token,
        customer=customer,
        changes={"status": ["outstanding", "revoked"]},
    )
    stored = AuditEvent.objects.get()
    assert stored.pk == event.pk
    assert (stored.actor_user, stored.actor_label, stored.ip_address) == (
        user,
        "olga",
        "203.0.113.9",
    )
    assert (stored.customer_id, stored.action) == (customer.pk, "token.revoke")
    assert (stored.target_type, stored.target_id, stored.target_repr) == (
        "fleet.activationtoken",
        str(token.pk),
        str(token),
    )
    assert stored.changes == {"status": ["outstanding", "revoked"]}
    assert before <= stored.at <= timezone.now()


@pytest.mark.parametrize(
    ("actor", "label"),
    [
        (SYSTEM, "system"),
        (Actor(label="x" * 300), "x" * 200),
    ],
)
def test_the_system_and_overlong_labels(customer, actor, label):
    audit_record(actor=actor, action="license.update", target=customer, customer=customer.pk)
    stored = AuditEvent.objects.get()
    assert (stored.actor_user, stored.actor_label, stored.ip_address) == (None, label, None)
    assert stored.changes == {}


def test_agents_and_api_keys_are_named_in_their_own_words(customer):
    agent = factories.agent(customer, name="build-7-coder")
    key = factories.api_key(customer, name="ci")
    audit_record(
        actor=Actor.for_agent(agent, "10.0.0.1"),
        action="agent.activate",
        target=agent,
        customer=customer,
    )
    audit_record(
        actor=Actor.for_api_key(key, "10.0.0.2"), action="token.mint", target=key, customer=customer
    )
    rows = AuditEvent.objects.order_by("id").values_list("actor_label", "ip_address")
    assert list(rows) == [("agent:build-7-coder", "10.0.0.1"), ("api-key:ci", "10.0.0.2")]


def test_a_target_without_a_customer_and_a_long_repr(customer):
    release = factories.release("1.2.3", notes="")
    customer.name = "n" * 250
    audit_record(actor=SYSTEM, action="release.publish", target=release, customer=None)
    audit_record(actor=SYSTEM, action="customer.update", target=customer, customer=customer)
    first, second = AuditEvent.objects.order_by("id")
    assert (first.customer_id, first.target_type) == (None, "fleet.release")
    assert second.target_repr == "n" * 200


def test_model_changes_lists_only_what_differs(customer):
    other = factories.customer()
    before = factories.license(customer, max_agents=3)
    after = factories.license(other, max_agents=5, is_current=False)
    assert model_changes(before, after, ["max_agents", "plan", "customer"]) == {
        "max_agents": [3, 5],
        "customer": [customer.pk, other.pk],
    }


# --- many rows at once --------------------------------------------------------------------


def test_rows_writes_one_row_per_id_with_each_rows_own_customer(customer, django_user_model):
    other = factories.customer()
    tokens = [factories.token(customer), factories.token(customer), factories.token(other)]
    user = django_user_model.objects.create_user("staffer")
    written = audit_record_rows(
        actor=Actor(user=user, label="staffer", ip_address="192.0.2.1"),
        action="token.expire",
        model=ActivationToken,
        ids=[t.pk for t in tokens],
        repr_sql="display_prefix",
        changes={"status": ["outstanding", "expired"]},
    )
    assert written == 3
    assert AuditEvent.objects.count() == 3
    rows = {e.target_id: e for e in AuditEvent.objects.all()}
    assert sorted(rows) == sorted(str(t.pk) for t in tokens)
    for token in tokens:
        row = rows[str(token.pk)]
        assert (row.customer_id, row.target_repr) == (token.customer_id, token.display_prefix)
        assert (row.target_type, row.action) == ("fleet.activationtoken", "token.expire")
        assert (row.actor_user, row.actor_label, row.ip_address) == (user, "staffer", "192.0.2.1")
        assert row.changes == {"status": ["outstanding", "expired"]}


def test_rows_for_no_ids_write_nothing(customer):
    assert (
        audit_record_rows(
            actor=SYSTEM, action="token.expire", model=ActivationToken, ids=[], repr_sql="digest"
        )
        == 0
    )
    assert not AuditEvent.objects.exists()


def test_rows_only_for_ids_that_still_meet_the_condition(customer):
    """A set-based change audits the rows it really changed (another writer may have
    moved some of them first); ids that no longer exist get no row either."""
    revoked = factories.token(customer, status=TokenStatus.REVOKED)
    redeemed = factories.token(customer, status=TokenStatus.REDEEMED)
    written = audit_record_rows(
        actor=SYSTEM,
        action="token.revoke",
        model=ActivationToken,
        ids=[revoked.pk, redeemed.pk, 987654],
        repr_sql="display_prefix",
        condition="status = %s",
        condition_params=[TokenStatus.REVOKED],
    )
    assert written == 1
    event = AuditEvent.objects.get()
    assert (event.target_id, event.actor_label, event.changes) == (str(revoked.pk), "system", {})


def test_a_long_repr_is_cut_to_200_characters(customer):
    anomaly = factories.anomaly(customer, fingerprint="f" * 200)
    audit_record_rows(
        actor=SYSTEM,
        action="anomaly.open",
        model=type(anomaly),
        ids=[anomaly.pk],
        repr_sql="fingerprint || message",
    )
    assert AuditEvent.objects.get().target_repr == "f" * 200
