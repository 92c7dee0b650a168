"""The Members page: every member sees who belongs; owners invite (the link accepted by
a new or an existing account, once, before it expires), change roles and remove members
(whose sessions end at once), never leaving the customer without an owner; viewers and
admins are refused by the server; another customer's ids are a 404."""

import re
from datetime import timedelta

import pytest
import time_machine
from django.core import mail
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from fleet.choices import MemberRole
from fleet.models import AuditEvent, Customer, Invitation, Membership
from fleet.services.audit import SYSTEM
from fleet.services.invitations import invitation_send
from tests.portal.conftest import member_client

pytestmark = pytest.mark.django_db

URL = reverse("portal:members")
LINK = re.compile(r"http://\S+(/portal/invitations/agtn_inv_\w+/)")
ACCEPT = reverse("portal:invitation_accept")


def emailed_link() -> str:
    return LINK.search(mail.outbox[-1].body).group(1)


@pytest.fixture
def admin(customer, django_user_model):
    return member_client(customer, django_user_model, MemberRole.ADMIN, "adam")


def test_every_member_sees_the_list_and_only_owners_the_controls(owner, viewer, customer):
    for client in (owner, viewer):
        response = client.get(URL)
        assert response.status_code == 200
        page = response.content.decode()
        assert "olga" in page and "vera" in page and "2 members" in page
    assert "Send invitation" in owner.get(URL).content.decode()
    viewer_page = viewer.get(URL).content.decode()
    assert "Owners invite, change roles and remove members" in viewer_page
    assert 'name="require_two_factor"' not in viewer_page
    assert (
        "Cache-Control" in owner.get(URL).headers and "no-store" in owner.get(URL)["Cache-Control"]
    )


def test_the_page_costs_the_same_queries_for_3_or_30_members(owner, customer, django_user_model):
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    def count() -> int:
        with CaptureQueriesContext(connection) as ctx:
            assert owner.get(URL).status_code == 200
        return len(ctx.captured_queries)

    for n in range(2):
        Membership.objects.create(
            customer=customer, user=django_user_model.objects.create_user(f"m{n}")
        )
    few = count()
    for n in range(2, 29):
        Membership.objects.create(
            customer=customer, user=django_user_model.objects.create_user(f"m{n}")
        )
    assert count() == few


def test_an_owner_invites_and_a_new_user_accepts_with_a_password(owner, customer):
    response = owner.post(URL, {"email": "New@Example.com", "role": "admin"})
    assert response.status_code == 302
    assert "Invitation sent to new@example.com" in owner.get(URL).content.decode()
    link = emailed_link()
    newcomer = Client()
    opened = newcomer.get(link)
    assert opened.status_code == 302 and opened["Location"] == ACCEPT  # token off the URL
    form = newcomer.get(ACCEPT)
    assert form.status_code == 200 and "Choose a username and a password" in form.content.decode()
    weak = newcomer.post(ACCEPT, {"username": "newbie", "password1": "123", "password2": "123"})
    assert weak.status_code == 422 and not Membership.objects.filter(user__username="newbie")
    joined = newcomer.post(
        ACCEPT,
        {"username": "newbie", "password1": "a-long-new-pass-9", "password2": "a-long-new-pass-9"},
    )
    assert joined.status_code == 302 and joined["Location"] == reverse("portal:dashboard")
    membership = Membership.objects.get(user__username="newbie")
    assert (membership.customer, membership.role) == (customer, MemberRole.ADMIN)
    assert membership.user.email == "new@example.com"
    assert newcomer.get(reverse("portal:dashboard")).status_code == 200  # signed in
    # The link is spent.
    again = Client()
    again.get(link)
    refused = again.get(ACCEPT)
    assert refused.status_code == 410 and "used already" in refused.content.decode()


def test_an_existing_user_signs_in_and_joins(owner, customer, other_customer, django_user_model):
    ann = member_client(other_customer, django_user_model, MemberRole.VIEWER, "ann")
    ann.user.email = "ann@example.com"
    ann.user.save()
    owner.post(URL, {"email": "ann@example.com", "role": "viewer"})
    link = emailed_link()
    anonymous = Client()
    anonymous.get(link)
    page = anonymous.get(ACCEPT).content.decode()
    assert "Sign in to accept" in page and 'name="password1"' not in page
    ann.get(link)
    assert "Join " + customer.name in ann.get(ACCEPT).content.decode()
    response = ann.post(ACCEPT)
    assert response.status_code == 302
    assert Membership.objects.get(user=ann.user, customer=customer).role == MemberRole.VIEWER
    # They now act for the customer they joined.
    assert customer.name in ann.get(reverse("portal:dashboard")).content.decode()


def test_a_signed_in_user_with_another_address_cannot_accept(owner, customer, django_user_model):
    owner.post(URL, {"email": "someone@example.com", "role": "owner"})
    link = emailed_link()
    owner.get(link)  # the owner opens the link themselves
    page = owner.get(ACCEPT)
    assert page.status_code == 403 and "This invitation is for" in page.content.decode()
    assert owner.post(ACCEPT).status_code == 403
    assert Invitation.objects.get().accepted_at is None


def test_an_expired_link_is_refused(owner, customer):
    owner.post(URL, {"email": "late@example.com", "role": "viewer"})
    link = emailed_link()
    late = Client()
    with time_machine.travel(timezone.now() + timedelta(days=8)):
        late.get(link)
        response = late.get(ACCEPT)
        assert response.status_code == 410 and "expired" in response.content.decode()
        posted = late.post(
            ACCEPT,
            {"username": "late", "password1": "a-long-pass-99", "password2": "a-long-pass-99"},
        )
        assert posted.status_code == 410
    assert not Membership.objects.filter(user__username="late").exists()


def test_an_unknown_link_is_a_404(client):
    assert client.get("/portal/invitations/agtn_inv_nothing/").status_code == 404
    assert client.get(ACCEPT).status_code == 404


@pytest.mark.parametrize("role", [MemberRole.VIEWER, MemberRole.ADMIN])
def test_viewers_and_admins_are_refused_every_owner_action(customer, django_user_model, role):
    from fleet.services.customers import membership_set

    olga = django_user_model.objects.create_user("olga")
    owner_membership = membership_set(
        customer=customer, user=olga, role=MemberRole.OWNER, actor=SYSTEM
    )
    invitation = invitation_send(
        customer=customer, email="x@example.com", role=MemberRole.VIEWER, actor=SYSTEM
    ).invitation
    member = member_client(customer, django_user_model, role, "mia")
    posts = [
        (URL, {"email": "y@example.com", "role": "owner"}),
        (reverse("portal:member_role", args=[owner_membership.pk]), {"role": "viewer"}),
        (reverse("portal:member_remove", args=[owner_membership.pk]), {}),
        (reverse("portal:invitation_withdraw", args=[invitation.pk]), {}),
        (reverse("portal:members_two_factor"), {"require_two_factor": "on"}),
    ]
    for url, data in posts:
        response = member.post(url, data)
        assert response.status_code == 403, url
        assert "an owner" in response.content.decode()
    assert Membership.objects.get(pk=owner_membership.pk).role == MemberRole.OWNER
    assert Invitation.objects.get(pk=invitation.pk).revoked_at is None
    assert Invitation.objects.count() == 1 and len(mail.outbox) == 1
    assert not Customer.objects.get(pk=customer.pk).require_two_factor


def test_another_customers_member_and_invitation_are_404(owner, other_customer, django_user_model):
    theirs = member_client(other_customer, django_user_model, MemberRole.OWNER, "otto")
    their_member = Membership.objects.get(user=theirs.user)
    their_invitation = invitation_send(
        customer=other_customer, email="z@example.com", role=MemberRole.VIEWER, actor=SYSTEM
    ).invitation
    for url, data in [
        (reverse("portal:member_role", args=[their_member.pk]), {"role": "viewer"}),
        (reverse("portal:member_remove", args=[their_member.pk]), {}),
        (reverse("portal:invitation_withdraw", args=[their_invitation.pk]), {}),
        (reverse("portal:member_role", args=[999999]), {"role": "viewer"}),
    ]:
        assert owner.post(url, data).status_code == 404, url
    assert Membership.objects.get(pk=their_member.pk).role == MemberRole.OWNER
    assert Invitation.objects.get(pk=their_invitation.pk).revoked_at is None


def test_the_last_owner_is_told_and_kept(owner, customer):
    mine = Membership.objects.get(user=owner.user)
    demoted = owner.post(reverse("portal:member_role", args=[mine.pk]), {"role": "admin"})
    assert demoted.status_code == 302
    page = owner.get(URL).content.decode()
    assert "olga is the last owner of" in page and "make another member an owner first" in page
    owner.post(reverse("portal:member_remove", args=[mine.pk]))
    assert "is the last owner" in owner.get(URL).content.decode()
    assert Membership.objects.get(pk=mine.pk).role == MemberRole.OWNER


def test_an_owner_changes_a_role_and_removes_a_member_whose_session_ends(owner, viewer, customer):
    vera = Membership.objects.get(user=viewer.user)
    owner.post(reverse("portal:member_role", args=[vera.pk]), {"role": "admin"})
    assert Membership.objects.get(pk=vera.pk).role == MemberRole.ADMIN
    assert viewer.get(reverse("portal:tokens")).status_code == 200
    response = owner.post(reverse("portal:member_remove", args=[vera.pk]))
    assert response.status_code == 302
    assert "vera is removed" in owner.get(URL).content.decode()
    gone = viewer.get(reverse("portal:dashboard"))
    assert gone.status_code == 302 and gone["Location"].startswith(reverse("portal:login"))
    actions = list(AuditEvent.objects.order_by("id").values_list("action", flat=True))
    assert actions[-2:] == ["membership.update", "membership.remove"]


def test_bad_invitations_are_shown_and_nothing_is_sent(owner, viewer):
    for data in [{"email": "not-an-address", "role": "viewer"}, {"email": "a@b.c", "role": "god"}]:
        assert owner.post(URL, data).status_code == 422
    viewer.user.email = "vera@example.com"
    viewer.user.save()
    already = owner.post(URL, {"email": "VERA@example.com", "role": "viewer"})
    assert already.status_code == 422 and "already a member" in already.content.decode()
    assert mail.outbox == [] and not Invitation.objects.exists()


def test_an_owner_withdraws_and_sends_again(owner, customer):
    owner.post(URL, {"email": "w@example.com", "role": "viewer"})
    first_link = emailed_link()
    invitation = Invitation.objects.get()
    owner.post(reverse("portal:invitation_withdraw", args=[invitation.pk]))
    assert "is withdrawn" in owner.get(URL).content.decode()
    stranger = Client()
    stranger.get(first_link)
    assert stranger.get(ACCEPT).status_code == 410
    owner.post(URL, {"email": "w@example.com", "role": "viewer"})
    assert len(mail.outbox) == 2 and emailed_link() != first_link
    assert Invitation.objects.filter(Invitation.OPEN).count() == 1


def test_a_mail_server_that_refuses_saves_nothing(owner, settings, monkeypatch):
    import smtplib

    def refuse(*args, **kwargs):
        raise smtplib.SMTPServerDisconnected("gone")

    monkeypatch.setattr("fleet.services.invitations.send_mail", refuse)
    response = owner.post(URL, {"email": "n@example.com", "role": "viewer"})
    assert response.status_code == 422 and "could not be sent" in response.content.decode()
    assert not Invitation.objects.exists()
    assert not AuditEvent.objects.filter(action="membership.invite").exists()


def test_an_owner_who_removes_themselves_is_signed_out(owner, customer, django_user_model):
    member_client(customer, django_user_model, MemberRole.OWNER, "otto")
    mine = Membership.objects.get(user=owner.user)
    response = owner.post(reverse("portal:member_remove", args=[mine.pk]))
    assert response.status_code == 302 and response["Location"] == reverse("portal:login")
    assert owner.get(reverse("portal:dashboard")).status_code == 302
    assert Membership.objects.filter(customer=customer, role=MemberRole.OWNER).count() == 1
