"""Members: invitations (sent, accepted once, refused when used, withdrawn or expired),
role changes and removals that never leave a customer without an owner (also under
concurrency), and removal that ends the member's sessions."""

import re
import threading
from datetime import timedelta

import pytest
import time_machine
from django.core import mail
from django.db import connection
from django.test import Client
from django.utils import timezone

from fleet.choices import MemberRole
from fleet.errors import AlreadyMember, InvitationUnusable, LastOwner, NotAllowed
from fleet.models import AuditEvent, Invitation, Membership, UserSession
from fleet.secrets import secret_digest
from fleet.selectors import invitation_for_token
from fleet.services.audit import SYSTEM, Actor
from fleet.services.customers import (
    membership_remove,
    membership_replace,
    membership_role_change,
    membership_set,
)
from fleet.services.invitations import (
    invitation_accept,
    invitation_accept_new_user,
    invitation_send,
    invitation_withdraw,
)

pytestmark = pytest.mark.django_db

LINK = re.compile(r"http://\S+/portal/invitations/(agtn_inv_\w+)/")


def owner_of(customer, django_user_model, name="olga"):
    user = django_user_model.objects.create_user(name, email=f"{name}@example.com")
    return membership_set(customer=customer, user=user, role=MemberRole.OWNER, actor=SYSTEM)


def actor(user):
    return Actor(user=user, label=user.username, ip_address="192.0.2.7")


def invite(customer, email="new@example.com", role=MemberRole.ADMIN, by=SYSTEM):
    sent = invitation_send(customer=customer, email=email, role=role, actor=by)
    token = LINK.search(mail.outbox[-1].body).group(1)
    return sent.invitation, token


def test_an_invitation_is_emailed_once_and_only_its_digest_is_stored(customer, django_user_model):
    olga = owner_of(customer, django_user_model).user
    invitation, token = invite(customer, email="  New@Example.COM ", by=actor(olga))
    assert len(mail.outbox) == 1
    message = mail.outbox[0]
    assert message.to == ["new@example.com"]
    assert customer.name in message.subject and "as admin" in message.body
    assert invitation.digest == secret_digest(token)
    assert not Invitation.objects.filter(digest=token).exists()
    assert token not in str(list(Invitation.objects.values()))
    assert invitation.expires_at - timezone.now() > timedelta(days=6, hours=23)
    event = AuditEvent.objects.get(action="membership.invite")
    assert event.customer_id == customer.pk and event.actor_label == "olga"
    assert event.changes == {"email": [None, "new@example.com"], "role": [None, "admin"]}
    assert token not in str(event.changes)


def test_a_new_user_accepts_and_joins_at_the_invited_role(customer):
    invitation, token = invite(customer, role=MemberRole.ADMIN)
    user = invitation_accept_new_user(
        invitation=invitation_for_token(token),
        username="newbie",
        password="a-long-new-password",
        actor=Actor(label="anonymous", ip_address="192.0.2.9"),
    )
    assert user.email == "new@example.com" and user.check_password("a-long-new-password")
    membership = Membership.objects.get(user=user)
    assert membership.customer == customer and membership.role == MemberRole.ADMIN
    invitation.refresh_from_db()
    assert invitation.accepted_by == user and invitation.accepted_at
    accepted = AuditEvent.objects.get(action="membership.invite_accept")
    assert accepted.actor_label == "newbie" and str(accepted.ip_address) == "192.0.2.9"


def test_an_existing_user_with_the_address_accepts(customer, django_user_model):
    ann = django_user_model.objects.create_user("ann", email="Ann@Example.com")
    invitation, _ = invite(customer, email="ann@example.com", role=MemberRole.VIEWER)
    membership = invitation_accept(invitation=invitation, user=ann, actor=actor(ann))
    assert membership.role == MemberRole.VIEWER and membership.customer == customer


def test_a_used_link_is_refused_the_second_time(customer, django_user_model):
    invitation, token = invite(customer)
    ann = django_user_model.objects.create_user("ann", email="new@example.com")
    invitation_accept(invitation=invitation, user=ann, actor=actor(ann))
    with pytest.raises(InvitationUnusable, match="used already"):
        invitation_accept(invitation=invitation_for_token(token), user=ann, actor=actor(ann))
    with pytest.raises(NotAllowed):  # the address has an account now
        invitation_accept_new_user(
            invitation=invitation_for_token(token),
            username="x",
            password="p-12345678",
            actor=SYSTEM,
        )
    assert Membership.objects.filter(customer=customer).count() == 1


def test_an_expired_link_is_refused(customer, django_user_model):
    invitation, _ = invite(customer)
    ann = django_user_model.objects.create_user("ann", email="new@example.com")
    with (
        time_machine.travel(timezone.now() + timedelta(days=7, seconds=1)),
        pytest.raises(InvitationUnusable, match="expired"),
    ):
        invitation_accept(invitation=invitation, user=ann, actor=actor(ann))
    assert not Membership.objects.filter(user=ann).exists()


def test_another_address_cannot_accept(customer, django_user_model):
    invitation, _ = invite(customer)
    bob = django_user_model.objects.create_user("bob", email="bob@example.com")
    with pytest.raises(NotAllowed, match="another email address"):
        invitation_accept(invitation=invitation, user=bob, actor=actor(bob))
    invitation.refresh_from_db()
    assert invitation.accepted_at is None


def test_sending_again_replaces_the_open_link_and_withdrawing_ends_it(customer, django_user_model):
    first, first_token = invite(customer)
    second, _ = invite(customer)
    first.refresh_from_db()
    assert first.revoked_at is not None and second.revoked_at is None
    ann = django_user_model.objects.create_user("ann", email="new@example.com")
    with pytest.raises(InvitationUnusable, match="withdrawn"):
        invitation_accept(invitation=invitation_for_token(first_token), user=ann, actor=SYSTEM)
    assert invitation_withdraw(invitation=second, actor=SYSTEM) is True
    assert invitation_withdraw(invitation=second, actor=SYSTEM) is False  # twice: no change
    with pytest.raises(InvitationUnusable):
        invitation_accept(invitation=second, user=ann, actor=SYSTEM)
    assert AuditEvent.objects.filter(action="membership.invite_withdraw").count() == 1


def test_inviting_a_member_again_is_refused(customer, django_user_model):
    owner_of(customer, django_user_model)
    with pytest.raises(AlreadyMember):
        invitation_send(
            customer=customer, email="OLGA@example.com", role=MemberRole.VIEWER, actor=SYSTEM
        )
    assert not Invitation.objects.exists() and mail.outbox == []


def test_an_unknown_or_malformed_token_names_no_invitation(customer):
    _, token = invite(customer)
    assert invitation_for_token(token[:-1] + ("A" if token[-1] != "A" else "B")) is None
    assert invitation_for_token("agtn_inv_" + "x" * 38) is None
    assert invitation_for_token("") is None


def test_the_last_owner_cannot_be_demoted_or_removed(customer, django_user_model):
    olga = owner_of(customer, django_user_model)
    with pytest.raises(LastOwner, match="last owner"):
        membership_role_change(membership=olga, role=MemberRole.ADMIN, actor=SYSTEM)
    with pytest.raises(LastOwner):
        membership_remove(membership=olga, actor=SYSTEM)
    with pytest.raises(LastOwner):  # the admin's path too
        membership_set(customer=customer, user=olga.user, role=MemberRole.VIEWER, actor=SYSTEM)
    assert Membership.objects.get(pk=olga.pk).role == MemberRole.OWNER
    # With a second owner, either may go.
    second = owner_of(customer, django_user_model, "otto")
    membership_role_change(membership=olga, role=MemberRole.ADMIN, actor=SYSTEM)
    with pytest.raises(LastOwner):
        membership_remove(membership=second, actor=SYSTEM)


def test_staff_replacing_the_last_owner_by_another_owner_is_allowed(customer, django_user_model):
    olga = owner_of(customer, django_user_model)
    otto = django_user_model.objects.create_user("otto")
    membership_replace(membership=olga, user=otto, role=MemberRole.OWNER, actor=SYSTEM)
    assert list(Membership.objects.values_list("user__username", "role")) == [("otto", "owner")]


def test_a_role_change_twice_is_one_event(customer, django_user_model):
    owner_of(customer, django_user_model)
    member = owner_of(customer, django_user_model, "vera")
    membership_role_change(membership=member, role=MemberRole.VIEWER, actor=SYSTEM)
    membership_role_change(membership=member, role=MemberRole.VIEWER, actor=SYSTEM)
    assert AuditEvent.objects.filter(action="membership.update").count() == 1


def test_removing_a_member_ends_their_sessions_at_once(customer, django_user_model):
    owner_of(customer, django_user_model)
    vera = membership_set(
        customer=customer,
        user=django_user_model.objects.create_user("vera", password="pw-for-tests-1"),
        role=MemberRole.VIEWER,
        actor=SYSTEM,
    )
    laptop, phone = Client(), Client()
    laptop.force_login(vera.user)
    phone.force_login(vera.user)
    assert UserSession.objects.filter(user_id=vera.user_id).count() == 2
    assert laptop.get("/portal/").status_code == 200
    membership_remove(membership=vera, actor=SYSTEM)
    assert UserSession.objects.filter(user_id=vera.user_id).count() == 0
    for client in (laptop, phone):
        response = client.get("/portal/")
        assert response.status_code == 302 and "/portal/login/" in response["Location"]
    membership_remove(membership=vera, actor=SYSTEM)  # twice: nothing more happens
    assert AuditEvent.objects.filter(action="membership.remove").count() == 1


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("change", ["demote", "remove"])
def test_owners_leaving_at_once_leave_exactly_one_owner(customer, django_user_model, change):
    """Five owners step down at the same moment: the memberships are locked, so four go
    and the last one is refused, however the threads interleave."""
    owners = [owner_of(customer, django_user_model, f"owner{n}") for n in range(5)]
    barrier = threading.Barrier(len(owners))
    outcomes: list[str] = []

    def step_down(membership: Membership) -> None:
        try:
            barrier.wait()
            if change == "demote":
                membership_role_change(membership=membership, role=MemberRole.ADMIN, actor=SYSTEM)
            else:
                membership_remove(membership=membership, actor=SYSTEM)
            outcomes.append("done")
        except LastOwner:
            outcomes.append("refused")
        except BaseException as exc:
            outcomes.append(repr(exc))
        finally:
            connection.close()

    threads = [threading.Thread(target=step_down, args=(m,)) for m in owners]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(outcomes) == ["done"] * 4 + ["refused"]
    assert Membership.objects.filter(customer=customer, role=MemberRole.OWNER).count() == 1
