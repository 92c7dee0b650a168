import pytest

from fleet.choices import MemberRole
from fleet.models import AuditEvent, Membership
from fleet.services.audit import SYSTEM, Actor
from fleet.services.customers import (
    customer_create,
    customer_update,
    membership_remove,
    membership_set,
)

pytestmark = pytest.mark.django_db


def test_create_and_update_are_audited(admin_user):
    customer = customer_create(
        name="Initech Labs", actor=Actor(user=admin_user, label=admin_user.username)
    )
    assert customer.slug == "initech-labs"
    customer.name = "Initech"
    customer_update(customer=customer, actor=Actor(user=admin_user, label=admin_user.username))
    customer_update(
        customer=customer, actor=Actor(user=admin_user, label=admin_user.username)
    )  # no change, no event
    events = list(AuditEvent.objects.order_by("id").values_list("action", "changes"))
    assert events == [
        ("customer.create", {}),
        ("customer.update", {"name": ["Initech Labs", "Initech"]}),
    ]


def test_membership_set_twice_is_one_membership_and_one_event(customer, django_user_model):
    user = django_user_model.objects.create_user("ops")
    membership_set(customer=customer, user=user, role=MemberRole.ADMIN, actor=SYSTEM)
    membership_set(customer=customer, user=user, role=MemberRole.ADMIN, actor=SYSTEM)
    assert Membership.objects.get().role == MemberRole.ADMIN
    membership_set(customer=customer, user=user, role=MemberRole.VIEWER, actor=SYSTEM)
    membership_remove(membership=Membership.objects.get(), actor=SYSTEM)
    assert not Membership.objects.exists()
    assert list(AuditEvent.objects.order_by("id").values_list("action", flat=True)) == [
        "membership.create",
        "membership.update",
        "membership.remove",
    ]
